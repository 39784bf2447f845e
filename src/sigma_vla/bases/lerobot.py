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

What the policy's config declares (input_features / output_features: cameras, image size, state dim, action dim)
is checked against the shards and every batch: a mismatch is a one-line FeatureMismatch naming both sides, never a
silent success (an ACT trained at 96 px otherwise accepts 128 px frames). Image size is not checked for policies
that resize frames themselves (SmolVLA, pi0/pi0.5, Diffusion with resize_shape).

Policies that condition on n_obs_steps past observations (Diffusion, VQ-BeT) keep them in `policy._queues` and
stack them inside predict_action_chunk. A shard sample is one frame, so the history is that frame repeated, as
LeRobot fills the queues at an episode's first step; the queues are refilled for every batch (samples are
independent windows).

Shape legend (docs/architecture.md): B batch, T horizon, Da action dim, Ds state dim, V cameras, S image side.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from sigma_vla.bases.policy import BasePolicy
from sigma_vla.errors import SigmaError
from sigma_vla.interop.lerobot import load_policy

Stats = tuple[Tensor, Tensor]  # (mean, std), each (dim,)
STATE_KEY, IMAGES_KEY, ACTION_KEY = "observation.state", "observation.images", "action"  # LeRobot's constants
# Config fields of LeRobot policies that resize frames themselves (SmolVLA, pi0 / pi0.5, Diffusion).
RESIZING_FIELDS = ("resize_imgs_with_padding", "image_resolution", "resize_shape")


class FeatureMismatch(SigmaError, ValueError):
    """The policy's declared features and our shards or batch disagree (one line, both sides named)."""


