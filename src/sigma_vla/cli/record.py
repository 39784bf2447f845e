"""`sigma record`: scripted SO-101 pick-and-place demonstrations as a LeRobot v3.0 dataset (sim/record.py)."""

from __future__ import annotations

from pathlib import Path

import typer


def record(
    out: Path = typer.Option(..., "--out", metavar="DIR", help="New dataset directory (must not exist, or be empty)."),
    episodes: int = typer.Option(20, "--episodes", metavar="N", help="Episodes to attempt; failures are dropped."),
    image_size: int = typer.Option(128, "--image-size", metavar="PX", help="Square camera frames, pixels per side."),
    seed: int = typer.Option(0, "--seed", metavar="N", help="Base seed; attempt i uses seed * 100003 + i."),
    codec: str = typer.Option("av1", "--codec", metavar="NAME", help="Video codec: av1 (libsvtav1) or h264 (libx264)."),
    workers: int = typer.Option(1, "--workers", metavar="N", help="Simulator processes (output is identical for any)."),
    generic_episodes: int = typer.Option(0, "--generic-episodes", metavar="N",
                                         help="The first N episodes are the base's: the generic instruction and the "
                                              "default goal (use `sigma prep --base-task` to split them off)."),
    paired: bool = typer.Option(False, "--paired",
                                help="Record each zone episode's twin too: the generic instruction and the default "
                                     "goal, the block where the zone episode had it (`sigma prep --base-task` puts "
                                     "the twins of train episodes in the base split)."),
    action_noise: float = typer.Option(0.0, "--action-noise", metavar="X",
                                       help="Noise injected into the executed actions (DART), relative to the "
                                            "action's size; labels stay clean. 0 = off."),
) -> None:
    """Record expert demonstrations with zone goals and paraphrased instructions."""
    from sigma_vla.sim.record import RecordConfig, record_dataset
    from sigma_vla.sim.so101 import require_simulator

    require_simulator()
    config = RecordConfig(episodes=episodes, image_size=image_size, seed=seed, codec=codec, workers=workers,
                          generic_episodes=generic_episodes, action_noise=action_noise, paired=paired)
    s = record_dataset(config, out)
    rate = s.frames / s.seconds if s.seconds > 0 else 0.0
    typer.echo(f"kept {s.kept} episodes, discarded {s.discarded}, {s.frames} frames in {s.seconds:.1f} s "
               f"({rate:.1f} frames/s) -> {s.path}")
