"""Shards: `shard_00000.safetensors` ... plus `meta.json` (paper 4.1's ShardWriter, without pickle).

Writes are atomic (temp file + rename), so a shard on disk is always complete; a killed prep resumes by counting
the samples the complete shards hold and skipping that many (the sample order is deterministic).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file as save_numpy

from sigma_vla.data.schema import META_FILE, SHARD_GLOB, SHARD_PATTERN, SPLIT_CODES
from sigma_vla.errors import SigmaError, first_line
from sigma_vla.outdir import atomic_write, atomic_write_text  # noqa: F401  (atomic_write_text: re-exported)

if TYPE_CHECKING:  # torch is imported lazily: prep's worker processes never need it
    import torch


def write_shard(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """One shard file, atomically: the file either holds every sample or does not exist."""
    arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    # One metadata key only: safetensors stores metadata in a hash map, so several keys would serialise in a
    # different order per process and identical shards would differ in bytes.
    atomic_write(path, lambda tmp: save_numpy(arrays, str(tmp), metadata={"format": "sigma-vla-shard"}))


def shard_paths(shards_dir: Path) -> list[Path]:
    return sorted(Path(shards_dir).glob(SHARD_GLOB))


@contextmanager
def open_shard(path: Path, framework: str = "numpy") -> Iterator[Any]:
    """safe_open, with a truncated, empty or foreign file turned into a one-line SigmaError naming it."""
    try:
        with safe_open(str(path), framework=framework) as f:
            yield f
    except (SafetensorError, OSError) as err:
        raise SigmaError(f"unreadable shard (truncated or corrupt?): {first_line(err)}", file=path) from None


def shard_num_samples(path: Path) -> int:
    with open_shard(path) as f:
        if "split" not in f.keys():
            raise SigmaError("key missing from shard", file=path, field="split")
        return int(f.get_slice("split").get_shape()[0])


def read_meta(shards_dir: str | Path) -> dict:
    path = Path(shards_dir) / META_FILE
    if not path.is_file():
        raise SigmaError("not a shard directory (meta.json missing; run `sigma prep` first)", file=path)
    try:
        meta = json.loads(path.read_text())
    except (ValueError, OSError) as err:
        raise SigmaError(f"unreadable ({first_line(err)}); rerun `sigma prep`", file=path) from None
    if not isinstance(meta, dict):
        raise SigmaError(f"expected a JSON object, got {type(meta).__name__}", file=path)
    _check_meta_fields(meta, path)
    if meta.get("status") != "complete":
        raise SigmaError("prep did not finish (status is not 'complete'); rerun `sigma prep` to resume",
                         file=path, field="status")
    return meta


def _check_meta_fields(meta: dict, path: Path) -> None:
    """The fields every reader of a shard directory uses, with their types (a hand-edited meta.json fails here in
    one line rather than deep in training)."""
    from sigma_vla.data.info_schema import as_dict, as_int

    tasks = meta.get("tasks")
    if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
        raise SigmaError("must be a list of instruction strings", file=path, field="tasks")
    for key in ("state_dim", "action_dim"):
        as_int(meta.get(key), path, key, minimum=1)
    for key in ("params", "normalization"):
        as_dict(meta.get(key), path, key)


class ShardWriter:
    """Buffers samples and writes fixed-size shards, starting after `start_samples` already on disk.

    Writes are synchronous: a background writer thread measured no faster on 2 cores (video decoding already uses
    both), so the simpler design stays."""

    def __init__(self, out_dir: Path, shard_size: int, start_samples: int = 0):
        if start_samples % shard_size:
            raise ValueError("resume point must fall on a shard boundary")
        self.out_dir, self.shard_size = Path(out_dir), shard_size
        self.next_index = start_samples // shard_size
        self.buffer: list[dict[str, np.ndarray]] = []
        self.buffered = 0
        self.written: list[Path] = []

    def add(self, samples: dict[str, np.ndarray]) -> None:
        """Add a block of samples (every array has the same first dim)."""
        n = len(next(iter(samples.values())))
        if n:
            self.buffer.append(samples)
            self.buffered += n
        while self.buffered >= self.shard_size:
            self._flush(self.shard_size)

    def close(self) -> None:
        """Write what is still buffered (the last shard may be smaller)."""
        if self.buffered:
            self._flush(self.buffered)

    def _flush(self, n: int) -> None:
        """Write the first n buffered samples; each sample is copied once (into the shard's contiguous arrays)."""
        take, used = [], 0
        for block in self.buffer:
            size = len(block["split"])
            take.append({k: v[: n - used] for k, v in block.items()} if used + size > n else block)
            used += min(size, n - used)
            if used == n:
                break
        head = {k: np.concatenate([b[k] for b in take]) for k in self.buffer[0]}
        last = self.buffer[len(take) - 1]
        cut = len(take[-1]["split"])
        rest = [{k: v[cut:] for k, v in last.items()}] if cut < len(last["split"]) else []
        rest += self.buffer[len(take):]
        path = self.out_dir / SHARD_PATTERN.format(self.next_index)
        write_shard(path, head)
        self.written.append(path)
        self.next_index += 1
        self.buffered -= n
        self.buffer = rest


def load_shards(shards_dir: str | Path, keys: list[str] | None = None) -> dict[str, "torch.Tensor"]:
    """Every shard's tensors concatenated along the sample dim (the shards of one prep fit in memory)."""
    import torch

    paths = shard_paths(Path(shards_dir))
    if not paths:
        raise SigmaError("no shard_*.safetensors files", file=shards_dir)
    parts: dict[str, list[torch.Tensor]] = {}
    for path in paths:
        with open_shard(path, framework="pt") as f:
            for k in keys or f.keys():
                if k not in f.keys():
                    raise SigmaError("key missing from shard", file=path, field=k)
                parts.setdefault(k, []).append(f.get_tensor(k))
    return {k: torch.cat(v) for k, v in parts.items()}


class ShardDataset:
    """Samples of one split (or all) as dicts of tensors, in shard order; tasks from meta.json.

    A map-style dataset (``__len__`` + ``__getitem__``), usable directly with torch's DataLoader.
    """

    def __init__(self, shards_dir: str | Path, split: str | None = None, keys: list[str] | None = None):
        import torch

        self.dir = Path(shards_dir)
        self.meta = read_meta(self.dir)
        data = load_shards(self.dir, keys)
        if split is not None:
            if split not in SPLIT_CODES:
                raise SigmaError(f"unknown split {split!r}", field="split")
            split_col = data["split"] if "split" in data else load_shards(self.dir, ["split"])["split"]
            idx = torch.nonzero(split_col == SPLIT_CODES[split]).squeeze(1)
            data = {k: v[idx] for k, v in data.items()}
        self.data = data
        self.tasks: list[str] = self.meta["tasks"]

    def __len__(self) -> int:
        return len(next(iter(self.data.values())))

    def __getitem__(self, i: int) -> dict[str, "torch.Tensor"]:
        return {k: v[i] for k, v in self.data.items()}


def meta_dims(meta: dict[str, Any]) -> tuple[int, int]:
    """(horizon T, chunk C) of a shards directory's meta.json."""
    params = meta.get("params") or {}
    try:
        return int(params["horizon"]), int(params["chunk"])
    except (KeyError, TypeError, ValueError) as err:
        raise SigmaError(f"shard metadata lacks params {err}", file="meta.json", field="params") from err
