"""The three action time scales of paper 3.3 as one type: path A's vector, path B's chunk, path C's trajectory.

Ground truth, the base's offline actions, Sigma's residuals and final actions, the adapter's output and every
evaluation group are triples of these, in this order. One type keeps them from being spelled by hand (and two
chunk-shaped tensors from being swapped by position); batches carry them under `{prefix}_{scale}` keys of the shard
contract (data/schema.py): `gt_action_*` and `base_action_*`.

The masked per-sample MSE lives here too, beside the type it measures: TRAF trains on it (training/losses.py) and
offline replay reports it (evaluation/replay.py), so both layers compute the same number.

Shape legend (docs/architecture.md): B batch, C chunk, T horizon, Da action dim.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, NamedTuple

import torch
from torch import Tensor

from sigma_vla.errors import SigmaError

SCALES = ("vector", "chunk", "trajectory")
GT_ACTION = "gt_action"  # the dataset's actions (data/schema.py SAMPLE_KEYS)
BASE_ACTION = "base_action"  # the frozen base's offline actions (data/schema.py BASE_ACTION_KEYS)


def action_keys(prefix: str) -> tuple[str, str, str]:
    """The batch keys of one triple: ("{prefix}_vector", "{prefix}_chunk", "{prefix}_trajectory")."""
    return tuple(f"{prefix}_{s}" for s in SCALES)  # type: ignore[return-value]


class ActionTriple(NamedTuple):
    """Actions at the three time scales, in the same units (normalised unless a caller says otherwise)."""

    vector: Tensor  # (B, Da) path A
    chunk: Tensor  # (B, C, Da) path B
    trajectory: Tensor  # (B, T, Da) path C

    @classmethod
    def from_batch(cls, batch: dict[str, Any], prefix: str) -> ActionTriple:
        """The triple stored under `{prefix}_*` keys (GT_ACTION or BASE_ACTION)."""
        return cls(*(batch[k] for k in action_keys(prefix)))

    @classmethod
    def from_chunk(cls, chunk: Tensor, chunk_len: int) -> ActionTriple:
        """A base's (B, T, Da) prediction as TRAF reads it: step 0, the first C steps, all T."""
        return cls(chunk[:, 0], chunk[:, :chunk_len], chunk)  # (B, Da), (B, C, Da), (B, T, Da)

    def as_dict(self, prefix: str) -> dict[str, Tensor]:
        """Back under `{prefix}_*` keys, e.g. to write base actions into a shard."""
        return dict(zip(action_keys(prefix), self))

    def map(self, fn: Callable[[Tensor], Tensor]) -> ActionTriple:
        return ActionTriple(*(fn(a) for a in self))

    def plus(self, other: ActionTriple) -> ActionTriple:
        """Scale by scale self + other, in self's dtype: TRAF's a = a_base + delta_a (paper 4.2.1). A named method,
        because a tuple's `+` concatenates."""
        return ActionTriple(*(a + b.to(a.dtype) for a, b in zip(self, other)))


def has_actions(batch_or_keys: Iterable[str], prefix: str = BASE_ACTION) -> bool:
    """True when all three `{prefix}_*` keys are present (TRAF then trains residuals on top of the base's actions);
    some but not all is an error (a shard that `sigma base-actions` did not finish)."""
    keys = set(batch_or_keys)
    wanted = action_keys(prefix)
    present = [k in keys for k in wanted]
    if any(present) and not all(present):
        raise SigmaError(f"only some {prefix.replace('_', ' ')} keys present ({sorted(keys & set(wanted))}); rerun "
                         "`sigma base-actions`", field=f"{prefix}_*")
    return all(present)


# ------------------------------------------------------------------------------------------------ masked MSE
def _expand_mask(mask: Tensor | None, like: Tensor) -> Tensor:
    """A prefix mask ((B,), (B, T), ...) -> bool mask of `like`'s shape (True = real element)."""
    if mask is None:
        return torch.ones_like(like, dtype=torch.bool)
    if mask.shape != like.shape[: mask.dim()]:
        raise ValueError(f"mask shape {tuple(mask.shape)} is not a prefix of tensor shape {tuple(like.shape)}")
    mask = mask.to(dtype=torch.bool, device=like.device)
    return mask.reshape(*mask.shape, *([1] * (like.dim() - mask.dim()))).expand_as(like)


def per_sample_sse(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per-sample sum of squared errors over real elements and their count: (B, ...) -> (B,), (B,).

    torch.where (not multiplication) keeps NaN or inf padding out of the sum."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    m = _expand_mask(mask, pred)  # (B, ...)
    sq = torch.where(m, (pred.float() - target.float()) ** 2, torch.zeros((), device=pred.device))
    return sq.flatten(1).sum(1), m.flatten(1).sum(1).to(sq.dtype)  # (B,), (B,)


def per_sample_mse(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """MSE_i of paper 4.2.1: per-sample mean over real elements, (B, ...) -> (B,); 0 for a fully masked sample."""
    sse, n = per_sample_sse(pred, target, mask)
    return sse / n.clamp_min(1.0)  # (B,)
