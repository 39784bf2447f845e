"""TSAC curriculum (paper 4.2.2): loss weights that rise linearly from a start to a target value.

Early steps are then mostly action regression; semantic, intent and tau alignment strengthen later. Table 1's weight
columns are reproduced exactly by a ramp of 82 steps (w_sem at step 10: 0.1 + 0.9 * 10/82 = 0.210; step 80: 0.978;
1.000 from step 82 on), which is `PAPER_RAMP_STEPS` (Table 1 shows every weight at its target by step 90).
"""

from __future__ import annotations

from dataclasses import dataclass

from sigma_vla.models.config import ConfigError

PAPER_RAMP_STEPS = 82


@dataclass(frozen=True)
class LinearRamp:
    """w(t) = start + (target - start) * min(t / steps, 1); `steps` = 0 means the target from step 0."""

    start: float
    target: float
    steps: int

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"ramp steps must be >= 0, got {self.steps}")

    def __call__(self, step: int) -> float:
        if self.steps == 0:
            return float(self.target)
        frac = min(max(step, 0) / self.steps, 1.0)
        return float(self.start + (self.target - self.start) * frac)


@dataclass(frozen=True)
class CurriculumConfig:
    """Start and target weights of Table 1 (w_sem 0.1 -> 1.0, w_int 0.1 -> 0.8, w_tau 0 -> 0.03) and the ramp."""

    w_sem: tuple[float, float] = (0.1, 1.0)
    w_int: tuple[float, float] = (0.1, 0.8)
    w_tau: tuple[float, float] = (0.0, 0.03)
    ramp_steps: int = PAPER_RAMP_STEPS

    def __post_init__(self) -> None:
        if self.ramp_steps < 0:
            raise ConfigError(f"curriculum ramp_steps must be >= 0, got {self.ramp_steps}",
                              field="tsac.curriculum.ramp_steps")
        for name in ("w_sem", "w_int", "w_tau"):
            pair = getattr(self, name)
            if len(pair) != 2 or min(pair) < 0:
                raise ConfigError(f"curriculum {name} must be (start, target) with both >= 0, got {pair}",
                                  field=f"tsac.curriculum.{name}")


def curriculum_weights(config: CurriculumConfig, step: int) -> dict[str, float]:
    """The three TSAC weights at optimizer step `step`: {"w_sem", "w_int", "w_tau"}."""
    return {
        name: LinearRamp(*getattr(config, name), config.ramp_steps)(step) for name in ("w_sem", "w_int", "w_tau")
    }
