"""SigmaPolicy: the frozen base + Sigma (+ the risk-gated adapter) as a controller (paper 3.3, 4.3).

Per control step the robot asks for one action; the policy keeps an action queue over the predicted chunk:
execute the first `n_action_steps` actions, then re-plan. Each re-plan is one Sigma call, so the semantic memory
m_t advances once per plan and is cleared by `reset()` at the start of an episode.

The policy owns its episode state (semantic memory, queue) and never the weights: a server builds one
SigmaPolicy per connection over the same model and base, and two robots never share a memory.

Modes: "base" (the base's chunk only: the untuned control group), "sigma" (base + telepathy residual, TRAF's
composition), "sigma+adapter" (the residual gated by the adapter). `telepathy=False` forces tau = 0.

Units: observations and returned actions are raw robot units; the model and base work in the shards' normalised
units (processing/transforms.py), so the policy normalises state in and un-normalises actions out.

Shape legend (docs/architecture.md): B batch, C chunk, T horizon, Da action dim, Ds state dim, V cameras, S image side.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sigma_vla_client.ensemble import TemporalEnsemble
from torch import Tensor

from sigma_vla.bases.policy import BasePolicy
from sigma_vla.bases.resolve import load_base_run, load_run_base
from sigma_vla.errors import ConfigError, SigmaError
from sigma_vla.inference.adapter import AdapterConfig, adapt, risk_terms
from sigma_vla.layout import ADAPTER_FILE, MODEL_DIR, POLICY_FILE
from sigma_vla.models import SigmaModel
from sigma_vla.outdir import atomic_write_text, read_json
from sigma_vla.processing.action_triple import BASE_ACTION, ActionTriple
from sigma_vla.processing.recipe import base_text, live_tokenizer, sigma_text
from sigma_vla.processing.transforms import Normalizer
from sigma_vla.runs.spec import read_run_info, read_run_spec, read_sigma_run, run_kind

MODES = ("base", "sigma", "sigma+adapter")
# What `sigma rollout --policy` accepts: the modes, and Sigma with the telepathy switch off (tau = 0 in closed loop,
# the paper's own ablation: mode "sigma" with PolicyConfig.telepathy False).
TAU0 = "sigma-tau0"
POLICY_CHOICES = (*MODES, TAU0)


@dataclass
class PolicyConfig:
    mode: str = "sigma+adapter"
    telepathy: bool = True
    n_action_steps: int = 4  # executed from each chunk before re-planning (our choice; C = 8 by default)
    # ACT's temporal ensembling: re-plan every step and execute the weighted mean of every queued chunk's action for
    # this step, weights exp(-k i) with i = 0 the oldest. 0 = off (execute n_action_steps of each chunk).
    temporal_ensemble: float = 0.0
    state_key: str = "observation.state"
    camera_keys: list[str] = field(default_factory=lambda: ["observation.images.front"])
    image_size: int = 128
    adapter: AdapterConfig = field(default_factory=AdapterConfig)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {self.mode!r}", field="mode")
        if self.n_action_steps < 1:
            raise ConfigError(f"n_action_steps must be >= 1, got {self.n_action_steps}", field="n_action_steps")
        if self.temporal_ensemble < 0:
            raise ConfigError(f"temporal_ensemble must be >= 0, got {self.temporal_ensemble}",
                              field="temporal_ensemble")


@dataclass
class Plan:
    """One re-plan: the chunk to execute (raw units) and what the adapter decided."""

    actions: np.ndarray  # (C, Da) float32, raw units
    adapter_scale: float
    risk: dict[str, float]
    tau_norm: float
    nonfinite: bool
    # what the policy did beyond the plain plan: "memory_kept" (a non-finite step left the episode's semantic
    # memory as it was before it), "clamped" (actions beyond the trained range were clamped to it)
    flags: list[str] = field(default_factory=list)


class SigmaPolicy:
    def __init__(self, model, base: BasePolicy, normalizer, tokenizer, config: PolicyConfig | None = None,
                 info: dict | None = None):
        self.model, self.base, self.norm, self.tokenizer = model, base, normalizer, tokenizer
        self.config = config or PolicyConfig()
        self.info = info or {}  # fps, state_dim, chunk, ... for metadata()
        # A plan is the chunk C of the run's policy.json whatever the policy, so the same base executes the same
        # plans alone and as a Sigma run's base mode (its own horizon T only when nothing says C).
        self.chunk_len = model.config.chunk if model is not None else int(self.info.get("chunk", base.horizon))
        self.queue: deque[np.ndarray] = deque()
        self.ensemble = TemporalEnsemble()  # used when config.temporal_ensemble > 0 (its k is set per call)
        self.memory: Tensor | None = None  # m_{t-1}, this policy's own (paper 3.2)
        self.last_plan: Plan | None = None

    # ---- episode state ---------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Start of an episode: forget the semantic memory and the queued actions."""
        self.memory = None
        self.base.reset()
        self.queue.clear()
        self.ensemble.reset()
        self.last_plan = None

    def select_action(self, observation: dict[str, np.ndarray], instruction: str) -> np.ndarray:
        """The next action (Da,) in raw units; re-plans when the queue is empty (every step when ensembling)."""
        if self.config.temporal_ensemble > 0:
            self.ensemble.k = self.config.temporal_ensemble
            return self.ensemble(self.plan(observation, instruction).actions)
        if not self.queue:
            plan = self.plan(observation, instruction)
            self.queue.extend(plan.actions[: self.config.n_action_steps])
        return self.queue.popleft()

    # ---- one plan ----------------------------------------------------------------------------------------------
    def batch(self, observation: dict[str, np.ndarray], instruction: str) -> dict[str, Tensor]:
        """A raw observation -> the model's batch of one (normalised state, stacked cameras, text tokens)."""
        state = torch.as_tensor(np.asarray(observation[self.config.state_key], np.float32))[None]  # (1, Ds)
        if state.shape[-1] != len(self.norm.state_mean):  # e.g. a run recorded before the sim's state grew
            raise SigmaError(f"the policy was trained on {len(self.norm.state_mean)} state values, the observation "
                             f"has {state.shape[-1]} (re-record and retrain for this robot's state)",
                             field=self.config.state_key)
        frames = [torch.as_tensor(np.asarray(observation[k], np.uint8)).permute(2, 0, 1)
                  for k in self.config.camera_keys]  # V x (3, S, S)
        s = self.config.image_size
        vision = (torch.stack(frames)[None] if frames else torch.zeros(1, 0, 3, s, s, dtype=torch.uint8))
        batch = {"robot_state": self.norm.state(state), "vision_inputs": vision,  # (1, Ds), (1, V, 3, S, S)
                 "task": [instruction]}  # a LeRobot base tokenizes the words itself (bases/lerobot.py)
        if self.tokenizer is not None:
            batch.update(self.tokenizer([instruction]))  # (1, L) ids and mask
        return batch

    @torch.no_grad()
    def plan(self, observation: dict[str, np.ndarray], instruction: str) -> Plan:
        batch = self.batch(observation, instruction)
        base_chunk = self.base.predict_chunk(batch)  # (1, T, Da) normalised
        flags: list[str] = []
        if self.config.mode == "base" or self.model is None:
            chunk, scale, risk, tau_norm, bad = base_chunk[:, : self.chunk_len], 0.0, {}, 0.0, False
        else:
            chunk, scale, risk, tau_norm, bad = self._sigma_chunk(batch, base_chunk, flags)
        raw = self.norm.unaction(chunk)[0]  # (C, Da) raw units
        safe = self.norm.clamp_action(raw)
        if not torch.equal(safe, raw):
            flags.append("clamped")
        self.last_plan = Plan(safe.numpy().astype(np.float32), scale, risk, tau_norm, bad, flags)
        return self.last_plan

    def _sigma_chunk(self, batch: dict[str, Tensor], base_chunk: Tensor, flags: list[str]):
        # Mode "sigma" executes path B's chunk only, so path C's sampler is skipped (the adapter's risk reads all
        # three time scales and keeps it).
        out = self.model(batch, prev_memory=self.memory, telepathy=self.config.telepathy,
                         trajectory=self.config.mode != "sigma")  # eval, no grad
        if bool(torch.isfinite(out.semantic_memory).all()) and bool(torch.isfinite(out.action_chunk).all()):
            self.memory = out.semantic_memory
        else:  # a non-finite step never enters the episode's state: m_t stays what it was before it
            flags.append("memory_kept")
        base = ActionTriple.from_chunk(base_chunk, self.chunk_len)
        pred = base.plus(out.actions())  # TRAF composition: a = a_base + delta_a
        tau = out.telepathy_factors  # (1, Dt)
        tau_norm = float(tau.norm())
        if self.config.mode == "sigma":
            ok = bool(torch.isfinite(pred.chunk).all())
            return (pred.chunk if ok else base.chunk), 1.0, {}, tau_norm, not ok
        res = adapt(pred, base, tau, out.action_conditions, self.config.adapter)
        risk = {k: float(v[0]) for k, v in res.terms.items()}
        return res.actions.chunk, float(res.scale[0]), risk, tau_norm, bool(res.nonfinite[0])

    # ---- the serving interface (sigma_vla.serving.protocol.ServedPolicy) ---------------------------------------
    def metadata(self) -> dict[str, Any]:
        s, ds = self.config.image_size, int(self.info.get("state_dim", len(self.norm.state_mean)))
        inputs = {self.config.state_key: {"dtype": "float32", "shape": [ds]}}
        inputs.update({k: {"dtype": "uint8", "shape": [s, s, 3]} for k in self.config.camera_keys})
        return {"action_dim": int(len(self.norm.action_mean)), "horizon": int(self.base.horizon),
                "chunk": int(self.chunk_len), "fps": float(self.info.get("fps", 10.0)),
                "cameras": list(self.config.camera_keys), "image_size": s, "state_dim": ds, "inputs": inputs,
                "mode": self.config.mode, "telepathy": self.config.telepathy}

    def infer(self, obs: dict[str, np.ndarray], instruction: str) -> dict[str, Any]:
        plan = self.plan(obs, instruction)
        return {"actions": plan.actions, "adapter_scale": plan.adapter_scale, "risk": plan.risk,
                "tau_norm": plan.tau_norm, "nonfinite": plan.nonfinite, "flags": list(plan.flags)}


