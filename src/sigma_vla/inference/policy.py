"""SigmaPolicy: the frozen base + Sigma (+ the risk-gated adapter) as a controller (paper 3.3, 4.3).

Per control step the robot asks for one action; the policy keeps an action queue over the predicted chunk:
execute the first `n_action_steps` actions, then re-plan. Each re-plan is one Sigma call, so the semantic memory
m_t advances once per plan and is cleared by `reset()` at the start of an episode.

Modes: "base" (the base's chunk only: the untuned control group), "sigma" (base + telepathy residual, TRAF's
composition), "sigma+adapter" (the residual gated by the adapter). `telepathy=False` forces tau = 0.

Units: observations and returned actions are raw robot units; the model and base work in the shards' normalised
units (training/transforms.py), so the policy normalises state in and un-normalises actions out.

Shape legend (data/schema.py): B batch, C chunk, T horizon, Da action dim, Ds state dim, V cameras, S image side.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sigma_vla.inference.adapter import AdapterConfig, adapt
from sigma_vla.models.base_policy import BasePolicy, base_action_dict

MODES = ("base", "sigma", "sigma+adapter")


@dataclass
class PolicyConfig:
    mode: str = "sigma+adapter"
    telepathy: bool = True
    n_action_steps: int = 4  # executed from each chunk before re-planning (our choice; C = 8 by default)
    state_key: str = "observation.state"
    camera_keys: list[str] = field(default_factory=lambda: ["observation.images.front"])
    image_size: int = 128
    adapter: AdapterConfig = field(default_factory=AdapterConfig)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.n_action_steps < 1:
            raise ValueError(f"n_action_steps must be >= 1, got {self.n_action_steps}")


@dataclass
class Plan:
    """One re-plan: the chunk to execute (raw units) and what the adapter decided."""

    actions: np.ndarray  # (C, Da) float32, raw units
    adapter_scale: float
    risk: dict[str, float]
    tau_norm: float
    nonfinite: bool


class SigmaPolicy:
    def __init__(self, model, base: BasePolicy, normalizer, tokenizer, config: PolicyConfig | None = None):
        self.model, self.base, self.norm, self.tokenizer = model, base, normalizer, tokenizer
        self.config = config or PolicyConfig()
        self.chunk_len = model.config.action.chunk if model is not None else base.horizon
        self.queue: deque[np.ndarray] = deque()
        self.last_plan: Plan | None = None

    # ---- episode state ---------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Start of an episode: forget the semantic memory and the queued actions."""
        if self.model is not None:
            self.model.reset_memory()
        self.base.reset()
        self.queue.clear()
        self.last_plan = None

    def select_action(self, observation: dict[str, np.ndarray], instruction: str) -> np.ndarray:
        """The next action (Da,) in raw units; re-plans when the queue is empty."""
        if not self.queue:
            plan = self.plan(observation, instruction)
            self.queue.extend(plan.actions[: self.config.n_action_steps])
        return self.queue.popleft()

    # ---- one plan ----------------------------------------------------------------------------------------------
    def batch(self, observation: dict[str, np.ndarray], instruction: str) -> dict[str, Tensor]:
        """A raw observation -> the model's batch of one (normalised state, stacked cameras, text tokens)."""
        state = torch.as_tensor(np.asarray(observation[self.config.state_key], np.float32))[None]  # (1, Ds)
        frames = [torch.as_tensor(np.asarray(observation[k], np.uint8)).permute(2, 0, 1)
                  for k in self.config.camera_keys]  # V x (3, S, S)
        s = self.config.image_size
        vision = (torch.stack(frames)[None] if frames else torch.zeros(1, 0, 3, s, s, dtype=torch.uint8))
        batch = {"robot_state": self.norm.state(state), "vision_inputs": vision}  # (1, Ds), (1, V, 3, S, S)
        if self.tokenizer is not None:
            batch.update(self.tokenizer([instruction]))  # (1, L) ids and mask
        return batch

    @torch.no_grad()
    def plan(self, observation: dict[str, np.ndarray], instruction: str) -> Plan:
        batch = self.batch(observation, instruction)
        base_chunk = self.base.predict_chunk(batch)  # (1, T, Da) normalised
        if self.config.mode == "base" or self.model is None:
            chunk, scale, risk, tau_norm, bad = base_chunk[:, : self.chunk_len], 0.0, {}, 0.0, False
        else:
            chunk, scale, risk, tau_norm, bad = self._sigma_chunk(batch, base_chunk)
        actions = self.norm.unaction(chunk)[0].numpy().astype(np.float32)  # (C, Da) raw
        self.last_plan = Plan(actions, scale, risk, tau_norm, bad)
        return self.last_plan

    def _sigma_chunk(self, batch: dict[str, Tensor], base_chunk: Tensor):
        out = self.model.sample_actions(batch, telepathy=self.config.telepathy)
        base = base_action_dict(base_chunk, self.chunk_len)
        bv, bc, bt = base["base_action_vector"], base["base_action_chunk"], base["base_action_trajectory"]
        pv, pc, pt = bv + out.action_vector, bc + out.action_chunk, bt + out.action_trajectory  # TRAF composition
        tau = out.telepathy_factors  # (1, Dt)
        tau_norm = float(tau.norm())
        if self.config.mode == "sigma":
            ok = bool(torch.isfinite(pc).all())
            return (pc if ok else bc), 1.0, {}, tau_norm, not ok
        res = adapt(pv, pc, pt, bv, bc, bt, tau, out.action_conditions, self.config.adapter)
        risk = {k: float(v[0]) for k, v in res.terms.items()}
        return res.action_chunk, float(res.scale[0]), risk, tau_norm, bool(res.nonfinite[0])

    # ---- the serving interface (sigma_vla.serving.protocol.ServedPolicy) ---------------------------------------
    def infer(self, obs: dict[str, np.ndarray], instruction: str) -> dict[str, Any]:
        plan = self.plan(obs, instruction)
        return {"actions": plan.actions, "adapter_scale": plan.adapter_scale, "risk": plan.risk,
                "tau_norm": plan.tau_norm, "nonfinite": plan.nonfinite}