class LeRobotPolicyBase(BasePolicy):
    def __init__(self, policy: Any, horizon: int, camera_keys: Sequence[str] | None = None,
                 action_dim: int | None = None, tasks: Sequence[str] | None = None,
                 preprocess: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                 postprocess: Callable[[Tensor], Tensor] | None = None,
                 state_stats: Stats | None = None, action_stats: Stats | None = None,
                 instruction: str | None = None):
        """policy: the LeRobot policy object. horizon: T, the chunk length we return (the policy must predict at
        least T steps). camera_keys: LeRobot image keys in the order of our V cameras (short names such as 'front'
        become 'observation.images.front'); default: the policy config's image_features. tasks: task strings by
        task_index, when batches carry no 'task' list. preprocess / postprocess: LeRobot's processor pipelines
        (they normalise inputs and unnormalise actions with the policy's own stats). state_stats / action_stats:
        the shards' normalisation (mean, std), to hand the policy raw state and to bring its raw actions back.
        instruction: the one task string every sample reads (a control group fine-tuned with
        --keep-base-instruction) instead of each window's own."""
        for name in ("predict_action_chunk", "reset"):
            if not callable(getattr(policy, name, None)):
                raise TypeError(f"{type(policy).__name__} has no {name}(): not a LeRobot policy")
        self.policy = policy
        self.horizon = int(horizon)
        self.declared = declared_features(policy)
        declared_cams = list(self.declared["images"])
        if camera_keys is None and not declared_cams:
            raise ValueError("cannot read the policy's image_features: pass camera_keys=")
        self.camera_keys = [_image_key(k) for k in (camera_keys if camera_keys is not None else declared_cams)]
        if declared_cams and sorted(self.camera_keys) != sorted(declared_cams):
            raise FeatureMismatch(f"cameras: ours are {self.camera_keys} (camera_keys), the policy's config "
                                  f"declares {declared_cams} (input_features)")
        declared_da = self.declared["action_dim"]
        if action_dim is None and declared_da is None:
            raise ValueError("cannot read the policy's action shape from config.output_features: pass action_dim=")
        self.action_dim = int(action_dim if action_dim is not None else declared_da)
        if declared_da is not None and declared_da != self.action_dim:
            raise FeatureMismatch(f"action dim: ours is {self.action_dim} (the shards' actions), the policy's "
                                  f"config declares {declared_da} (output_features['action'])")
        self.tasks = list(tasks) if tasks is not None else None
        self.preprocess, self.postprocess = preprocess, postprocess
        self.state_stats, self.action_stats = state_stats, action_stats
        self.instruction = instruction

    def to_lerobot(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Our batch -> LeRobot's observation dict (see the module docstring for the mapping)."""
        self.check_batch(batch)
        state = batch["robot_state"].float()  # (B, Ds)
        if self.state_stats is not None:
            mean, std = self.state_stats
            state = state * std.to(state) + mean.to(state)  # back to raw units
        return self.observation(batch, state)

    def observation(self, batch: dict[str, Any], raw_state: Tensor) -> dict[str, Any]:
        """Cameras as float in [0, 1] under LeRobot's keys, the raw-unit state (B, Ds) and the task strings: shared
        by inference (to_lerobot) and fine-tuning on raw shard batches (bases/finetune.py)."""
        out: dict[str, Any] = {}
        frames = batch.get("vision_inputs")
        for i, key in enumerate(self.camera_keys):
            img = frames[:, i]  # (B, 3, S, S)
            out[key] = img.float() / 255.0 if img.dtype == torch.uint8 else img.float()  # (B, 3, S, S) in [0, 1]
        out[STATE_KEY] = raw_state
        out["task"] = self._tasks(batch, raw_state.shape[0])
        return out

    def check_batch(self, batch: dict[str, Any]) -> None:
        """Our batch against the policy's declared cameras, image size and state dim (FeatureMismatch)."""
        frames = batch.get("vision_inputs")
        n_cams = 0 if frames is None else frames.shape[1]
        if n_cams != len(self.camera_keys):
            raise FeatureMismatch(f"cameras: the batch has {n_cams}, the policy takes {len(self.camera_keys)}: "
                                  f"{self.camera_keys}")
        have = tuple(frames.shape[2:]) if frames is not None else ()  # (3, S, S)
        for key in self.camera_keys:
            want = self.declared["images"].get(key)
            if want is not None and (have[0] != want[0] or (have[1:] != want[1:] and not self.declared["resizes"])):
                hint = f"; prep the shards with --image-size {want[-1]}" if want[-1] == want[-2] else ""
                raise FeatureMismatch(f"image size of {key}: the batch's frames are {_chw(have)}, the policy's "
                                      f"config declares {_chw(want)} (input_features){hint}")
        want_ds, have_ds = self.declared["state_dim"], batch["robot_state"].shape[-1]
        if want_ds is not None and want_ds != have_ds:
            raise FeatureMismatch(f"state dim: the batch's robot_state has {have_ds}, the policy's config declares "
                                  f"{want_ds} (input_features['{STATE_KEY}'])")

    @torch.no_grad()
    def predict_chunk(self, batch: dict[str, Any]) -> Tensor:
        obs = self.to_lerobot(batch)
        if self.preprocess is not None:
            obs = self.preprocess(obs)
        obs = self._fill_history(obs)
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

    def _fill_history(self, obs: dict[str, Any]) -> dict[str, Any]:
        """Fill the observation queues of a policy with history (module docstring) with the current frame."""
        queues = getattr(self.policy, "_queues", None)
        if not isinstance(queues, dict) or not any(k != ACTION_KEY for k in queues):
            return obs
        self.policy.reset()  # fresh queues: this batch's samples are not the previous batch's successors
        queues = self.policy._queues  # reset() builds new ones
        obs = {k: v for k, v in obs.items() if k != ACTION_KEY}  # LeRobot's preprocessor adds action=None
        if IMAGES_KEY in queues:  # the cameras stacked in the policy's own order
            order = list(self.declared["images"]) or self.camera_keys
            obs[IMAGES_KEY] = torch.stack([obs[k] for k in order], dim=-4)  # (B, V, 3, S, S)
        for key, queue in queues.items():
            if key != ACTION_KEY and key in obs:
                queue.extend([obs[key]] * (queue.maxlen or 1))  # a deque of maxlen n_obs_steps
        return obs

    def _tasks(self, batch: dict[str, Any], b: int) -> list[str]:
        if self.instruction is not None:
            tasks = [self.instruction] * b
        elif "task" in batch:
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


def _shape(feature: Any) -> tuple[int, ...] | None:
    shape = getattr(feature, "shape", None)
    return tuple(int(d) for d in shape) if shape else None


def declared_features(policy: Any) -> dict[str, Any]:
    """What the policy's config declares: {"images": {key: (3, H, W) or None}, "state_dim", "action_dim",
    "resizes"}; None (or {}) where it declares nothing (duck typing: any config without these fields works)."""
    config = getattr(policy, "config", None)
    images = getattr(config, "image_features", None) or {}
    state = (getattr(config, "input_features", None) or {}).get(STATE_KEY)
    action = (getattr(config, "output_features", None) or {}).get(ACTION_KEY)
    state_shape, action_shape = _shape(state), _shape(action)
    return {"images": {key: _shape(ft) for key, ft in images.items()},
            "state_dim": state_shape[0] if state_shape else None,
            "action_dim": action_shape[0] if action_shape else None,
            "resizes": any(getattr(config, name, None) is not None for name in RESIZING_FIELDS)}


def _chw(shape: tuple[int, ...]) -> str:
    return f"{shape[0]}x{shape[1]}x{shape[2]} (CxHxW)" if len(shape) == 3 else str(list(shape))


def check_features(policy: Any, meta: dict[str, Any], reference: str, meta_file: Any = "meta.json") -> None:
    """The policy's declared features against the shards' (or a run's) action dim, state dim, cameras and image
    size (the last only where the policy does not resize frames): one line naming both sides."""
    declared = declared_features(policy)
    side = int((meta.get("params") or {}).get("image_size", meta.get("image_size") or 0))
    ours = {"action dim": meta.get("action_dim"), "state dim": meta.get("state_dim"),
            "cameras": sorted(meta.get("cameras") or [])}
    theirs = {"action dim": declared["action_dim"], "state dim": declared["state_dim"],
              "cameras": sorted(declared["images"])}
    for name, have in ours.items():
        want = theirs[name]
        if want not in (None, []) and have is not None and have != want:
            raise FeatureMismatch(f"{name}: the shards have {have}, the policy {reference} declares {want} "
                                  "(its config.json)", file=meta_file, field=name.replace(" ", "_"))
    for key, shape in declared["images"].items():
        if shape and side and not declared["resizes"] and tuple(shape[1:]) != (side, side):
            raise FeatureMismatch(f"image size: the shards have {side}x{side} px, the policy {reference} declares "
                                  f"{key} {shape[1]}x{shape[2]} (its config.json); prep the shards with "
                                  f"--image-size {shape[-1]}", file=meta_file, field="image_size")


def lerobot_base(reference: str, spec: dict[str, Any], field: str = "--base", spec_file: Any = "meta.json",
                 frozen: bool = True) -> LeRobotPolicyBase:
    """The checkpoint as Sigma's frozen base for shards or a run with this spec (meta.json, or a run's policy.json:
    normalization, cameras, dims, horizon, tasks, and text.instruction for a control group that reads one fixed
    instruction): LeRobot's processors work in raw units, so the shards' normalisation is undone before and redone
    after them (LeRobotPolicyBase). frozen=False: to be fine-tuned (load_policy)."""
    policy, pre, post = load_policy(reference, field, frozen=frozen)
    check_features(policy, spec, reference, spec_file)
    norm = spec["normalization"]
    stats = {k: (torch.tensor(norm[k]["mean"]), torch.tensor(norm[k]["std"])) for k in ("robot_state", "action")}
    horizon = int((spec.get("params") or spec)["horizon"])
    return LeRobotPolicyBase(policy, horizon, camera_keys=list(spec.get("cameras") or []),
                             action_dim=int(spec["action_dim"]), tasks=spec.get("tasks"), preprocess=pre,
                             postprocess=post, state_stats=stats["robot_state"], action_stats=stats["action"],
                             instruction=(spec.get("text") or {}).get("instruction"))
