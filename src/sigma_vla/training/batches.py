"""Deterministic, resumable batches: micro-batch j is a pure function of (seed, j, rank).

No DataLoader: the shards of one prep sit in memory (ShardDataset keeps a dict of stacked tensors), so a batch is
one fancy index per key. The "data-loader position" of a checkpoint is then just the number of micro-batches
consumed, and a resumed run sees exactly the samples the straight run would have seen. Under data parallelism
every rank reads a disjoint slice of the same global batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch.utils.data import Dataset

from sigma_vla.errors import SigmaError


@dataclass(frozen=True)
class BatchPlan:
    """An endless stream of shuffled epochs; micro-batch j of rank r is global positions
    [(j * world + r) * B, (j * world + r + 1) * B) of that stream. Epoch e is randperm(n) seeded by seed + e."""

    num_samples: int
    batch_size: int
    world_size: int = 1
    rank: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_samples < 1:
            raise SigmaError("no samples to train on (is the split empty?)", field="split")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} outside world size {self.world_size}")

    def indices(self, micro_batch: int) -> torch.Tensor:
        """Sample indices of this rank's micro-batch number `micro_batch`: (B,) int64."""
        start = (micro_batch * self.world_size + self.rank) * self.batch_size
        positions = torch.arange(start, start + self.batch_size)  # (B,) positions in the endless stream
        epochs, offsets = positions // self.num_samples, positions % self.num_samples
        return torch.stack([_epoch_perm(self.num_samples, self.seed + int(e))[o] for e, o in zip(epochs, offsets)])

    def epoch(self, micro_batch: int) -> float:
        return micro_batch * self.world_size * self.batch_size / self.num_samples


@lru_cache(maxsize=4)
def _epoch_perm(n: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))  # (n,)


def collate(dataset: Dataset, idx: torch.Tensor) -> dict[str, torch.Tensor]:
    """A batch dict of (B, ...) tensors: one index per key when the dataset holds stacked tensors."""
    data = getattr(dataset, "data", None)
    if isinstance(data, dict) and data and all(isinstance(v, torch.Tensor) for v in data.values()):
        return {k: v[idx] for k, v in data.items()}
    items = [dataset[int(i)] for i in idx]
    return {k: torch.stack([item[k] for item in items]) for k in items[0]}


def sequential_batches(dataset: Dataset, batch_size: int, max_batches: int) -> list[torch.Tensor]:
    """The first `max_batches` in-order batches of a dataset (validation): a list of (B',) index tensors."""
    n = len(dataset)
    return [torch.arange(s, min(s + batch_size, n)) for s in range(0, n, batch_size)][:max_batches]


class TensorDictDataset(Dataset):
    """A dataset over a dict of stacked tensors (tests and benchmarks build one from make_fake_batch)."""

    def __init__(self, data: dict[str, torch.Tensor], tasks: list[str] | None = None):
        self.data = data
        self.tasks = tasks or []

    def __len__(self) -> int:
        return len(next(iter(self.data.values())))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.data.items()}
