"""`sigma train-base` and `sigma base-actions`: options for the embedded base policy (paper 4.2.1) and nothing else.

train-base: training.run.train_base (the shards' `base` split, one generic instruction that names no zone; see
docs/architecture.md, "Language that matters"). base-actions: bases.actions.write_base_actions (the frozen
base's actions into every shard, resumable); the base is an embedded one or a `lerobot:PATH_OR_ID` checkpoint
(interop/lerobot.py).
"""

from __future__ import annotations

from pathlib import Path

import typer

from sigma_vla.sim.instructions import GENERIC_INSTRUCTION


def train_base(
    shards: Path = typer.Argument(..., help="Shard directory written by `sigma prep`."),
    out: Path = typer.Option(..., "--out", metavar="DIR", help="Base-policy directory (model + training logs)."),
    split: str = typer.Option("base", "--split", metavar="NAME",
                              help="Split to train on (default: the episodes set aside for it)."),
    instruction: str = typer.Option(GENERIC_INSTRUCTION, "--instruction", metavar="TEXT",
                                    help="The one instruction the base reads ('' = the dataset's own task text)."),
    steps: int = typer.Option(2000, "--steps", metavar="N", help="Optimizer steps."),
    batch_size: int = typer.Option(64, "--batch-size", metavar="N", help="Samples per step."),
    lr: float = typer.Option(2e-3, "--lr", metavar="LR", help="Peak learning rate (cosine schedule)."),
    seed: int = typer.Option(0, "--seed", metavar="N", help="Seed of weights and data order."),
    vision: str = typer.Option("flat", "--vision", metavar="NAME", help="Camera encoder: flat | keypoints | grid."),
    augment_shift: int = typer.Option(0, "--augment-shift", metavar="PX",
                                      help="Random-shift augmentation in pixels (0: off)."),
    dropout: float = typer.Option(0.0, "--dropout", metavar="P", help="Transformer dropout."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the latest checkpoint in --out."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Train the embedded base policy (TinyBasePolicy) on SHARDS, then freeze it."""
    from sigma_vla.training.run import train_base as fit

    result = fit(shards, out, instruction or None, split, steps, batch_size, lr, seed, resume, progress,
                 {"vision": vision, "augment_shift": augment_shift, "dropout": dropout})
    typer.echo(f"trained the base {result['steps']} steps on {result['samples']} '{split}' windows "
               f"(last loss {result['last_loss']:.4g}); model in {out}")


def base_actions(
    shards: Path = typer.Argument(..., help="Shard directory written by `sigma prep`."),
    base: str = typer.Option(..., "--base", metavar="BASE",
                             help="Base-policy directory written by `sigma train-base`, or "
                                  "lerobot:PATH_OR_ID (a LeRobot checkpoint, its own processors)."),
    batch_size: int = typer.Option(64, "--batch-size", metavar="N", help="Windows per forward."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Add the frozen base's actions (base_action_*) to every shard of SHARDS (resumable)."""
    from sigma_vla.bases.actions import write_base_actions
    from sigma_vla.bases.resolve import load_base
    from sigma_vla.data.shards import read_meta

    meta = read_meta(shards)
    policy, fingerprint, source = load_base(base, meta, spec_file=shards / "meta.json")
    done = write_base_actions(shards, policy, fingerprint, batch_size, progress, source)
    typer.echo(f"base actions in {done['shards']} shards ({done['written']} written, {done['skipped']} already "
               f"done, {done['samples']} windows) in {shards}")
