"""What `--resume` resumes (docs/reliability.md, "Resume"): the newest checkpoint that verifies, and the settings
it was trained with.

A resumed run must be the run it continues: a setting that changes what is trained (steps, learning rate, batch,
seed, precision, the loss configs) is refused in one line naming it, instead of silently mixing two runs. The one
deliberate change is `--extend-steps`: more steps than planned. The LR schedule and the TSAC curriculum then keep
the shape they had (`schedule_steps` stays the original step count): the cosine has reached its floor
(min_lr_ratio x lr) at the original end, so the extra steps train at that floor with the final curriculum
weights. An extended run therefore differs from a run planned that long from the start.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from sigma_vla.errors import SigmaError
from sigma_vla.training import checkpoint as ckpt
from sigma_vla.training.config import TrainConfig
from sigma_vla.training.distributed import process_state

# Settings that do not change what is trained: free to differ on resume.
FREE = ("checkpoint_every", "keep_last", "val_every", "val_batches", "log_every", "max_nonfinite",
        "find_unused_parameters", "schedule_steps", "gradient_checkpointing")
# How the CLI spells a setting (the error names what the user typed).
OPTION = {"steps": "--steps", "lr": "--lr", "batch_size": "--batch-size", "grad_accum": "--grad-accum",
          "mixed_precision": "--mixed-precision", "seed": "--seed", "residual_lr_scale": "--residual-lr-scale"}


def _say(message: str) -> None:
    if process_state().is_main_process:
        print(message, file=sys.stderr, flush=True)


def choose_checkpoint(run_dir: Path) -> Path | None:
    """The newest verified checkpoint; damaged newer ones are set aside (main process) and reported."""
    state = process_state()
    latest, rejected = ckpt.resume_point(run_dir)  # every rank verifies (read-only) before anything moves
    state.wait_for_everyone()
    for path, problem in rejected:
        if state.is_main_process:
            moved = ckpt.set_aside(path)
            _say(f"--resume: {path} is damaged ({problem}); set aside as {moved.name}")
    state.wait_for_everyone()
    if latest is None:
        _say(f"--resume: no verified checkpoint in {ckpt.checkpoints_dir(run_dir)}; starting from step 0")
    elif rejected:
        _say(f"--resume: continuing from the newest verified checkpoint, {latest.name}")
    return latest


def saved_config(checkpoint: Path) -> TrainConfig:
    """The settings a checkpoint was trained with (its trainer_state.json, covered by the manifest's checksum)."""
    path = checkpoint / "trainer_state.json"
    try:
        return TrainConfig.from_dict(json.loads(path.read_text())["config"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SigmaError(f"cannot read the run's settings: {err}", file=path, field="config") from None


def reconcile(saved: TrainConfig, asked: TrainConfig, extend_steps: bool, source: Path) -> TrainConfig:
    """The config to resume with: `asked`, once every setting that matters equals the run's (steps may grow with
    extend_steps). Raises SigmaError naming the first setting that differs."""
    for field in dataclasses.fields(TrainConfig):
        name = field.name
        before, now = getattr(saved, name), getattr(asked, name)
        if name in FREE or before == now:
            continue
        if name == "steps" and extend_steps:
            if now < before:
                raise SigmaError(f"--extend-steps asks for {now} steps, fewer than the run's {before} (to end early, "
                                 "use --stop-after)", file=source, field="--steps")
            continue
        hint = " (pass --extend-steps to train longer)" if name == "steps" else ""
        raise SigmaError(f"cannot resume with {_show(now)}: this run was trained with {_show(before)}{hint}; resume "
                         "with the run's value or start a new --out", file=source, field=OPTION.get(name, name))
    schedule = saved.schedule_steps or saved.steps
    return dataclasses.replace(asked, schedule_steps=schedule if asked.steps != schedule else None)


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def run_settings(run_dir: Path) -> TrainConfig | None:
    """RUN/train_config.json, the settings a resumed `sigma train` starts from (options given override them)."""
    path = Path(run_dir) / "train_config.json"
    if not path.is_file():
        return None
    try:
        return TrainConfig.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as err:
        raise SigmaError(f"unreadable run settings ({err})", file=path) from None
