"""Offline closed-loop replay (paper 5-6), done honestly: the same test windows through five groups.

Groups (docs/architecture.md, "Honest evaluation"): the untuned base (its offline actions stored in the shards by
`sigma base-actions`), the base fine-tuned on the train split with Sigma's budget, Sigma with tau forced to 0, Sigma,
and Sigma + the adapter.
Sigma's final actions are base + model output (TRAF's composition, paper 4.2.1). MSEs are reported in the dataset's
raw units (the paper's) and in normalised units.

Shape legend (docs/architecture.md): B batch, C chunk, T horizon, Da action dim.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sigma_vla.evaluation.metrics import REPORT_SCALES
from sigma_vla.inference.adapter import AdapterConfig, adapt
from sigma_vla.processing.action_triple import BASE_ACTION, GT_ACTION, ActionTriple, per_sample_mse
from sigma_vla.progress import Progress

GROUPS = ("base_untuned", "base_finetuned", "sigma_tau0", "sigma", "sigma_adapter")


def sigma_groups(model, batch: dict[str, Tensor], base: ActionTriple, adapter: AdapterConfig):
    """Sigma's three groups on one batch, plus tau and semantic-text alignment per sample."""
    out = model(batch, telepathy=True)
    off = model(batch, telepathy=False)
    sig, tau0 = base.plus(out.actions()), base.plus(off.actions())  # TRAF's composition: a = a_base + delta_a
    ad = adapt(sig, base, out.telepathy_factors, out.action_conditions, adapter)
    extras = {
        "tau_l2": out.telepathy_factors.norm(dim=1),  # (B,)
        "sem_align": F.cosine_similarity(out.z_pool, out.text_pool, dim=1),  # (B,) paper 5.3
        "adapter_scale": ad.scale,
    }
    return {"sigma_tau0": tau0, "sigma": sig, "sigma_adapter": ad.actions}, extras


@torch.no_grad()
def replay(model, data: dict[str, Tensor], transform: Callable, unnormalize: Callable, batch_size: int,
           finetuned_base=None, adapter: AdapterConfig = AdapterConfig(), progress: bool = True,
           num_examples: int = 4) -> dict:
    """Run every group over the windows in `data` (a dict of stacked shard tensors, raw units).

    Returns per-sample arrays: mse[group][scale] raw, mse_norm[group][scale], tau_l2, sem_align, adapter_scale,
    episode_index, and the per-batch rows of CHECK B."""
    model.eval()
    n = len(data["split"])
    acc: dict = {"mse": {g: {s: [] for s in REPORT_SCALES} for g in GROUPS},
                 "mse_norm": {g: {s: [] for s in REPORT_SCALES} for g in GROUPS},
                 "tau_l2": [], "sem_align": [], "adapter_scale": [], "rows": {g: [] for g in GROUPS},
                 "examples": []}
    every = max(1, -(-n // batch_size) // num_examples) if num_examples else 0
    chunk_len = ActionTriple.from_batch(data, GT_ACTION).chunk.shape[1]
    starts = range(0, n, batch_size)
    for b, start in enumerate(Progress(starts, desc="eval", unit="batch", enabled=progress)):
        batch = transform({k: v[start:start + batch_size] for k, v in data.items()})
        base, gt = ActionTriple.from_batch(batch, BASE_ACTION), ActionTriple.from_batch(batch, GT_ACTION)
        groups = {"base_untuned": base}
        if finetuned_base is not None:
            groups["base_finetuned"] = ActionTriple.from_chunk(finetuned_base.predict_chunk(batch), chunk_len)
        sig, extras = sigma_groups(model, batch, base, adapter)
        groups.update(sig)
        for key in ("tau_l2", "sem_align", "adapter_scale"):
            acc[key].append(extras[key].numpy())
        for g, actions in groups.items():
            row = {"batch": b}
            for s, pred, target in zip(REPORT_SCALES, actions, gt):
                norm = per_sample_mse(pred, target)  # (B,)
                raw = per_sample_mse(unnormalize(pred), unnormalize(target))  # (B,)
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


def _example(batch: dict[str, Tensor], groups: dict[str, ActionTriple], unnormalize: Callable) -> dict:
    """The first window of a batch: ground truth and every group's trajectory, raw units (for the report's plot)."""
    traj = {g: unnormalize(a.trajectory[0]).tolist() for g, a in groups.items()}  # (T, Da) each
    gt = ActionTriple.from_batch(batch, GT_ACTION).trajectory[0]  # (T, Da)
    return {"episode_index": int(batch["episode_index"][0]), "frame_index": int(batch["frame_index"][0]),
            "ground_truth": unnormalize(gt).tolist(), **traj}
