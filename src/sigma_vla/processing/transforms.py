"""Shard batch -> model batch: normalise state and actions with meta.json's statistics and add the task's text tokens.

Shards keep raw units (paper 4.1 sample dicts); the model and the base work in normalised units (SigmaOutput,
BasePolicy.predict_chunk), so training, base actions, evaluation and the policy all normalise here, the same way:
x_n = (x - mean) / std with the train split's per-dim statistics (meta["normalization"]). Base actions written by
`sigma base-actions` are already in normalised units (BasePolicy.predict_chunk's contract) unless meta says
otherwise (meta["base_actions"]["units"] == "raw").

processing/ sits below the model, not in training/: inference and evaluation need it as much as the trainer does
(docs/architecture.md, Layers); processing/recipe.py builds the transform for a given model. A Normalizer round-trips through JSON (to_dict / from_dict, the
layout of meta.json["normalization"]) so a run can carry its own statistics.

Shape legend (docs/architecture.md): B batch, T horizon, C chunk, Da action dim, Ds state dim, L text length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from sigma_vla.errors import SigmaError
from sigma_vla.processing.action_triple import BASE_ACTION, GT_ACTION, action_keys
from sigma_vla.processing.text import TaskTokens

ACTION_KEYS = action_keys(GT_ACTION)
BASE_KEYS = action_keys(BASE_ACTION)


STAT_LIMIT = 1e6  # |mean| and std beyond this are not statistics of a robot's state or actions
ACTION_MARGIN = 0.1  # actions are clamped to the trained [min, max] widened by this share of its width


@dataclass
class Normalizer:
    """Per-dimension affine normalisation of robot_state (Ds,) and actions (Da,); with the train split's action
    range, `clamp_action` keeps a command within it (docs/reliability.md, "Statistics and actions")."""

    state_mean: Tensor  # (Ds,)
    state_std: Tensor  # (Ds,)
    action_mean: Tensor  # (Da,)
    action_std: Tensor  # (Da,)
    action_min: Tensor | None = None  # (Da,)
    action_max: Tensor | None = None  # (Da,)

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Normalizer:
        """The train split's statistics in a shards directory's meta.json."""
        if not isinstance(meta.get("normalization"), dict):
            raise SigmaError("normalization statistics missing", file="meta.json", field="normalization")
        return cls.from_dict(meta["normalization"], file="meta.json")

    @classmethod
    def from_dict(cls, data: dict[str, Any], file: Any = None) -> Normalizer:
        """Inverse of to_dict: {"robot_state": {"mean", "std"}, "action": {"mean", "std"[, "min", "max"]}} (lists
        of floats), validated: finite, std > 0, within STAT_LIMIT, one value per dimension. file: where the record
        came from, for the one-line error."""
        vec = lambda key, stat: _stat_vector(data, key, stat, file)  # noqa: E731
        state_mean, state_std, action_mean, action_std = (vec(k, s) for k in ("robot_state", "action")
                                                          for s in ("mean", "std"))
        action = data.get("action") if isinstance(data, dict) else None
        ranged = isinstance(action, dict) and "min" in action and "max" in action
        lo, hi = (vec("action", "min"), vec("action", "max")) if ranged else (None, None)
        sizes = {len(state_mean), len(state_std)}, {len(action_mean), len(action_std)} | (
            {len(lo), len(hi)} if ranged else set())
        if any(len(n) != 1 for n in sizes) or (ranged and bool((lo > hi).any())):
            raise SigmaError("mean, std, min and max need one value per dimension, min <= max", file=file,
                             field="normalization")
        return cls(state_mean, state_std, action_mean, action_std, lo, hi)

    def to_dict(self) -> dict[str, dict[str, list[float]]]:
        """JSON-able, exact: float32 values survive the round trip through Python floats bit for bit."""
        action = {"mean": self.action_mean.tolist(), "std": self.action_std.tolist()}
        if self.action_min is not None and self.action_max is not None:
            action.update(min=self.action_min.tolist(), max=self.action_max.tolist())
        return {"robot_state": {"mean": self.state_mean.tolist(), "std": self.state_std.tolist()}, "action": action}

    def clamp_action(self, x: Tensor) -> Tensor:
        """Raw actions (..., Da) clamped to the trained range widened by ACTION_MARGIN (unchanged without one)."""
        if self.action_min is None or self.action_max is None:
            return x
        pad = ACTION_MARGIN * (self.action_max - self.action_min)
        return torch.minimum(torch.maximum(x, self.action_min - pad), self.action_max + pad)

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


def _stat_vector(data: Any, key: str, stat: str, file: Any = None) -> Tensor:
    """One statistics vector of a normalization record, checked (a bad one names its field)."""
    field = f"normalization.{key}.{stat}"
    try:
        values = data[key][stat]
    except (KeyError, TypeError):
        raise SigmaError("missing", file=file, field=field) from None
    if not isinstance(values, list) or not values or len(values) > 4096 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise SigmaError("must be a non-empty list of numbers", file=file, field=field)
    t = torch.tensor(values, dtype=torch.float64)
    if not bool(torch.isfinite(t).all()) or bool((t.abs() > STAT_LIMIT).any()):
        raise SigmaError(f"must be finite and within +-{STAT_LIMIT:g}", file=file, field=field)
    if stat == "std" and bool((t <= 0).any()):
        raise SigmaError("must be > 0", file=file, field=field)
    return t.float()


class BatchTransform:
    """Callable shard batch -> model batch; shared by training, validation and the benchmarks."""

    def __init__(self, normalizer: Normalizer, task_tokens: Any | None = None, base_units: str = "normalized"):
        if base_units not in ("normalized", "raw"):
            raise SigmaError(f"base action units must be 'normalized' or 'raw', got {base_units!r}",
                             file="meta.json", field="base_actions.units")
        self.norm, self.task_tokens, self.base_units = normalizer, task_tokens, base_units
        self.paraphrases: Any | None = None  # processing.paraphrase.Paraphrases: training batches only

    @classmethod
    def from_meta(cls, meta: dict[str, Any], text_max_len: int | None, tokenizer: str | None = None) -> BatchTransform:
        """text_max_len None: no text tokens (command-id text mode, or a model that reads task_index). tokenizer:
        the backbone's tokenizer directory (None: MiniLM's). processing/recipe.py picks both for a model."""
        tokens = None
        if text_max_len is not None:
            tokens = TaskTokens(meta.get("tasks") or [""], text_max_len, tokenizer)
        units = (meta.get("base_actions") or {}).get("units", "normalized")
        return cls(Normalizer.from_meta(meta), tokens, units)

    def __call__(self, batch: dict[str, Tensor], paraphrase_step: int | None = None) -> dict[str, Tensor]:
        """paraphrase_step: a training step, whose draw of wordings the task's text takes (with paraphrases set);
        None reads the recorded task."""
        out = dict(batch)
        out["robot_state"] = self.norm.state(batch["robot_state"])  # (B, Ds)
        for key in ACTION_KEYS:
            out[key] = self.norm.action(batch[key])  # (B, Da) | (B, C, Da) | (B, T, Da)
        if self.base_units == "raw":
            for key in BASE_KEYS:
                if key in batch:
                    out[key] = self.norm.action(batch[key])
        if self.task_tokens is not None and "text_input_ids" not in batch:
            if self.paraphrases is not None and paraphrase_step is not None:
                tokens = self.paraphrases.tokens(batch["task_index"], paraphrase_step)  # (B, L) ids and mask
            else:
                tokens = self.task_tokens(batch["task_index"])  # (B, L) ids and mask
            out.update({k: v.to(batch["task_index"].device) for k, v in tokens.items()})
        return out

