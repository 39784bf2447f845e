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


FULL = DemoPlan(episodes=60, image_size=96, workers=2, split="base:0.3,train:0.5,val:0.1,test:0.1")
QUICK = DemoPlan(episodes=12, image_size=64, workers=2, split="base:0.3,train:0.5,val:0.1,test:0.1")


def _stage(name: str, done: bool):
    typer.secho(f"\n== {name}{' (already done, skipped)' if done else ''}", bold=True)
    return time.perf_counter()


def run_record(plan: DemoPlan, out: Path) -> Path:
    from sigma_vla.sim.record import RecordConfig, record_dataset

    dataset = out / "dataset"
    start = _stage(f"record {plan.episodes} SO-101 episodes -> {dataset}", (dataset / "meta/info.json").exists())
    if not (dataset / "meta/info.json").exists():
        s = record_dataset(RecordConfig(episodes=plan.episodes, image_size=plan.image_size, seed=0, codec="av1",
                                        workers=plan.workers), dataset)
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

    shards = out / "shards"
    start = _stage(f"prep windows -> {shards}", False)
    meta = run_prep(dataset, shards, PrepConfig(image_size=plan.image_size, split=plan.split), workers=plan.workers)
    typer.echo(f"{meta['num_samples']} windows in {meta['num_shards']} shard(s); episodes per split "
               f"{meta['episodes']['per_split']}; windows per split {meta['windows']['per_split']} "
               f"({time.perf_counter() - start:.0f} s)")
    return shards


def demo(
    out: Path = typer.Option(Path("demo_out"), "--out", help="Where every stage writes (resumable)."),
    quick: bool = typer.Option(False, "--quick", help="A small, fast run (about 3 minutes)."),
) -> None:
    """Run the pipeline end to end on the embedded default (SO-101 simulator) and say what it produced."""
    plan = QUICK if quick else FULL
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    dataset = run_record(plan, out)
    run_inspect(dataset)
    shards = run_prep_stage(plan, dataset, out)
    typer.secho(f"\ndemo finished in {time.perf_counter() - start:.0f} s: dataset {dataset}, shards {shards}",
                bold=True)
