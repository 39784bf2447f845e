"""Read the paper's own shard format (`shard_00000.pt` ..., lists of sample dicts, paper 4.1) for evaluation.

Only through `torch.load(weights_only=True)`: a .pt file is a pickle, and weights_only refuses anything but
tensors and plain containers, so a malicious shard cannot run code. The samples are stacked into our contract
(schema.SAMPLE_KEYS); what the paper's samples lack is filled in and said so in the returned meta.
"""

from __future__ import annotations

from pathlib import Path

import torch

from sigma_vla.data.schema import SPLIT_CODES
from sigma_vla.errors import SigmaError, first_line
from sigma_vla.processing.action_triple import BASE_ACTION, GT_ACTION, action_keys

REQUIRED = ("robot_state", *action_keys(GT_ACTION))


def _samples(path: Path) -> list[dict]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # weights_only raises UnpicklingError for anything but plain data
        raise SigmaError(f"not a plain-data .pt shard ({type(err).__name__}); refusing to unpickle it",
                         file=path) from None
    samples = obj.get("samples", obj) if isinstance(obj, dict) else obj
    if not isinstance(samples, list) or not samples or not all(isinstance(s, dict) for s in samples):
        raise SigmaError("expected a list of sample dicts", file=path)
    for i, sample in enumerate(samples):
        for key in REQUIRED:
            if key not in sample:
                raise SigmaError(f"key missing from sample {i}", file=path, field=key)
    return samples


def _stack(samples: list[tuple[Path, dict]], key: str, dtype: torch.dtype | None = torch.float32) -> torch.Tensor:
    """One key of every sample stacked; a value that is not an array of the common shape names its file."""
    out = []
    for path, s in samples:
        try:
            value = torch.as_tensor(s[key])
            out.append(value.to(dtype) if dtype is not None else value)
        except (TypeError, ValueError, RuntimeError) as err:
            raise SigmaError(f"not a numeric array ({first_line(err)})", file=path, field=key) from None
    if len({tuple(v.shape) for v in out}) > 1:
        path = next(p for (p, _), v in zip(samples, out) if v.shape != out[0].shape)
        raise SigmaError(f"shapes differ between samples (first {list(out[0].shape)})", file=path, field=key)
    return torch.stack(out)


def _index_column(samples: list[tuple[Path, dict]], key: str, default) -> torch.Tensor:
    """An integer per sample: the sample's own `key` when every sample has it, else default(i, sample)."""
    have = all(key in s for _, s in samples)
    values = []
    for i, (path, s) in enumerate(samples):
        try:
            values.append(int(s[key]) if have else int(default(i, s)))
        except (TypeError, ValueError, RuntimeError):
            raise SigmaError(f"sample {i} holds {type(s.get(key)).__name__}, expected an integer", file=path,
                             field=key) from None
    return torch.tensor(values, dtype=torch.long)


def _frame_positions(episodes: torch.Tensor):
    """Default frame_index: a window's position among its episode's windows, in file order (the paper's samples
    carry no frame index; replay's example plots and the report need one)."""
    seen: dict[int, int] = {}

    def position(i: int, _sample: dict) -> int:
        ep = int(episodes[i])
        seen[ep] = seen.get(ep, -1) + 1
        return seen[ep]

    return position


def load_pt_shards(directory: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(stacked data in our contract, a meta dict with tasks and normalisation computed from the samples)."""
    paths = sorted(Path(directory).glob("shard_*.pt"))
    if not paths:
        raise SigmaError("no shard_*.pt files", file=directory)
    samples = [(p, s) for p in paths for s in _samples(p)]
    texts = [str(s.get("text", "")) for _, s in samples]
    tasks = sorted(set(texts))
    data = {k: _stack(samples, k) for k in REQUIRED}
    for key in action_keys(BASE_ACTION):
        if all(key in s for _, s in samples):
            data[key] = _stack(samples, key)
    if all("vision_inputs" in s for _, s in samples):
        data["vision_inputs"] = _stack(samples, "vision_inputs", dtype=None)
    n = len(samples)
    episodes = _index_column(samples, "episode_index", lambda i, _s: i)
    data.update(task_index=torch.tensor([tasks.index(t) for t in texts]), episode_index=episodes,
                frame_index=_index_column(samples, "frame_index", _frame_positions(episodes)),
                split=torch.full((n,), SPLIT_CODES["test"]), pad_steps=torch.zeros(n, dtype=torch.long))
    flat_actions = data["gt_action_trajectory"].reshape(-1, data["gt_action_trajectory"].shape[-1])
    norm = {name: {"mean": x.mean(0).tolist(), "std": x.std(0).clamp_min(1e-6).tolist()}
            for name, x in (("robot_state", data["robot_state"]), ("action", flat_actions))}
    meta = {"tasks": tasks, "normalization": norm, "source": "paper .pt shards",
            "notes": "normalisation computed from these samples; episode_index from the samples or their order; "
                     "frame_index from the samples or the window's position within its episode"}
    return data, meta