# ---- loading a policy from a run directory -----------------------------------------------------------------------

def load_adapter_config(run) -> AdapterConfig:
    """RUN/adapter.json (written by `calibrate_adapter`), else the defaults."""
    path = Path(run) / ADAPTER_FILE
    if not path.exists():
        return AdapterConfig()
    data, known = read_json(path), set(AdapterConfig.__dataclass_fields__)
    if not isinstance(data, dict) or set(data) - known:
        extra = f", got unknown {sorted(set(data) - known)}" if isinstance(data, dict) else ""
        raise SigmaError(f"expected an object of {sorted(known)}{extra}", file=path)
    for key, value in data.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise SigmaError(f"must be a finite number, got {value!r:.40}", file=path, field=key)
    try:
        return AdapterConfig(**data)
    except ConfigError as err:
        raise SigmaError(err.message, file=path, field=err.field) from None


@torch.no_grad()
def calibrate_adapter(run, model, data: dict[str, Tensor], transform, batch_size: int = 64,
                      limit: int = 1024) -> AdapterConfig:
    """Fit the adapter's notion of "normal" to the trained model on training windows (paper 4.3 leaves the ranges
    open): tau_max = 2 x the 99th percentile of ||tau||, ratio_max = 1.5 x the 95th percentile of the residual
    ratio ||delta|| / ||base||. Beyond those, a residual or tau is unlike anything seen in training and the gate
    closes. Written to RUN/adapter.json so evaluation, rollouts and the server gate alike."""
    n = min(limit, len(data["split"]))
    taus, ratios = [], []
    for start in range(0, n, batch_size):
        batch = transform({k: v[start:min(start + batch_size, n)] for k, v in data.items()})
        out = model(batch)
        stored = ActionTriple.from_batch(batch, BASE_ACTION).trajectory  # (B, T, Da)
        base = ActionTriple.from_chunk(stored, out.action_chunk.shape[1])
        terms = risk_terms(base.plus(out.actions()), base, out.telepathy_factors, out.action_conditions,
                           AdapterConfig())
        taus.append(terms["tau_norm"])
        ratios.append(terms["ratio"])
    tau, ratio = torch.cat(taus), torch.cat(ratios)
    cfg = replace(AdapterConfig(), tau_max=float(2 * torch.quantile(tau, 0.99).clamp_min(1e-3)),
                  ratio_max=float(1.5 * torch.quantile(ratio, 0.95).clamp_min(1e-3)))
    atomic_write_text(Path(run) / ADAPTER_FILE, json.dumps(asdict(cfg), indent=1))
    return cfg


