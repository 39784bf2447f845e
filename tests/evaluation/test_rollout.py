"""Closed-loop rollouts: plans are deterministic and held out; an expert policy succeeds through the same loop."""

from __future__ import annotations

import numpy as np

from sigma_vla.evaluation.rollout import rollout_plan, run_episode, summarize


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
        assert observation["observation.state"].shape == (14,)
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
