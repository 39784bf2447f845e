"""Read the paper's own shard format (`shard_00000.pt` ..., lists of sample dicts, paper 4.1) for evaluation.

Only through `torch.load(weights_only=True)`: a .pt file is a pickle, and weights_only refuses anything but
tensors and plain containers, so a malicious shard cannot run code. The samples are stacked into our contract
(schema.SAMPLE_KEYS); what the paper's samples lack is filled in and said so in the returned meta.
"""

from __future__ import annotations

from pathlib import Path

import torch

from sigma_vla.data.schema import SPLIT_CODES
from sigma_vla.errors import SigmaError

REQUIRED = ("robot_state", "gt_action_vector", "gt_action_chunk", "gt_action_trajectory")


def _samples(path: Path) -> list[dict]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # weights_only raises UnpicklingError for anything but plain data
        raise SigmaError(f"not a plain-data .pt shard ({type(err).__name__}); refusing to unpickle it",
                         file=path) from None
    samples = obj.get("samples", obj) if isinstance(obj, dict) else obj
    if not isinstance(samples, list) or not samples or not isinstance(samples[0], dict):
        raise SigmaError("expected a list of sample dicts", file=path)
    for key in REQUIRED:
        if key not in samples[0]:
            raise SigmaError("key missing from samples", file=path, field=key)
    return samples


def load_pt_shards(directory: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(stacked data in our contract, a meta dict with tasks and normalisation computed from the samples)."""
    paths = sorted(Path(directory).glob("shard_*.pt"))
    if not paths:
        raise SigmaError("no shard_*.pt files", file=directory)
    samples = [s for p in paths for s in _samples(p)]
    texts = [str(s.get("text", "")) for s in samples]
    tasks = sorted(set(texts))
    data = {k: torch.stack([torch.as_tensor(s[k]).float() for s in samples]) for k in REQUIRED}
    for key in ("base_action_vector", "base_action_chunk", "base_action_trajectory"):
        if all(key in s for s in samples):
            data[key] = torch.stack([torch.as_tensor(s[key]).float() for s in samples])
    if "vision_inputs" in samples[0]:
        data["vision_inputs"] = torch.stack([torch.as_tensor(s["vision_inputs"]) for s in samples])
    n = len(samples)
    data.update(task_index=torch.tensor([tasks.index(t) for t in texts]),
                episode_index=torch.as_tensor([int(s.get("episode_index", i)) for i, s in enumerate(samples)]),
                split=torch.full((n,), SPLIT_CODES["test"]), pad_steps=torch.zeros(n, dtype=torch.long))
    flat_actions = data["gt_action_trajectory"].reshape(-1, data["gt_action_trajectory"].shape[-1])
    norm = {name: {"mean": x.mean(0).tolist(), "std": x.std(0).clamp_min(1e-6).tolist()}
            for name, x in (("robot_state", data["robot_state"]), ("action", flat_actions))}
    meta = {"tasks": tasks, "normalization": norm, "source": "paper .pt shards",
            "notes": "normalisation computed from these samples; episode_index from the samples or their order"}
    return data, meta
