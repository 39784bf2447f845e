"""Shard batch -> model batch: normalise state and actions with meta.json's statistics and add the task's text tokens.

Shards keep raw units (paper 4.1 sample dicts); the model and the base work in normalised units (SigmaOutput,
BasePolicy.predict_chunk), so training normalises once here: x_n = (x - mean) / std with the train split's per-dim
statistics (meta["normalization"]). Base actions written by `sigma base-actions` are already in normalised units
(BasePolicy.predict_chunk's contract) unless meta says otherwise (meta["base_actions"]["units"] == "raw").

Shape legend (data/schema.py): B batch, T horizon, C chunk, Da action dim, Ds state dim, L text length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from sigma_vla.errors import SigmaError

ACTION_KEYS = ("gt_action_vector", "gt_action_chunk", "gt_action_trajectory")
BASE_KEYS = ("base_action_vector", "base_action_chunk", "base_action_trajectory")


@dataclass
class Normalizer:
    """Per-dimension affine normalisation of robot_state (Ds,) and actions (Da,)."""

    state_mean: Tensor  # (Ds,)
    state_std: Tensor  # (Ds,)
    action_mean: Tensor  # (Da,)
    action_std: Tensor  # (Da,)

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Normalizer:
        try:
            norm = meta["normalization"]
            parts = [torch.tensor(norm[k][s], dtype=torch.float32)
                     for k in ("robot_state", "action") for s in ("mean", "std")]
        except (KeyError, TypeError) as err:
            raise SigmaError(f"normalization statistics missing ({err})", file="meta.json",
                             field="normalization") from err
        return cls(*parts)

    @classmethod
    def identity(cls, state_dim: int, action_dim: int) -> Normalizer:
        return cls(torch.zeros(state_dim), torch.ones(state_dim), torch.zeros(action_dim), torch.ones(action_dim))

    def state(self, x: Tensor) -> Tensor:
        return (x.float() - self.state_mean.to(x.device)) / self.state_std.to(x.device)  # (B, Ds)

    def action(self, x: Tensor) -> Tensor:
        return (x.float() - self.action_mean.to(x.device)) / self.action_std.to(x.device)  # (B, ..., Da)

    def unaction(self, x: Tensor) -> Tensor:
        """Back to raw units (the paper's MSE units)."""
        return x.float() * self.action_std.to(x.device) + self.action_mean.to(x.device)  # (B, ..., Da)


class BatchTransform:
    """Callable shard batch -> model batch; shared by training, validation and the benchmarks."""

    def __init__(self, normalizer: Normalizer, task_tokens: Any | None = None, base_units: str = "normalized"):
        if base_units not in ("normalized", "raw"):
            raise SigmaError(f"base action units must be 'normalized' or 'raw', got {base_units!r}",
                             file="meta.json", field="base_actions.units")
        self.norm, self.task_tokens, self.base_units = normalizer, task_tokens, base_units

    @classmethod
    def from_meta(cls, meta: dict[str, Any], text_max_len: int | None) -> BatchTransform:
        """text_max_len None: no text tokens (command-id text mode, or a model that reads task_index)."""
        tokens = None
        if text_max_len is not None:
            from sigma_vla.models.text import TaskTokens

            tokens = TaskTokens(meta.get("tasks") or [""], text_max_len)
        units = (meta.get("base_actions") or {}).get("units", "normalized")
        return cls(Normalizer.from_meta(meta), tokens, units)

    def __call__(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        out = dict(batch)
        out["robot_state"] = self.norm.state(batch["robot_state"])  # (B, Ds)
        for key in ACTION_KEYS:
            out[key] = self.norm.action(batch[key])  # (B, Da) | (B, C, Da) | (B, T, Da)
        if self.base_units == "raw":
            for key in BASE_KEYS:
                if key in batch:
                    out[key] = self.norm.action(batch[key])
        if self.task_tokens is not None and "text_input_ids" not in batch:
            tokens = self.task_tokens(batch["task_index"])  # (B, L) ids and mask
            out.update({k: v.to(batch["task_index"].device) for k, v in tokens.items()})
        return out


def has_base_actions(batch_or_keys: Any) -> bool:
    """True when all three base action keys are present (TRAF then trains residuals on top of them)."""
    keys = set(batch_or_keys)
    present = [k in keys for k in BASE_KEYS]
    if any(present) and not all(present):
        raise SigmaError(f"only some base action keys present ({sorted(keys & set(BASE_KEYS))}); rerun "
                         "`sigma base-actions`", field="base_action_*")
    return all(present)
