"""`sigma train` (paper 4.2: LoRA + telepathy heads with TRAF and TSAC, or the base fine-tuned as the control
group) and `sigma plot-losses` (Table 1's columns as curves).

Multi-process: `accelerate launch --num_processes 2 --cpu -m sigma_vla.cli.main train SHARDS --out RUN ...`
(gloo on CPU; on GPUs drop --cpu, add --multi_gpu, and --num_machines / --machine_rank / --main_process_ip for
several nodes). --batch-size is per process and micro-batch. --quantize nf4 and --gradient-checkpointing fit a
larger backbone on a smaller card (docs/gpu.md, "A 24 GB card: nf4 + gradient checkpointing").
"""

from __future__ import annotations

from pathlib import Path

import typer

from sigma_vla.cli.help import DEFAULT_CONFIG
from sigma_vla.errors import SigmaError


def train(
    shards: Path = typer.Argument(..., help="Shard directory written by `sigma prep` (train and val splits)."),
    out: Path = typer.Option(..., "--out", metavar="RUN", help="Run directory (logs, checkpoints, final model)."),
    config: str = typer.Option(DEFAULT_CONFIG, "--config", metavar="NAME", help="Named experiment:{experiments}"),
    steps: int = typer.Option(None, "--steps", metavar="N", help="Optimizer steps ({default:steps})."),
    batch_size: int = typer.Option(None, "--batch-size", metavar="N",
                                   help="Samples per process and micro-batch ({default:batch_size})."),
    grad_accum: int = typer.Option(None, "--grad-accum", metavar="N",
                                   help="Micro-batches per optimizer step ({default:grad_accum})."),
    lr: float = typer.Option(None, "--lr", metavar="LR", help="Peak learning rate ({default:lr})."),
    residual_lr_scale: float = typer.Option(
        None, "--residual-lr-scale", metavar="X",
        help="Sigma's telepathy residual head learns at lr x this ({default:residual_lr_scale})."),
    mixed_precision: str = typer.Option(None, "--mixed-precision", metavar="MODE",
                                        help="no | bf16 | fp16 ({default:mixed_precision})."),
    seed: int = typer.Option(None, "--seed", metavar="N",
                             help="Seed of weights, data order and noise ({default:seed})."),
    paraphrases: Path = typer.Option(None, "--paraphrases", metavar="FILE",
                                     help="JSON lines {task, text}: each training sample reads its task in one of "
                                          "these wordings or its own (validation reads the recorded task)."),
    checkpoint_every: int = typer.Option(None, "--checkpoint-every", metavar="N",
                                         help="Steps between checkpoints ({default:checkpoint_every})."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest verified checkpoint in --out, "
                                                         "with the run's settings (an option given must match)."),
    extend_steps: bool = typer.Option(False, "--extend-steps",
                                      help="With --resume: train to a larger --steps; the LR schedule and TSAC "
                                           "curriculum keep their planned shape (extra steps run at their end)."),
    stop_after: int = typer.Option(None, "--stop-after", metavar="N",
                                   help="End this invocation after N steps (resume later)."),
    finetune_base: str = typer.Option(None, "--finetune-base", metavar="BASE",
                                      help="Fine-tune this base instead (the control group): a base-policy directory, "
                                           "or lerobot:PATH_OR_ID (its own loss; saved as a LeRobot checkpoint)."),
    backbone: str = typer.Option(None, "--backbone", metavar="REF",
                                 help="lerobot:PATH_OR_ID: LoRA on that LeRobot VLA's own language model, with its "
                                      "tokenizer (pi0.5's PaliGemma Gemma, SmolVLA's SmolVLM)."),
    keep_base_instruction: bool = typer.Option(
        False, "--keep-base-instruction",
        help="With --finetune-base: keep the base's fixed generic instruction instead of each window's own (a "
             "LeRobot base, which has none, reads train-base's default one)."),
    quantize: str = typer.Option(None, "--quantize", metavar="MODE",
                                 help="none | nf4 | int8 (default: none): the frozen backbone layers quantized "
                                      "(bitsandbytes, the [quant] extra), LoRA over them (QLoRA); Sigma only. Eval, "
                                      "rollout and serve read it from the run."),
    gradient_checkpointing: bool = typer.Option(None, "--gradient-checkpointing/--no-gradient-checkpointing",
                                                help="Recompute the backbone's activations in backward: less "
                                                     "memory, same gradients, slower steps (free to change on "
                                                     "--resume)."),
    no_base: bool = typer.Option(False, "--no-base", help="Train Sigma on shards without base actions on purpose "
                                                          "(it then predicts whole actions, not residuals)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Train Sigma (or fine-tune the base) on SHARDS; see RUN/train_log.csv and `sigma plot-losses RUN`."""
    import sys

    from sigma_vla.cli.launch import cpu_ranks_to_spawn, spawn_cpu_ranks

    ranks = cpu_ranks_to_spawn()
    if ranks:  # `accelerate launch --cpu --num_processes N` started one process: start the N ranks (launch.py)
        typer.echo(f"accelerate --cpu started one process; starting {ranks} CPU ranks (gloo)", err=True)
        raise typer.Exit(spawn_cpu_ranks(ranks, sys.argv[1:]))
    from sigma_vla.training.run import finetune_base as run_base
    from sigma_vla.training.run import train_sigma

    if not shards.is_dir():
        raise SigmaError("not a directory", file=shards)
    overrides = train_overrides(steps=steps, batch_size=batch_size, grad_accum=grad_accum, lr=lr,
                                residual_lr_scale=residual_lr_scale, mixed_precision=mixed_precision, seed=seed,
                                checkpoint_every=checkpoint_every,
                                gradient_checkpointing=gradient_checkpointing,
                                paraphrases=str(paraphrases.resolve()) if paraphrases is not None else None)
    if backbone is not None and not backbone.startswith("lerobot:"):
        raise SigmaError(f"expected lerobot:PATH_OR_ID, got {backbone!r}", field="--backbone")
    if backbone is not None and finetune_base is not None:
        raise SigmaError("--backbone is Sigma's; the control group keeps its base", field="--backbone")
    check_quantize(quantize, finetune_base is not None)
    from sigma_vla.training.trainer import TrainingInterrupted

    try:
        if finetune_base is not None:
            from sigma_vla.sim.instructions import GENERIC_INSTRUCTION

            result = run_base(shards, out, finetune_base, config, overrides, resume, progress, stop_after,
                              task_text=not keep_base_instruction, extend_steps=extend_steps,
                              instruction=GENERIC_INSTRUCTION)
        else:
            result = train_sigma(shards, out, config, overrides, resume, progress, stop_after, extend_steps,
                                 backbone, no_base, quantize)
    except TrainingInterrupted as stop:
        typer.echo(f"{stop.describe()}\nresume with: {resume_command(sys.argv[1:])}", err=True)
        raise typer.Exit(130) from None
    from accelerate.state import PartialState

    if PartialState().is_main_process:
        last = result.history[-1] if result.history else {}
        loss = f", last loss {last['loss']:.4g}" if "loss" in last else ""
        typer.echo(f"trained {result.steps} steps ({result.skipped_steps} skipped){loss}; run in {out}")


def resume_command(argv: list[str]) -> str:
    """The command that continues this one: the same arguments with --resume (options must match the run's)."""
    import shlex

    return shlex.join(["sigma", *argv, *([] if "--resume" in argv else ["--resume"])])


def train_overrides(**options: object) -> dict[str, object]:
    """The TrainConfig fields given on the command line (None: the experiment's value), checked by TrainConfig
    itself so the CLI holds no rule of its own; an error names the option."""
    from sigma_vla.models.config import ConfigError
    from sigma_vla.training.config import TrainConfig  # lazily: torch is not needed for `sigma --help`

    given = {k: v for k, v in options.items() if v is not None}
    try:
        TrainConfig().replace(**given)
    except ConfigError as err:
        raise SigmaError(err.message, field="--" + (err.field or "").replace("_", "-")) from None
    return given


def check_quantize(quantize: str | None, control_group: bool) -> None:
    """--quantize is one of the modes, Sigma's only (the control group trains its base in full precision)."""
    from sigma_vla.models.config import QUANTIZE_MODES

    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise SigmaError(f"must be one of {', '.join(QUANTIZE_MODES)}, got {quantize!r}", field="--quantize")
    if quantize not in (None, "none") and control_group:
        raise SigmaError("is Sigma's backbone's; the control group trains its base in full precision",
                         field="--quantize")


def plot_losses(
    run: Path = typer.Argument(..., help="Run directory of `sigma train`."),
    out: Path = typer.Option(None, "--out", metavar="PNG", help="PNG path (default RUN/loss_dynamics.png)."),
) -> None:
    """Draw the loss dynamics of a run (Table 1's columns) as a PNG."""
    from sigma_vla.evaluation.loss_plot import plot_losses as draw

    typer.echo(f"wrote {draw(run, out)}")
