"""Shard batch -> model batch: normalise state and actions with meta.json's statistics and add the task's text tokens.

Shards keep raw units (paper 4.1 sample dicts); the model and the base work in normalised units (SigmaOutput,
BasePolicy.predict_chunk), so training, base actions, evaluation and the policy all normalise here, the same way:
x_n = (x - mean) / std with the train split's per-dim statistics (meta["normalization"]). Base actions written by
`sigma base-actions` are already in normalised units (BasePolicy.predict_chunk's contract) unless meta says
otherwise (meta["base_actions"]["units"] == "raw").

This module sits beside the model, not in training/, because inference and evaluation need it as much as the
trainer does (docs/architecture.md, Layers). A Normalizer round-trips through JSON (to_dict / from_dict, the
layout of meta.json["normalization"]) so a run can carry its own statistics.

Shape legend (docs/architecture.md): B batch, T horizon, C chunk, Da action dim, Ds state dim, L text length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from sigma_vla.errors import SigmaError
from sigma_vla.models.action_triple import BASE_ACTION, GT_ACTION, action_keys

ACTION_KEYS = action_keys(GT_ACTION)
BASE_KEYS = action_keys(BASE_ACTION)


@dataclass
class Normalizer:
    """Per-dimension affine normalisation of robot_state (Ds,) and actions (Da,)."""

    state_mean: Tensor  # (Ds,)
    state_std: Tensor  # (Ds,)
    action_mean: Tensor  # (Da,)
    action_std: Tensor  # (Da,)

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Normalizer:
        """The train split's statistics in a shards directory's meta.json."""
        try:
            return cls.from_dict(meta["normalization"])
        except (KeyError, TypeError) as err:
            raise SigmaError(f"normalization statistics missing ({err})", file="meta.json",
                             field="normalization") from err

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normalizer:
        """Inverse of to_dict: {"robot_state": {"mean", "std"}, "action": {"mean", "std"}} (lists of floats)."""
        return cls(*(torch.tensor(data[k][s], dtype=torch.float32)
                     for k in ("robot_state", "action") for s in ("mean", "std")))

    def to_dict(self) -> dict[str, dict[str, list[float]]]:
        """JSON-able, exact: float32 values survive the round trip through Python floats bit for bit."""
        return {"robot_state": {"mean": self.state_mean.tolist(), "std": self.state_std.tolist()},
                "action": {"mean": self.action_mean.tolist(), "std": self.action_std.tolist()}}

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
    def from_meta(cls, meta: dict[str, Any], text_max_len: int | None, tokenizer: str | None = None) -> BatchTransform:
        """text_max_len None: no text tokens (command-id text mode, or a model that reads task_index). tokenizer:
        the backbone's tokenizer directory (None: MiniLM's; models.backbone.tokenizer_path)."""
        tokens = None
        if text_max_len is not None:
            from sigma_vla.models.text import TaskTokens

            tokens = TaskTokens(meta.get("tasks") or [""], text_max_len, tokenizer)
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

