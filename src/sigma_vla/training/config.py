"""Typed training configs: TRAF (4.2.1), TSAC (4.2.2) and the trainer (4.2), with JSON round trips.

Defaults are the paper's where it gives them (rho 0.3, Table 1's curriculum); the rest are our choices, commented.
A run directory stores its `train_config.json`, so a resumed run checks it continues the same experiment. A bad
value is a ConfigError naming the field (one error type for every config, models' and training's).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from sigma_vla.models.config import ConfigError, config_from_dict
from sigma_vla.training.curriculum import PAPER_RAMP_STEPS, CurriculumConfig

MIXED_PRECISION = ("no", "bf16", "fp16")
TRAINABLE = ("lora", "full")


@dataclass(frozen=True)
class TrafConfig:
    """Paper 4.2.1. alphas weigh vector, chunk, trajectory MSE; rho is the hard fraction; lambda_hard its weight."""

    alphas: tuple[float, float, float] = (1.0, 1.0, 1.0)  # the paper gives no values: equal weights
    rho: float = 0.3  # paper (Table 1: hard_ratio 0.300)
    lambda_hard: float = 1.0  # our choice; Table 1's numbers are consistent with 1 (its L_act = L_act + L_act_hard)
    flow_weight: float = 1.0  # our addition: path C's flow-matching loss (the DiT's generative objective)
    # Our addition, None = the paper's plain MSE: weigh each window by c / (r + c), r the size of the correction it
    # asks of Sigma (losses.traf_loss), so adding errors where the base is right costs as much as missing a large
    # correction. The demo sets it (docs/closed_loop.md, "Paired twins").
    residual_floor: float | None = None

    def __post_init__(self) -> None:
        if len(self.alphas) != 3 or min(self.alphas) < 0:
            raise ConfigError(f"traf alphas must be three weights >= 0, got {self.alphas}", field="traf.alphas")
        if not 0.0 <= self.rho <= 1.0:
            raise ConfigError(f"traf rho must be in [0, 1], got {self.rho}", field="traf.rho")
        for name in ("lambda_hard", "flow_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"traf {name} must be >= 0, got {getattr(self, name)}", field=f"traf.{name}")
        if self.residual_floor is not None and not 0 < self.residual_floor < float("inf"):
            raise ConfigError(f"traf residual_floor must be > 0 or None, got {self.residual_floor}",
                              field="traf.residual_floor")


@dataclass(frozen=True)
class TsacConfig:
    """Paper 4.2.2. The paper names these constants without values; ours give L_tau about 0.2 at initialisation
    (tau near 0: lambda_collapse * tau_0^2 + eta_var * 1), the order of Table 1's 0.172 at step 0."""

    beta_mi: float = 0.1
    temperature: float = 0.1  # InfoNCE temperature (CLIP-like)
    tau_0: float = 1.0  # minimum expected ||tau||
    lambda_collapse: float = 0.1
    eta_var: float = 0.1
    memory: Literal["episode", "none"] = "episode"  # m_prev source in training (tasks.py); "none": m_prev = 0
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)

    def __post_init__(self) -> None:
        for name in ("beta_mi", "tau_0", "lambda_collapse", "eta_var"):
            if getattr(self, name) < 0:
                raise ConfigError(f"tsac {name} must be >= 0, got {getattr(self, name)}", field=f"tsac.{name}")
        if self.temperature <= 0:
            raise ConfigError(f"tsac temperature must be > 0, got {self.temperature}", field="tsac.temperature")
        if self.memory not in ("episode", "none"):
            raise ConfigError(f"tsac memory must be 'episode' or 'none', got {self.memory!r}", field="tsac.memory")


