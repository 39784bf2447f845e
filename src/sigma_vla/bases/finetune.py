"""A LeRobot policy fine-tuned as the control group (`sigma train SHARDS --finetune-base lerobot:PATH_OR_ID`):
our shard batches as the training batches LeRobot's own dataset would give it, and the fine-tuned policy written
back as a LeRobot checkpoint (docs/architecture.md, "Honest evaluation" and "Native LeRobot formats").

The batch, before the policy's own preprocessor (which normalises with the checkpoint's statistics and tokenises):
  vision_inputs (B, V, 3, S, S) uint8   -> observation.images.<camera> float in [0, 1]  (LeRobotPolicyBase.observation)
  robot_state (B, Ds), raw units        -> observation.state
  task_index + meta.json tasks          -> task: list[str] (or the one fixed instruction)
  gt_action_trajectory (B, T, Da), raw  -> action (B, H, Da) and action_is_pad (B, H)
Shard batches are in raw units already (the trainer hands the collated shard samples over untransformed), so
nothing is normalised and undone on the way.

Time offsets are the policy config's own `action_delta_indices` / `observation_delta_indices` (ACT: actions
0..chunk_size-1; Diffusion: observations -(n_obs_steps-1)..0, actions from -(n_obs_steps-1) over its horizon).
A window holds the T actions from its first frame on; an offset outside them, or inside the window's `pad_steps`
(past the episode's end, `prep --pad-end`), takes the nearest action of the window and is marked in
action_is_pad, as LeRobot's dataset clamps to the episode and marks the padding. Past observations are the window's
frame repeated, as LeRobot's dataset gives them at an episode's first frame and as LeRobotPolicyBase fills the
queues at inference.

lerobot is never imported here: the policy and its processors are duck-typed objects loaded by interop/lerobot.py.
Shape legend (docs/architecture.md): B batch, T horizon, H the policy's action steps, Da action dim, Ds state dim.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sigma_vla.bases.lerobot import ACTION_KEY, LeRobotPolicyBase
from sigma_vla.errors import SigmaError, first_line

PAD_KEY = "action_is_pad"  # LeRobot's name for the padding mask of the action targets
WEIGHTS_FILE, CONFIG_FILE = "model.safetensors", "config.json"  # what a policy's save_pretrained writes


def training_batch(base: LeRobotPolicyBase, batch: dict[str, Tensor]) -> dict[str, Any]:
    """A raw shard batch -> LeRobot's training batch for base.policy, before its preprocessor (module docstring)."""
    base.check_batch(batch)
    config = base.policy.config
    out = with_history(base.observation(batch, batch["robot_state"].float()),
                       getattr(config, "observation_delta_indices", None))
    actions, pad = action_targets(batch["gt_action_trajectory"].float(), batch.get("pad_steps"),
                                  list(config.action_delta_indices))
    out[ACTION_KEY], out[PAD_KEY] = actions, pad
    return out


def action_targets(trajectory: Tensor, pad_steps: Tensor | None, offsets: list[int]) -> tuple[Tensor, Tensor]:
    """(B, T, Da) window actions -> (B, H, Da) targets at the policy's offsets and the (B, H) bool padding mask."""
    b, t, _ = trajectory.shape
    steps = torch.tensor(offsets, device=trajectory.device)  # (H,)
    actions = trajectory[:, steps.clamp(0, t - 1)]  # (B, H, Da): the nearest action of the window
    real = torch.full((b, 1), t, device=trajectory.device)  # (B, 1) actions inside the episode
    if pad_steps is not None:
        real = real - pad_steps.view(b, 1).to(real)
    return actions, (steps < 0) | (steps >= real)  # (B, H)


def with_history(obs: dict[str, Any], offsets: list[int] | None) -> dict[str, Any]:
    """Observations stacked over the policy's observation offsets (B, n, ...), each the window's own frame."""
    if not offsets:
        return obs
    n = len(offsets)
    return {k: (v.unsqueeze(1).expand(-1, n, *v.shape[1:]).contiguous()
                if k.startswith("observation.") and isinstance(v, Tensor) else v) for k, v in obs.items()}


def save_checkpoint(policy: Any, preprocess: Any, postprocess: Any, directory: Path) -> None:
    """The policy's save_pretrained (config.json + model.safetensors) and its processor pipelines, into one
    directory: what `lerobot:DIR` loads, and what LeRobot's own tools load."""
    for part in (policy, preprocess, postprocess):
        if part is not None:
            part.save_pretrained(directory)


def load_weights(policy: Any, directory: Path) -> None:
    """The weights of a checkpoint directory (save_checkpoint) into this policy, strictly: a resumed fine-tuning
    run continues the same policy type with the same parameter names and shapes. safetensors only, no pickle."""
    from safetensors.torch import load_model

    directory = Path(directory)
    try:
        kind = json.loads((directory / CONFIG_FILE).read_text()).get("type")
    except (OSError, ValueError, AttributeError) as err:
        raise SigmaError(f"unreadable ({first_line(err, with_type=True)})", file=directory / CONFIG_FILE) from None
    want = getattr(policy, "name", None)
    if want and kind != want:
        raise SigmaError(f"holds a LeRobot {kind!r} policy, this run fine-tunes a {want!r}",
                         file=directory / CONFIG_FILE, field="type")
    try:
        load_model(policy, str(directory / WEIGHTS_FILE), strict=True)
    except (OSError, RuntimeError, ValueError) as err:
        raise SigmaError(f"does not fit this policy: {first_line(err, with_type=True)}",
                         file=directory / WEIGHTS_FILE) from None
