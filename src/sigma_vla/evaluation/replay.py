"""Offline closed-loop replay (paper 5-6), done honestly: the same test windows through five groups.

Groups (DESIGN 3): the untuned base (its offline actions stored in the shards by `sigma base-actions`), the base
fine-tuned on the train split with Sigma's budget, Sigma with tau forced to 0, Sigma, and Sigma + the adapter.
Sigma's final actions are base + model output (TRAF's composition, paper 4.2.1). MSEs are reported in the dataset's
raw units (the paper's) and in normalised units.

Shape legend (data/schema.py): B batch, C chunk, T horizon, Da action dim.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from sigma_vla.evaluation.metrics import SCALES
from sigma_vla.inference.adapter import AdapterConfig, adapt
from sigma_vla.models.base_policy import base_action_dict

GROUPS = ("base_untuned", "base_finetuned", "sigma_tau0", "sigma", "sigma_adapter")
GT = {"vector": "gt_action_vector", "chunk": "gt_action_chunk", "traj": "gt_action_trajectory"}
BASE = {"vector": "base_action_vector", "chunk": "base_action_chunk", "traj": "base_action_trajectory"}


@dataclass
class GroupActions:
    """One group's actions for a batch, normalised units: vector (B, Da), chunk (B, C, Da), traj (B, T, Da)."""

    vector: Tensor
    chunk: Tensor
    traj: Tensor

    def get(self, scale: str) -> Tensor:
        return getattr(self, scale)


def _per_sample_mse(pred: Tensor, gt: Tensor) -> Tensor:
    return (pred.float() - gt.float()).pow(2).flatten(1).mean(1)  # (B,)


def sigma_groups(model, batch: dict[str, Tensor], base: GroupActions, adapter: AdapterConfig):
    """Sigma's three groups on one batch, plus tau and semantic-text alignment per sample."""
    out = model(batch, telepathy=True)
    off = model(batch, telepathy=False)
    sig = GroupActions(base.vector + out.action_vector, base.chunk + out.action_chunk,
                       base.traj + out.action_trajectory)
    tau0 = GroupActions(base.vector + off.action_vector, base.chunk + off.action_chunk,
                        base.traj + off.action_trajectory)
    ad = adapt(sig.vector, sig.chunk, sig.traj, base.vector, base.chunk, base.traj, out.telepathy_factors,
               out.action_conditions, adapter)
    adapted = GroupActions(ad.action_vector, ad.action_chunk, ad.action_trajectory)
    extras = {
        "tau_l2": out.telepathy_factors.norm(dim=1),  # (B,)
        "sem_align": F.cosine_similarity(out.z_pool, out.text_pool, dim=1),  # (B,) paper 5.3
        "adapter_scale": ad.scale,
    }
    return {"sigma_tau0": tau0, "sigma": sig, "sigma_adapter": adapted}, extras


@torch.no_grad()
def replay(model, data: dict[str, Tensor], transform: Callable, unnormalize: Callable, batch_size: int,
           finetuned_base=None, adapter: AdapterConfig = AdapterConfig(), progress: bool = True,
           num_examples: int = 4) -> dict:
    """Run every group over the windows in `data` (a dict of stacked shard tensors, raw units).

    Returns per-sample arrays: mse[group][scale] raw, mse_norm[group][scale], tau_l2, sem_align, adapter_scale,
    episode_index, and the per-batch rows of CHECK B."""
    model.eval()
    n = len(data["split"])
    acc: dict = {"mse": {g: {s: [] for s in SCALES} for g in GROUPS},
                 "mse_norm": {g: {s: [] for s in SCALES} for g in GROUPS},
                 "tau_l2": [], "sem_align": [], "adapter_scale": [], "rows": {g: [] for g in GROUPS},
                 "examples": []}
    every = max(1, -(-n // batch_size) // num_examples) if num_examples else 0
    chunk_len = data["gt_action_chunk"].shape[1]
    starts = range(0, n, batch_size)
    for b, start in enumerate(tqdm(starts, desc="eval", unit="batch", disable=not progress)):
        batch = transform({k: v[start:start + batch_size] for k, v in data.items()})
        base = GroupActions(*(batch[BASE[s]] for s in SCALES))
        groups = {"base_untuned": base}
        if finetuned_base is not None:
            ft = base_action_dict(finetuned_base.predict_chunk(batch), chunk_len)
            groups["base_finetuned"] = GroupActions(*(ft[BASE[s]] for s in SCALES))
        sig, extras = sigma_groups(model, batch, base, adapter)
        groups.update(sig)
        for key in ("tau_l2", "sem_align", "adapter_scale"):
            acc[key].append(extras[key].numpy())
        for g, actions in groups.items():
            row = {"batch": b}
            for s in SCALES:
                norm = _per_sample_mse(actions.get(s), batch[GT[s]])
                raw = _per_sample_mse(unnormalize(actions.get(s)), unnormalize(batch[GT[s]]))
                acc["mse_norm"][g][s].append(norm.numpy())
                acc["mse"][g][s].append(raw.numpy())
                row[f"mse_{s}"] = float(raw.mean())
            row.update(tau_l2=float(extras["tau_l2"].mean()), sem_align=float(extras["sem_align"].mean()))
            acc["rows"][g].append(row)
        if every and b % every == 0 and len(acc["examples"]) < num_examples:
            acc["examples"].append(_example(batch, groups, unnormalize))
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0)  # noqa: E731
    return {
        "mse": {g: {s: cat(v) for s, v in d.items()} for g, d in acc["mse"].items() if d["vector"]},
        "mse_norm": {g: {s: cat(v) for s, v in d.items()} for g, d in acc["mse_norm"].items() if d["vector"]},
        "tau_l2": cat(acc["tau_l2"]), "sem_align": cat(acc["sem_align"]),
        "adapter_scale": cat(acc["adapter_scale"]),
        "episode_index": data["episode_index"].numpy(),
        "rows": {g: r for g, r in acc["rows"].items() if r},
        "num_batches": len(starts),
        "examples": acc["examples"],
    }


def _example(batch: dict[str, Tensor], groups: dict[str, GroupActions], unnormalize: Callable) -> dict:
    """The first window of a batch: ground truth and every group's trajectory, raw units (for the report's plot)."""
    traj = {g: unnormalize(a.traj[0]).tolist() for g, a in groups.items()}  # (T, Da) each
    return {"episode_index": int(batch["episode_index"][0]), "frame_index": int(batch["frame_index"][0]),
            "ground_truth": unnormalize(batch[GT["traj"]][0]).tolist(), **traj}
