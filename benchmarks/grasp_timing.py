"""Why does a base miss the block? Where its jaw was when it commanded the grasp, and how long it waited to lift.

    python benchmarks/grasp_timing.py BASE_OR_RUN [--episodes 20] [--hold 0] [--out benchmarks/results/grasp_timing.json]

Rolls out a policy as `sigma rollout --policy base` does (held-out seeds, one action per plan) and records, per
episode, the step of its first close command, the point between the jaws relative to the expert's aim (block
centre + sim.so101.GRASP_AIM_OFFSET) at that step, the steps until the jaw rose 5 mm above it, and whether the
block was lifted (> 3 cm, evaluation.rollout's rule). The scripted expert waits 10 steps with the jaw closing
before it lifts; a policy that rises sooner lifts an empty or half-closed jaw. `--hold N` freezes the arm (and
keeps the jaw closed) for N steps after the close command: the counterfactual that tells a timing miss from a
position miss (docs/closed_loop.md, "The jaw in the state").
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from sigma_vla.evaluation.rollout import PlacementTracker, plan_episodes, wilson_interval
from sigma_vla.inference.policy import load_policy
from sigma_vla.outdir import atomic_write_text
from sigma_vla.sim.so101 import GRASP_AIM_OFFSET, SO101Sim

RISE = 0.005  # metres above the close height that count as lifting the arm
JAW_STEPS = 3  # steps the jaw takes to close on the block after the command (tests/sim/test_so101.py)


@dataclass
class GraspTiming:
    episode: int
    lifted: bool
    close_step: int | None  # first step whose action closes the jaw (None: it never closed)
    offset_mm: list[float] | None  # jaw point - aim at that step, x y z (world, millimetres)
    wait_steps: int | None  # steps from the close command until the jaw point rose RISE above its height then


def run_episode(sim: SO101Sim, policy, spec, hold: int, max_steps: int) -> GraspTiming:
    obs = sim.reset(seed=spec.sim_seed, zone=spec.zone)
    policy.reset()
    track = PlacementTracker(spec.zone)  # the rollout's own "lifted" rule
    close, offset, wait, z_close = None, None, None, 0.0
    for t in range(max_steps):
        action = policy.select_action({"observation.state": obs.state, "observation.images.front": obs.image},
                                      spec.instruction.text)
        if close is None and action[3] < 0.5:  # grasp is absolute: 1 open, 0 closed
            close, z_close = t, sim.grasp_pos[2]
            offset = ((sim.grasp_pos - sim.block_pos - GRASP_AIM_OFFSET) * 1000).round(1).tolist()
        if close is not None and t < close + hold:
            action = np.array([0.0, 0.0, 0.0, min(float(action[3]), 0.0)], np.float32)
        if close is not None and wait is None and sim.grasp_pos[2] > z_close + RISE:
            wait = t - close
        obs = sim.step(action).obs
        track.update(sim.block_reading())
        if track.lifted:
            break
    return GraspTiming(spec.index, track.lifted, close, offset, wait)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("policy", type=Path, help="a base directory (`sigma train-base`) or a run (its base is used)")
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--hold", type=int, default=0, help="freeze the arm this many steps after the close command")
    ap.add_argument("--max-steps", type=int, default=60, help="the expert lifts by step 35")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/grasp_timing.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    policy = load_policy(args.policy, "base", n_action_steps=1)
    with SO101Sim(image_size=policy.config.image_size) as sim:
        rows = []
        for spec in plan_episodes(args.episodes, 0):
            rows.append(run_episode(sim, policy, spec, args.hold, args.max_steps))
            r = rows[-1]
            print(f"episode {r.episode:3d}: lifted {int(r.lifted)}, close at step {r.close_step}, "
                  f"jaw - aim {r.offset_mm} mm, rose after {r.wait_steps} steps", flush=True)
    k = sum(r.lifted for r in rows)
    waits = [r.wait_steps for r in rows if r.wait_steps is not None]
    early = sum(1 for r in rows if not r.lifted and r.wait_steps is not None and r.wait_steps <= JAW_STEPS)
    summary = {"policy": str(args.policy), "hold": args.hold, "episodes": len(rows), "lifted": k,
               "lifted_rate": k / len(rows), "lifted_ci95": wilson_interval(k, len(rows)),
               "median_wait_steps": float(np.median(waits)) if waits else None,
               "missed_rising_before_the_jaw_closed": early, "episodes_detail": [asdict(r) for r in rows]}
    atomic_write_text(args.out, json.dumps(summary, indent=1))
    lo, hi = summary["lifted_ci95"]
    print(f"lifted {k}/{len(rows)} ({k / len(rows):.0%} [{lo:.0%}-{hi:.0%}]); misses that rose within {JAW_STEPS} "
          f"steps of the close command: {early} of {len(rows) - k}; median wait {summary['median_wait_steps']} steps "
          f"-> {args.out}")


if __name__ == "__main__":
    main()
