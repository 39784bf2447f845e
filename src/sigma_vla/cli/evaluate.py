"""`sigma calibrate`, `sigma eval`, `sigma rollout`, `sigma report`: options for the adapter's calibration and offline
replay (evaluation/offline.py), closed-loop rollouts (evaluation/rollout.py) and the HTML report
(evaluation/report.py)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from sigma_vla.errors import SigmaError


def calibrate(
    run: Path = typer.Argument(..., help="Sigma run directory (from `sigma train`)."),
    shards: Path = typer.Argument(..., help="The run's shard directory (its train windows are read)."),
) -> None:
    """Fit the risk-gated adapter's ranges to the run (paper 4.3) and write RUN/adapter.json."""
    from sigma_vla.evaluation.offline import calibrate_run

    cfg = calibrate_run(run, shards)
    typer.echo(f"adapter: tau_max {cfg.tau_max:.4g}, ratio_max {cfg.ratio_max:.4g} -> {run / 'adapter.json'}")


def evaluate(
    run: Path = typer.Argument(..., help="Sigma run directory (from `sigma train`)."),
    shards: Path = typer.Argument(..., help="Shard directory with base actions (or the paper's .pt shards)."),
    out: Path = typer.Option(..., "--out", metavar="DIR", help="Where sigma_eval_report.json goes."),
    split: str = typer.Option("test", metavar="NAME", help="Split to replay."),
    batch_size: int = typer.Option(32, metavar="N", help="Windows per batch."),
    finetuned_base: Path = typer.Option(None, metavar="RUN",
                                        help="Run directory of `sigma train --finetune-base` (control group)."),
    bootstrap: int = typer.Option(1000, metavar="N", help="Bootstrap resamples over episodes for the 95% intervals."),
) -> None:
    """Replay the same windows through base untuned / fine-tuned, Sigma tau=0, Sigma, Sigma + adapter."""
    from sigma_vla.evaluation.metrics import replay_episodes
    from sigma_vla.evaluation.offline import format_table, run_eval

    start = time.perf_counter()
    report = run_eval(run, shards, out, split, batch_size, finetuned_base, bootstrap)
    typer.echo(format_table(report))
    episodes = replay_episodes(report)
    if episodes is not None and episodes < 5:
        typer.echo(f"warning: the 95% intervals rest on {episodes} episode(s) of the {split} split; with fewer than "
                   "5 they mean little (prep with a larger split, or more episodes)", err=True)
    typer.echo(f"report: {out / 'sigma_eval_report.json'} ({time.perf_counter() - start:.0f} s)")


