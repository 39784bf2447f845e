"""Closed-loop rollouts: plans are deterministic and held out; an expert policy succeeds through the same loop."""

from __future__ import annotations

import numpy as np

from sigma_vla.evaluation.rollout import rollout_plan, run_episode, summarize
from sigma_vla.sim.so101 import STATE_NAMES


def test_rollout_plan_is_deterministic_and_held_out():
    plans = [rollout_plan(0, i) for i in range(20)]
    assert plans == [rollout_plan(0, i) for i in range(20)]
    assert all(ins.held_out for _, _, ins in plans)
    assert all(not ins.held_out for _, _, ins in (rollout_plan(0, i, "seen") for i in range(20)))
    assert len({zone for _, zone, _ in plans}) > 1


class ExpertThroughPolicyAPI:
    """The scripted expert behind the SigmaPolicy interface (reset, queue, select_action, last_plan)."""

    def __init__(self, sim):
        self.sim, self.queue, self.last_plan = sim, [], None

    def reset(self):
        pass

    def select_action(self, observation, instruction):
        assert observation["observation.state"].shape == (len(STATE_NAMES),)
        return self.sim.expert_action()


def test_expert_succeeds_in_the_rollout_loop():
    from sigma_vla.sim.so101 import SO101Sim

    with SO101Sim(image_size=32) as sim:
        seed, zone, ins = rollout_plan(0, 1)
        frames = []
        r = run_episode(sim, ExpertThroughPolicyAPI(sim), seed, zone, ins, max_steps=150, frames=frames)
    assert r.success and r.final_distance < 0.03 and 20 < r.length < 150
    assert len(frames) == r.length and frames[0].shape == (32, 32, 3)
    s = summarize([r, r])
    assert s["success_rate"] == 1.0 and s["success_ci95"][0] < 1.0 and np.isclose(s["mean_length"], r.length)


def _reading(z: float, grasp: float = 0.01, speed: float = 0.0, jaw: float = 0.0, xy=(0.27, 0.12)):
    from sigma_vla.sim.so101 import BlockReading

    return BlockReading(np.array([*xy, 0.02 + z]), z, speed, grasp, jaw)


def test_tracker_names_each_stage_of_a_pick_and_place():
    from sigma_vla.evaluation.rollout import PlacementTracker

    t = PlacementTracker("far_left")  # x 0.25..0.30, y 0.09..0.15
    t.update(_reading(0.005))
    assert not t.grasped  # nudged, not held
    t.update(_reading(0.02))
    assert t.grasped and not t.lifted
    t.update(_reading(0.05))
    t.update(_reading(0.001, speed=0.05, jaw=1.0))  # still falling: not at rest
    assert t.lifted and not t.placed
    t.update(_reading(0.001, jaw=0.2))  # at rest but the jaw still holds it
    assert not t.placed
    t.update(_reading(0.001, jaw=0.9))
    assert t.placed and t.in_zone and t.place_xy == [0.27, 0.12] and not t.settled
    t.update(_reading(0.03, jaw=0.9, xy=(0.1, 0.0)))  # later moves do not change the decision
    t.update(_reading(0.0, jaw=0.9, xy=(0.1, 0.0)))
    assert t.settled and t.in_zone


def test_tracker_wrong_zone_and_dropped_block():
    from sigma_vla.evaluation.rollout import PlacementTracker

    t = PlacementTracker("near_right")
    for z, jaw in ((0.02, 0.0), (0.05, 0.0), (0.0, 0.9)):
        t.update(_reading(z, jaw=jaw))
    assert t.placed and not t.in_zone
    pushed = PlacementTracker("near_right")
    pushed.update(_reading(0.02, grasp=0.08))  # tipped up far from the jaws: not a grasp
    assert not pushed.grasped


def test_summary_rates_have_wilson_intervals():
    from sigma_vla.evaluation.rollout import EpisodeResult, summarize_by, wilson_interval

    assert wilson_interval(0, 20)[0] == 0.0 and 0.15 < wilson_interval(0, 20)[1] < 0.18
    lo, hi = wilson_interval(14, 20)
    assert lo < 0.7 < hi
    eps = [EpisodeResult(i, "far_left" if i % 2 else "near_right", "x", "t", "explicit" if i < 3 else "implicit",
                         i == 0, False, 0.1, 50, grasped=True, lifted=i > 0, placed_in_zone=i > 2) for i in range(5)]
    s = summarize(eps)
    assert s["lifted_rate"] == 0.8 and s["placed_in_zone_rate"] == 0.4 and s["grasped_ci95"][1] == 1.0
    by = summarize_by(eps)
    assert by["kind"]["explicit"]["episodes"] == 3 and by["templates"]["held-out"]["episodes"] == 1
    assert by["zone"]["far_left"]["lifted_rate"] == 1.0


def test_a_worker_that_cannot_start_fails_the_rollout_in_one_line(tmp_path):
    """A start-up failure in a pool worker used to make the pool respawn workers forever (issue: --image-size -5
    with --workers 2 never exited). Now the first task raises the worker's one-line reason and the pool stops."""
    import subprocess
    import sys

    code = ("from sigma_vla.evaluation.rollout import RolloutJob, iter_episodes, plan_episodes\n"
            f"job = RolloutJob({str(tmp_path / 'no_run')!r}, 'sigma', 1, 64, 10)\n"
            "list(iter_episodes(job, plan_episodes(4, 0), 0, workers=2))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "a worker process could not start" in last and "no_run" in last