def load_run_model(run):
    """The trained Sigma of a run directory (RUN/model), frozen, in eval mode."""
    model_dir = Path(run) / MODEL_DIR
    if not (model_dir / "config.json").is_file():
        raise SigmaError("no trained model (model/config.json); did `sigma train` finish?", file=run)
    if not model_dir.resolve().is_relative_to(Path(run).resolve()):
        raise SigmaError("model/ leads outside the run directory; refusing to read it", file=model_dir)
    model = SigmaModel.from_pretrained(model_dir)
    model.requires_grad_(False)
    return model.eval()


def load_sigma_policy(run, mode: str = "sigma+adapter", telepathy: bool = True,
                      n_action_steps: int = 4) -> SigmaPolicy:
    """Base + Sigma + adapter from a run directory; the base is the one whose actions the run trained on."""
    _, spec = read_sigma_run(Path(run))
    base = load_run_base(Path(run), spec)
    model = load_run_model(Path(run))
    if len(spec["cameras"]) != model.config.vision.num_cameras:
        raise SigmaError(f"names {len(spec['cameras'])} camera(s), the model was trained on "
                         f"{model.config.vision.num_cameras}", file=Path(run) / POLICY_FILE, field="cameras")
    config, info = _policy_setup(spec, mode=mode, telepathy=telepathy, n_action_steps=n_action_steps,
                                 adapter=load_adapter_config(run))
    norm = Normalizer.from_dict(spec["normalization"], Path(run) / POLICY_FILE)
    model.backbone.merge_lora()  # a policy only infers: one matmul per projection (Backbone.merge_lora)
    return SigmaPolicy(model, base, norm, live_tokenizer(sigma_text(model.config)), config, info)


