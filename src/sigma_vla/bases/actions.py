"""The frozen base's offline actions in every shard: what TRAF trains residuals on (paper 4.2.1).

`write_base_actions` runs any BasePolicy once over every shard and adds base_action_vector (Da), base_action_chunk
(C, Da) and base_action_trajectory (T, Da) (`ActionTriple.from_chunk` of its prediction), in the normalised units
training uses, so training never runs the base. Each shard is rewritten atomically; meta.json["base_actions"]
records the base's fingerprint and the finished shards, so a killed run resumes where it stopped and a different
base starts over. `sigma base-actions` is its command line; from Python it takes any base, e.g. a
LeRobotPolicyBase (docs/architecture.md, "How to add a base policy").

Shape legend (docs/architecture.md): B batch, T horizon, C chunk, Da action dim.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from sigma_vla.data.shards import meta_dims, open_shard, read_meta, shard_paths, write_shard
from sigma_vla.errors import SigmaError
from sigma_vla.outdir import atomic_write_text
from sigma_vla.processing.action_triple import BASE_ACTION, ActionTriple, action_keys
from sigma_vla.processing.recipe import base_text, shard_transform
from sigma_vla.progress import Progress

BASE_KEYS = action_keys(BASE_ACTION)


def write_base_actions(shards: Path, policy: Any, fingerprint: str, batch_size: int = 64,
                       progress: bool = False, source: str | None = None) -> dict[str, int]:
    """Run any BasePolicy over every shard and add its base_action_* (normalised units). `source` records where the
    base lives, so `sigma rollout` / `sigma serve` rebuild base + Sigma from a run. Returns counts: shards, written,
    skipped (already done by the same base), samples."""
    shards = Path(shards)
    meta = read_meta(shards)
    horizon, chunk = meta_dims(meta)
    if policy.horizon < horizon:
        raise SigmaError(f"the base predicts {policy.horizon} steps, the shards need horizon {horizon}",
                         field="--base")
    if policy.action_dim != int(meta["action_dim"]):
        raise SigmaError(f"the base has action dim {policy.action_dim}, the shards {meta['action_dim']}",
                         field="--base")
    record = meta.get("base_actions") or {}
    finished = set(record.get("done_shards", [])) if record.get("fingerprint") == fingerprint else set()
    record = {"fingerprint": fingerprint, "units": "normalized", "horizon": horizon, "chunk": chunk,
              "base": source, "done_shards": sorted(finished), "status": "in_progress"}
    transform = shard_transform(meta, base_text(policy))
    paths = shard_paths(shards)
    counts = {"shards": len(paths), "written": 0, "skipped": 0, "samples": 0}
    for path in Progress(paths, desc="base actions", unit="shard", enabled=progress):
        if path.name in finished and _has_base_actions(path):  # the record is a hint, the shard is the truth
            counts["skipped"] += 1
            continue
        counts["samples"] += _rewrite_shard(path, policy, transform, horizon, chunk, batch_size)
        counts["written"] += 1
        finished.add(path.name)
        record["done_shards"] = sorted(finished)
        atomic_write_text(shards / "meta.json", json.dumps({**meta, "base_actions": record}, indent=1))
    record["status"] = "complete"
    atomic_write_text(shards / "meta.json", json.dumps({**meta, "base_actions": record}, indent=1))
    return counts


def _has_base_actions(path: Path) -> bool:
    """Whether a shard holds base actions for every window; an unreadable (truncated) shard is a SigmaError."""
    with open_shard(path) as f:
        if "split" not in f.keys() or not set(BASE_KEYS) <= set(f.keys()):
            return False
        n = f.get_slice("split").get_shape()[0]
        return all(f.get_slice(k).get_shape()[0] == n for k in BASE_KEYS)


def _rewrite_shard(path: Path, policy: Any, transform: Any, horizon: int, chunk: int, batch_size: int) -> int:
    """Add base_action_* to one shard file, atomically (data.shards.write_shard: temp file + rename)."""
    with open_shard(path, framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys() if k not in BASE_KEYS}
    n = tensors["split"].shape[0]
    chunks = []
    with torch.no_grad():
        for start in range(0, n, batch_size):
            batch = transform({k: v[start:start + batch_size] for k, v in tensors.items()})
            chunks.append(policy.predict_chunk(batch)[:, :horizon].float())  # (B, T, Da)
    pred = torch.cat(chunks) if chunks else torch.zeros(0, horizon, policy.action_dim)  # (N, T, Da)
    if not torch.isfinite(pred).all():
        raise SigmaError("the base produced non-finite actions", file=path, field="base_action_trajectory")
    tensors.update(ActionTriple.from_chunk(pred, chunk).as_dict(BASE_ACTION))
    write_shard(path, {k: v.contiguous().numpy() for k, v in tensors.items()})
    return n
