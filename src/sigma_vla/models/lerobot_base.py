"""`LeRobotPolicyBase`: any LeRobot policy (pi0.5, SmolVLA, ACT, Diffusion, ...) as Sigma's frozen base.

Duck-typed: the wrapped object needs LeRobot's `predict_action_chunk(batch: dict[str, Tensor]) -> Tensor` (B, n, Da)
and `reset()`; this module never imports lerobot (its releases pin an older torch; docs/architecture.md, "Native
LeRobot formats"). The user loads the policy (and, for LeRobot >= 0.4, its pre/post-processor pipelines) from a
local directory and hands them over.

Key mapping, ours -> LeRobot's:
  vision_inputs (B, V, 3, S, S) uint8          -> observation.images.<camera> (B, 3, S, S) float32 in [0, 1]
  robot_state (B, Ds), our normalised units    -> observation.state (B, Ds) in raw units (state_stats undo ours)
  task strings (batch "task", or task_index)   -> task: list[str]
and back: the policy's (raw) action chunk -> our normalised units (action_stats), cut to our horizon T.

Shape legend (docs/architecture.md): B batch, T horizon, Da action dim, Ds state dim, V cameras, S image side.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from sigma_vla.models.base_policy import BasePolicy

Stats = tuple[Tensor, Tensor]  # (mean, std), each (dim,)


class LeRobotPolicyBase(BasePolicy):
    def __init__(self, policy: Any, horizon: int, camera_keys: Sequence[str] | None = None,
                 action_dim: int | None = None, tasks: Sequence[str] | None = None,
                 preprocess: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                 postprocess: Callable[[Tensor], Tensor] | None = None,
                 state_stats: Stats | None = None, action_stats: Stats | None = None):
        """policy: the LeRobot policy object. horizon: T, the chunk length we return (the policy must predict at
        least T steps). camera_keys: LeRobot image keys in the order of our V cameras (short names such as 'front'
        become 'observation.images.front'); default: the policy config's image_features. tasks: task strings by
        task_index, when batches carry no 'task' list. preprocess / postprocess: LeRobot's processor pipelines
        (they normalise inputs and unnormalise actions with the policy's own stats). state_stats / action_stats:
        the shards' normalisation (mean, std), to hand the policy raw state and to bring its raw actions back."""
        for name in ("predict_action_chunk", "reset"):
            if not callable(getattr(policy, name, None)):
                raise TypeError(f"{type(policy).__name__} has no {name}(): not a LeRobot policy")
        self.policy = policy
        self.horizon = int(horizon)
        self.camera_keys = [_image_key(k) for k in (camera_keys if camera_keys is not None else _policy_cameras(policy))]
        self.action_dim = int(action_dim if action_dim is not None else _policy_action_dim(policy))
        self.tasks = list(tasks) if tasks is not None else None
        self.preprocess, self.postprocess = preprocess, postprocess
        self.state_stats, self.action_stats = state_stats, action_stats

    def to_lerobot(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Our batch -> LeRobot's observation dict (see the module docstring for the mapping)."""
        out: dict[str, Any] = {}
        frames = batch.get("vision_inputs")
        n_cams = 0 if frames is None else frames.shape[1]
        if n_cams != len(self.camera_keys):
            raise ValueError(f"batch has {n_cams} cameras, camera_keys names {len(self.camera_keys)}: "
                             f"{self.camera_keys}")
        for i, key in enumerate(self.camera_keys):
            img = frames[:, i]  # (B, 3, S, S)
            out[key] = img.float() / 255.0 if img.dtype == torch.uint8 else img.float()  # (B, 3, S, S) in [0, 1]
        state = batch["robot_state"].float()  # (B, Ds)
        if self.state_stats is not None:
            mean, std = self.state_stats
            state = state * std.to(state) + mean.to(state)  # back to raw units
        out["observation.state"] = state
        out["task"] = self._tasks(batch, state.shape[0])
        return out

    @torch.no_grad()
    def predict_chunk(self, batch: dict[str, Any]) -> Tensor:
        obs = self.to_lerobot(batch)
        if self.preprocess is not None:
            obs = self.preprocess(obs)
        chunk = self.policy.predict_action_chunk(obs)  # (B, n, Da), n >= T
        if self.postprocess is not None:
            chunk = self.postprocess(chunk)
        chunk = torch.as_tensor(chunk).float()
        b = batch["robot_state"].shape[0]
        if chunk.ndim != 3 or chunk.shape[0] != b or chunk.shape[1] < self.horizon or chunk.shape[2] != self.action_dim:
            raise ValueError(f"policy returned {tuple(chunk.shape)}, expected ({b}, >= {self.horizon}, "
                             f"{self.action_dim})")
        chunk = chunk[:, : self.horizon]  # (B, T, Da)
        if self.action_stats is not None:
            mean, std = self.action_stats
            chunk = (chunk - mean.to(chunk)) / std.to(chunk)  # raw -> our normalised units
        return chunk

    def reset(self) -> None:
        self.policy.reset()

    def _tasks(self, batch: dict[str, Any], b: int) -> list[str]:
        if "task" in batch:
            tasks = [batch["task"]] * b if isinstance(batch["task"], str) else list(batch["task"])
        elif self.tasks is not None and "task_index" in batch:
            tasks = [self.tasks[int(i)] for i in batch["task_index"].view(-1).tolist()]
        else:
            raise KeyError("batch has neither 'task' strings nor 'task_index' with tasks= given to LeRobotPolicyBase")
        if len(tasks) != b:
            raise ValueError(f"{len(tasks)} task strings for a batch of {b}")
        return tasks


def _image_key(name: str) -> str:
    return name if name.startswith("observation.") else f"observation.images.{name}"


def _policy_cameras(policy: Any) -> list[str]:
    feats = getattr(getattr(policy, "config", None), "image_features", None)
    if not feats:
        raise ValueError("cannot read the policy's image_features: pass camera_keys=")
    return list(feats)


def _policy_action_dim(policy: Any) -> int:
    feats = getattr(getattr(policy, "config", None), "output_features", None) or {}
    action = feats.get("action")
    shape = getattr(action, "shape", None)
    if not shape:
        raise ValueError("cannot read the policy's action shape from config.output_features: pass action_dim=")
    return int(shape[0])