def _policy_setup(spec: dict, **options: Any) -> tuple[PolicyConfig, dict]:
    """The PolicyConfig (cameras and image side from the run's policy spec, plus `options`) and the metadata info."""
    config = PolicyConfig(camera_keys=list(spec["cameras"]), image_size=int(spec["image_size"]), **options)
    return config, {"fps": float(spec["fps"]), "state_dim": int(spec["state_dim"]), "chunk": int(spec["chunk"])}


def load_base_only_policy(directory, n_action_steps: int = 4) -> SigmaPolicy:
    """A base on its own as a controller (mode "base"): a `sigma train-base` directory (the untuned base) or a
    `sigma train --finetune-base` run (the control group, which reads the instruction)."""
    directory = Path(directory)
    info, file = read_run_info(directory)
    spec = read_run_spec(directory, info, file)
    base = load_base_run(directory, spec)
    config, info = _policy_setup(spec, mode="base", n_action_steps=n_action_steps)
    norm = Normalizer.from_dict(spec["normalization"], directory / POLICY_FILE)
    return SigmaPolicy(None, base, norm, live_tokenizer(base_text(base)), config, info)


def load_policy(directory, mode: str = "sigma+adapter", n_action_steps: int = 4) -> SigmaPolicy:
    """Any policy `sigma rollout` can run: a Sigma run in one of POLICY_CHOICES, or a base on its own ("base")."""
    if run_kind(directory) == "sigma":
        if mode == TAU0:
            return load_sigma_policy(directory, mode="sigma", telepathy=False, n_action_steps=n_action_steps)
        return load_sigma_policy(directory, mode=mode, n_action_steps=n_action_steps)
    if mode != "base":
        raise SigmaError(f"{directory} holds a base policy, which runs only as --policy base", field="--policy")
    return load_base_only_policy(directory, n_action_steps)


def load_sigma_policy_factory(run, mode: str = "sigma+adapter"):
    """For `sigma serve`: load the weights once; each call makes a policy with its own episode state."""
    shared = load_sigma_policy(run, mode=mode)

    def factory() -> SigmaPolicy:
        return SigmaPolicy(shared.model, shared.base, shared.norm, shared.tokenizer, replace(shared.config),
                           shared.info)

    return factory