def rollout(
    run: Path = typer.Argument(..., help="Sigma run (`sigma train`), base (`sigma train-base`) or fine-tuned base run."),
    out: Path = typer.Option(..., "--out", metavar="DIR", help="Where rollouts.json and the animations go."),
    episodes: int = typer.Option(20, metavar="N", help="Closed-loop episodes."),
    seed: int = typer.Option(0, metavar="N", help="Rollout seed (disjoint from recording seeds)."),
    policy: str = typer.Option("sigma", metavar="NAME",
                               help="sigma | sigma+adapter | sigma-tau0 (Sigma with tau forced to 0) | base; "
                                    "a base directory: base."),
    templates: str = typer.Option("held-out", metavar="SET", help="Instruction templates: held-out | seen | all."),
    instruction: str = typer.Option(None, "--instruction", metavar="TEXT", help="Your own instruction (with --zone)."),
    zone: str = typer.Option(None, "--zone", metavar="ZONE", help="The zone your instruction means (near_left ... far_right)."),
    instructions: Path = typer.Option(None, "--instructions", metavar="FILE",
                                      help='JSON-lines file of {"zone": ..., "text": ...[, "kind": ...]}.'),
    image_size: int = typer.Option(None, metavar="PX", help="Camera side; must be the run's training image size (the default)."),
    max_steps: int = typer.Option(120, metavar="N", help="Step limit per episode (the expert needs at most about 105)."),
    replan_every: int = typer.Option(1, "--replan-every", metavar="N", help="Actions executed from each chunk before re-planning."),
    ensemble: float = typer.Option(None, "--ensemble", metavar="K", show_default=False,
                                   help="Temporal ensembling weight k (ACT's; re-plans every step), 0.01 by default; "
                                        "0 = off: execute --replan-every actions of each plan."),
    workers: int = typer.Option(1, "--workers", metavar="N", help="Episodes in parallel processes (results identical for any W)."),
    animations: int = typer.Option(2, metavar="N", help="Episodes saved as GIF."),
) -> None:
    """Run the policy in the SO-101 simulator on held-out seeds and instruction templates (or your own words)."""
    from sigma_vla.evaluation.rollout import (TEMPORAL_ENSEMBLE, RolloutJob, format_summary, plan_episodes,
                                              run_rollouts)
    from sigma_vla.inference.policy import POLICY_CHOICES, load_policy
    from sigma_vla.outdir import read_json
    from sigma_vla.sim.instructions import read_instructions, user_instruction
    from sigma_vla.sim.so101 import require_simulator

    require_simulator()
    if policy not in POLICY_CHOICES:
        raise SigmaError(f"unknown policy {policy!r} (choose {', '.join(POLICY_CHOICES)})", field="--policy")
    if templates not in ("held-out", "seen", "all"):
        raise SigmaError(f"unknown template set {templates!r}", field="--templates")
    for name, value in (("--episodes", episodes), ("--workers", workers), ("--replan-every", replan_every),
                        ("--max-steps", max_steps)):
        if value < 1:
            raise SigmaError(f"must be >= 1, got {value}", field=name)
    ensemble = TEMPORAL_ENSEMBLE if ensemble is None else ensemble
    if ensemble < 0:
        raise SigmaError(f"must be >= 0, got {ensemble}", field="--ensemble")
    if (instruction is None) != (zone is None):
        raise SigmaError("--instruction and --zone go together", field="--zone" if zone is None else "--instruction")
    if instruction is not None and instructions is not None:
        raise SigmaError("give --instruction or --instructions, not both", field="--instructions")
    users = (read_instructions(instructions) if instructions is not None
             else [user_instruction(instruction, zone)] if instruction is not None else None)
    pol = load_policy(run, policy, replan_every)  # fails here, in one line, before any worker starts
    trained = pol.config.image_size
    if image_size is not None and image_size != trained:
        raise SigmaError(f"the policy was trained on {trained} px frames, got {image_size} (leave it out to use "
                         f"{trained})", field="--image-size")
    job = RolloutJob(str(run), policy, replan_every, trained, max_steps, ensemble)
    earlier = out / "rollouts.json"
    if earlier.is_file():  # ours (the output rule refuses anything else): say what is replaced before it goes
        before = read_json(earlier)
        what = f"{before.get('policy')}, {before.get('episodes')} episodes" if isinstance(before, dict) else "?"
        typer.echo(f"note: replacing the earlier rollout in {out} ({what})", err=True)
    s = run_rollouts(job, plan_episodes(episodes, seed, templates, users), out, animations, workers)
    typer.echo(format_summary(policy, s))
    typer.echo(f"-> {out / 'rollouts.json'}")


def report(
    root: Path = typer.Argument(Path("."), help="Where to look: a demo, run or project directory; runs, "
                                                "sigma_eval_report.json and rollouts.json are found by their files, "
                                                "here and 2 levels under it."),
    out: Path = typer.Option(Path("report.html"), "--out", metavar="FILE", help="The HTML page to write."),
    eval_dir: Path = typer.Option(None, "--eval", metavar="DIR", help="The `sigma eval` output to show (instead "
                                                                      "of the one found)."),
    rollouts: list[Path] = typer.Option(None, "--rollouts", metavar="DIR",
                                        help="A `sigma rollout` output to show (repeat it for several; instead of "
                                             "those found)."),
) -> None:
    """One self-contained HTML page: the runs, loss dynamics, replay MSEs with intervals, CHECK A/B, rollouts."""
    from sigma_vla.evaluation.report_inputs import find_inputs, found_lines
    from sigma_vla.evaluation.report import write_report

    inputs = find_inputs(root, eval_dir, rollouts or None)
    typer.echo("\n".join(found_lines(inputs)))
    typer.echo(f"report: {write_report(inputs, out).resolve()}")