@dataclass(frozen=True)
class TrainConfig:
    """The trainer (paper 4.2): optimisation, Accelerate options, checkpoints, logging and the two loss configs.

    batch_size is per process and micro-batch (Accelerate's convention): one optimizer step sees
    batch_size * grad_accum * num_processes samples."""

    steps: int = 100
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 10
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = 0.1
    # The telepathy residual head (g and tau_high: SigmaTask's "residual" group) learns at this multiple of lr; the
    # paper has one rate (docs/closed_loop.md, "A faster residual head").
    residual_lr_scale: float = 1.0
    grad_clip: float = 1.0
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    trainable: Literal["lora", "full"] = "lora"  # "full" unfreezes the backbone too (benchmarks only)
    # Recompute the backbone's activations in backward instead of keeping them: less memory, about one more forward
    # of time; the same loss and gradients (docs/gpu.md, "A 24 GB card"). Sigma's backbone only.
    gradient_checkpointing: bool = False
    seed: int = 0
    checkpoint_every: int = 50
    keep_last: int = 2
    val_every: int = 50
    val_batches: int = 4
    log_every: int = 1
    max_nonfinite: int = 3  # this many non-finite steps in a row stop the run
    find_unused_parameters: bool = False
    # TSAC ramp as a fraction of `steps` (Table 1: 82 of ~130 steps, 0.63); None: tsac.curriculum.ramp_steps
    ramp_fraction: float | None = PAPER_RAMP_STEPS / 130
    # The step count the LR schedule and the TSAC ramp are laid over; None: `steps`. Set only when a resumed run
    # is extended (--extend-steps): the schedule keeps its shape and the extra steps run at its end (resume.py).
    schedule_steps: int | None = None
    # A paraphrase table (JSON lines {"task", "text"}): training samples read their task in one of its wordings
    # (processing/paraphrase.py); None reads the recorded tasks only.
    paraphrases: str | None = None
    traf: TrafConfig = field(default_factory=TrafConfig)
    tsac: TsacConfig = field(default_factory=TsacConfig)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "grad_accum", "log_every", "max_nonfinite"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train {name} must be >= 1, got {getattr(self, name)}", field=name)
        for name in ("warmup_steps", "checkpoint_every", "val_every", "val_batches", "keep_last", "weight_decay"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train {name} must be >= 0, got {getattr(self, name)}", field=name)
        for name in ("lr", "residual_lr_scale"):
            if not 0 < getattr(self, name) < float("inf"):  # NaN fails this too
                raise ConfigError(f"train {name} must be > 0 and finite, got {getattr(self, name)}", field=name)
        if self.seed < 0:  # numpy's generators refuse negative seeds, and a seed is a count of runs anyway
            raise ConfigError(f"train seed must be >= 0, got {self.seed}", field="seed")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ConfigError(f"mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}",
                              field="mixed_precision")
        if self.trainable not in TRAINABLE:
            raise ConfigError(f"trainable must be one of {TRAINABLE}, got {self.trainable!r}", field="trainable")
        if self.schedule_steps is not None and self.schedule_steps < 1:
            raise ConfigError(f"train schedule_steps must be >= 1 or None, got {self.schedule_steps}",
                              field="schedule_steps")
        if self.ramp_fraction is not None and not 0.0 <= self.ramp_fraction <= 1.0:
            raise ConfigError(f"ramp_fraction must be in [0, 1] or None, got {self.ramp_fraction}",
                              field="ramp_fraction")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ConfigError(f"lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}",
                              field="lr_schedule")

    @property
    def planned_steps(self) -> int:
        """The step count the schedules are laid over (`steps` unless the run was extended)."""
        return self.schedule_steps or self.steps

    def curriculum(self) -> CurriculumConfig:
        """The TSAC curriculum with its ramp resolved against the planned steps."""
        cur = self.tsac.curriculum
        if self.ramp_fraction is None:
            return cur
        return dataclasses.replace(cur, ramp_steps=max(1, round(self.planned_steps * self.ramp_fraction)))

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated again), as SigmaConfig.replace."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of to_dict (JSON turns tuples into lists; nested configs come back typed)."""
        return config_from_dict(cls, data)
