"""`sigma inspect` and `sigma prep`: look at a LeRobot dataset, then turn it into training shards."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer


def _print_description(d: dict, problems: list[str]) -> None:
    typer.echo(f"{d['path']}  (LeRobot {d['codebase_version']}, {d['fps']:g} fps, robot {d['robot_type']})")
    typer.echo(f"  episodes {d['episodes']}, frames {d['frames']}")
    typer.echo("  features:")
    for name, f in d["features"].items():
        typer.echo(f"    {name:32s} {f['dtype']:8s} {tuple(f['shape'])}")
    if d["cameras"]:
        typer.echo("  cameras:")
        for name, c in d["cameras"].items():
            typer.echo(f"    {name:32s} {c['codec']} {c['width']}x{c['height']}, "
                       f"{c['files_present']}/{c['files']} files present")
    typer.echo(f"  tasks ({len(d['tasks'])}):")
    for idx, task in list(d["tasks"].items())[:10]:
        typer.echo(f"    [{idx}] {task}")
    if problems:
        typer.echo(f"validation: {len(problems)} problem(s)")
        for p in problems:
            typer.echo(f"  - {p}")
    else:
        typer.echo("validation: ok")


def inspect(
    dataset: Path = typer.Argument(..., help="Root of a local LeRobot dataset (v2.1 or v3.0)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of text."),
    skip_videos: bool = typer.Option(False, "--skip-videos", help="Do not decode videos during validation."),
) -> None:
    """Describe a dataset and validate it; exits 1 when validation finds problems."""
    from sigma_vla.data.lerobot import LeRobotDataset
    from sigma_vla.data.validate import describe, validate_dataset

    ds = LeRobotDataset(dataset)
    d = describe(ds)
    problems = validate_dataset(ds, check_videos=not skip_videos)
    if as_json:
        typer.echo(json.dumps({**d, "problems": problems, "valid": not problems}, indent=1))
    else:
        _print_description(d, problems)
    if problems:
        raise typer.Exit(1)


def prep(
    dataset: Path = typer.Argument(..., help="Root of a local LeRobot dataset (v2.1 or v3.0)."),
    out: Path = typer.Option(..., "--out", metavar="DIR",
                             help="Shard directory (created; rerun the same command to resume)."),
    horizon: int = typer.Option(16, metavar="T", help="Window length T (paper 4.1: 16)."),
    chunk: int = typer.Option(8, metavar="C", help="Chunk length C (the first C actions of a window)."),
    min_action_norm: float = typer.Option(0.0, metavar="X",
                                          help="Drop windows whose mean action L2 norm is below this."),
    image_size: int = typer.Option(None, metavar="S", show_default=False,
                                   help="Frames are resized to S x S (default: the recording's frames' shorter "
                                        "side, at most 128; a larger S upscales them, with a warning)."),
    state_only: bool = typer.Option(False, "--state-only", help="Skip cameras (for datasets without videos)."),
    workers: int = typer.Option(1, metavar="N", help="Parallel worker processes over episodes."),
    split: str = typer.Option("train:0.8,val:0.1,test:0.1", metavar="FRACTIONS",
                              help="Episode split fractions (base, train, val, test)."),
    shard_size: int = typer.Option(256, metavar="N", help="Samples per shard file."),
    stride: int = typer.Option(1, metavar="N", help="Frames between window starts."),
    pad_end: bool = typer.Option(False, "--pad-end",
                                 help="Also the windows that run past the episode's end, its last action repeated "
                                      "(closed loop needs the last states; default: full windows, the paper's)."),
    seed: int = typer.Option(0, metavar="N", help="Seed of the episode -> split assignment."),
    base_task: str = typer.Option(None, "--base-task", metavar="TEXT",
                                  help="Episodes with this task form the base split (the base's demonstrations); "
                                       "the rest are cut by --split."),
) -> None:
    """Slide windows over every episode and write safetensors shards plus meta.json (paper 4.1)."""
    from sigma_vla.data.lerobot import LeRobotDataset
    from sigma_vla.data.prep import PrepConfig, run_prep, upscale_warning

    note = None if image_size is None or state_only else upscale_warning(LeRobotDataset(dataset), image_size)
    if note:
        typer.echo(f"warning: {note}", err=True)
    cfg = PrepConfig(horizon=horizon, chunk=chunk, min_action_norm=min_action_norm, image_size=image_size,
                     state_only=state_only, split=split, shard_size=shard_size, stride=stride, seed=seed,
                     pad_end=pad_end, base_task=base_task)
    start = time.perf_counter()
    meta = run_prep(dataset, out, cfg, workers=workers)
    w, side = meta["windows"], meta["params"]["image_size"]
    frames = f"{side} x {side} px frames" if meta["cameras"] else "no frames"
    typer.echo(f"wrote {meta['num_samples']} windows in {meta['num_shards']} shard(s) to {out} "
               f"({frames}; {time.perf_counter() - start:.1f} s)")
    typer.echo(f"  episodes per split: {meta['episodes']['per_split']}")
    typer.echo(f"  windows per split:  {w['per_split']}")
    typer.echo(f"  dropped: {w['windows_dropped_static']} near-static windows, "
               f"{w['episodes_too_short']} episode(s) shorter than the horizon")
