"""`sigma demo`: the whole pipeline on the embedded default, end to end, with what each stage produced.

Stages run in order and each is skipped when its output is already complete, so an interrupted demo resumes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import typer


@dataclass(frozen=True)
class DemoPlan:
    episodes: int
    image_size: int
    workers: int
    split: str
    base_steps: int  # train-base
    # sigma train and, with the same budget, the fine-tuned base (the control group); None: the "demo"
    # experiment's own steps (training/registry.py), so the demo and `sigma train` share one budget
    sigma_steps: int | None
    rollout_episodes: int  # per policy
    rollout_max_steps: int


# Paired twins (docs/closed_loop.md, "Paired twins"): every recorded zone episode has a twin with the generic
# instruction and the default goal, the block where the zone episode had it; the two are identical until the carry.
# The base learns from the twins of the train split (it places at the default goal, in no zone), Sigma from the zone
# episodes themselves, so Sigma's residual target is zero before the carry and, after it, what the words change.
# Held-out-template episodes (a quarter) always go to test, and their twins to no split.
SPLIT = "train:0.9,val:0.05,test:0.05"
BASE_SPLIT = "base"
FULL = DemoPlan(320, 96, 2, SPLIT, base_steps=4000, sigma_steps=None, rollout_episodes=20, rollout_max_steps=120)
QUICK = DemoPlan(14, 64, 2, SPLIT, base_steps=100, sigma_steps=30, rollout_episodes=1, rollout_max_steps=40)


def _stage(name: str, done: bool):
    typer.secho(f"\n== {name}{' (already done, skipped)' if done else ''}", bold=True)
    return time.perf_counter()


def run_record(plan: DemoPlan, out: Path) -> Path:
    from sigma_vla.sim.record import RecordConfig, record_dataset

    dataset = out / "dataset"
    done = (dataset / "meta/info.json").exists()
    start = _stage(f"record {plan.episodes} SO-101 episodes and their generic twins -> {dataset}", done)
    if not done:
        s = record_dataset(RecordConfig(episodes=plan.episodes, image_size=plan.image_size, seed=0, codec="av1",
                                        workers=plan.workers, paired=True), dataset)
        typer.echo(f"kept {s.kept} episodes, discarded {s.discarded}, {s.frames} frames "
                   f"({time.perf_counter() - start:.0f} s)")
    return dataset


def run_inspect(dataset: Path) -> None:
    from sigma_vla.data.lerobot import LeRobotDataset
    from sigma_vla.data.validate import validate_dataset

    _stage(f"inspect {dataset}", False)
    ds = LeRobotDataset(dataset)
    problems = validate_dataset(ds)
    typer.echo(f"LeRobot {ds.version}, {ds.fps:g} fps, {len(ds.episodes)} episodes, {ds.num_frames} frames, "
               f"{len(ds.tasks)} instructions, cameras {ds.camera_keys}: "
               f"{'valid' if not problems else f'{len(problems)} problem(s)'}")
    for p in problems:
        typer.echo(f"  - {p}")


def run_prep_stage(plan: DemoPlan, dataset: Path, out: Path) -> Path:
    from sigma_vla.data.prep import PrepConfig, run_prep
    from sigma_vla.sim.instructions import GENERIC_INSTRUCTION

    shards = out / "shards"
    start = _stage(f"prep windows -> {shards}", False)
    cfg = PrepConfig(image_size=plan.image_size, split=plan.split, pad_end=True, base_task=GENERIC_INSTRUCTION)
    meta = run_prep(dataset, shards, cfg, workers=plan.workers)
    typer.echo(f"{meta['num_samples']} windows in {meta['num_shards']} shard(s); episodes per split "
               f"{meta['episodes']['per_split']}; windows per split {meta['windows']['per_split']} "
               f"({time.perf_counter() - start:.0f} s)")
    return shards


def run_train_base(plan: DemoPlan, shards: Path, out: Path) -> Path:
    from sigma_vla.sim.instructions import GENERIC_INSTRUCTION
    from sigma_vla.training.run import train_base

    base = out / "base"
    done = (base / "config.json").exists()
    start = _stage(f"train the base on the {BASE_SPLIT!r} split, generic instruction -> {base}", done)
    if not done:
        info = train_base(shards, base, GENERIC_INSTRUCTION, BASE_SPLIT, steps=plan.base_steps)
        typer.echo(f"{info['steps']} steps on {info['samples']} windows, last loss {info['last_loss']:.4g} "
                   f"({time.perf_counter() - start:.0f} s)")
    return base


def run_base_actions(shards: Path, base: Path) -> None:
    from sigma_vla.bases.actions import write_base_actions
    from sigma_vla.bases.resolve import load_base
    from sigma_vla.data.shards import read_meta

    start = _stage("precompute the frozen base's actions into the shards", False)
    policy, fingerprint, source = load_base(base, read_meta(shards))
    done = write_base_actions(shards, policy, fingerprint, progress=True, source=source)
    typer.echo(f"{done['samples']} windows, {done['written']} shard(s) written ({time.perf_counter() - start:.0f} s)")


def run_training(plan: DemoPlan, shards: Path, base: Path, out: Path) -> tuple[Path, Path]:
    from sigma_vla.training.run import finetune_base, train_sigma

    sigma_run, base_run = out / "run", out / "base_finetuned"
    for name, run, fn in (("Sigma: LoRA + telepathy heads, TRAF + TSAC", sigma_run,
                           lambda: train_sigma(shards, sigma_run, "demo", {"steps": plan.sigma_steps})),
                          ("the base fine-tuned on the same split and budget (control group)", base_run,
                           lambda: finetune_base(shards, base_run, base, "demo", {"steps": plan.sigma_steps}))):
        done = (run / "model" / "config.json").exists()
        start = _stage(f"train {name} -> {run}", done)
        if not done:
            result = fn()
            typer.echo(f"{result.steps} steps ({time.perf_counter() - start:.0f} s); log {run / 'train_log.csv'}")
    return sigma_run, base_run


def run_evaluation(shards: Path, sigma_run: Path, base_run: Path, out: Path) -> None:
    from sigma_vla.evaluation.offline import calibrate_run, format_table, run_eval

    start = _stage("evaluate: offline replay of the test windows through five groups", False)
    calibrate_run(sigma_run, shards)
    report = run_eval(sigma_run, shards, out / "eval", "test", 32, base_run)
    typer.echo(format_table(report))
    typer.echo(f"({time.perf_counter() - start:.0f} s) -> {out / 'eval' / 'sigma_eval_report.json'}")


def run_rollout_stage(plan: DemoPlan, sigma_run: Path, base_run: Path, out: Path) -> None:
    from sigma_vla.evaluation.rollout import RolloutJob, format_summary, plan_episodes, run_rollouts

    start = _stage(f"closed loop: {plan.rollout_episodes} held-out episodes per policy in the simulator", False)
    specs = plan_episodes(plan.rollout_episodes, 0)
    for label, source, mode in (("base", sigma_run, "base"), ("base fine-tuned", base_run, "base"),
                                ("sigma", sigma_run, "sigma"), ("sigma+adapter", sigma_run, "sigma+adapter")):
        job = RolloutJob(str(source), mode, 1, plan.image_size, plan.rollout_max_steps)
        name = "rollout_" + label.replace(" ", "_").replace("+", "_")
        s = run_rollouts(job, specs, out / name, animations=1, workers=plan.workers, progress=True, label=label)
        typer.echo(format_summary(label, s))
    typer.echo(f"({time.perf_counter() - start:.0f} s)")


def mark_demo(out: Path, quick: bool) -> None:
    """OUT/demo.json says a demo wrote OUT, and whether a quick one (its report then says it is a smoke test)."""
    import json

    from sigma_vla.layout import DEMO_FILE
    from sigma_vla.outdir import atomic_write_text

    atomic_write_text(out / DEMO_FILE, json.dumps({"quick": quick}) + "\n")


def demo(
    out: Path = typer.Option(Path("demo_out"), "--out", metavar="DIR", help="Where every stage writes (resumable)."),
    quick: bool = typer.Option(False, "--quick",
                               help="A small, fast run: the same stages on fewer episodes and steps."),
) -> None:
    """Run the pipeline end to end on the embedded default (SO-101 simulator) and say what it produced.

    Quick: about 2 minutes; full: about 25 minutes on 2 CPU cores.
    """
    from sigma_vla.sim.so101 import require_simulator

    require_simulator()  # the demo records and rolls out in the simulator: say so before anything runs
    plan = QUICK if quick else FULL
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    mark_demo(out, quick)
    dataset = run_record(plan, out)
    run_inspect(dataset)
    shards = run_prep_stage(plan, dataset, out)
    base = run_train_base(plan, shards, out)
    run_base_actions(shards, base)
    sigma_run, base_run = run_training(plan, shards, base, out)
    run_evaluation(shards, sigma_run, base_run, out)
    run_rollout_stage(plan, sigma_run, base_run, out)
    from sigma_vla.evaluation.report import build_report

    page = build_report(out, out / "report.html")
    typer.secho(f"\ndemo finished in {time.perf_counter() - start:.0f} s. Open the report: {page.resolve()}",
                bold=True)
