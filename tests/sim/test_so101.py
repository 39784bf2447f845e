"""The SO-101 simulator wrapper: zone goals, determinism, the expert, render failures."""

from __future__ import annotations

import numpy as np
import pytest

from sigma_vla.errors import SigmaError
from sigma_vla.sim import so101
from sigma_vla.sim.instructions import ZONES
from sigma_vla.sim.so101 import (MIN_GOAL_DISTANCE, STATE_NAMES, SO101Sim, probe_render, resample_block_xy,
                                  reset_goal_xy)


@pytest.fixture(scope="module")
def sim():
    with SO101Sim(image_size=64) as s:
        yield s


def rollout(sim: SO101Sim, seed: int, zone: str, steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    obs = sim.reset(seed=seed, zone=zone)
    states, actions, frames = [], [], []
    for _ in range(steps):
        a = sim.expert_action()
        states.append(obs.state), actions.append(a), frames.append(obs.image)
        obs = sim.step(a).obs
    return np.stack(states), np.stack(actions), np.stack(frames)


def test_goal_is_in_the_zone_and_clear_of_the_block(sim):
    for seed, zone in enumerate(ZONES):
        obs = sim.reset(seed=seed, zone=zone)
        assert ZONES[zone].contains(sim.goal_pos[:2])
        assert np.linalg.norm(sim.block_pos[:2] - sim.goal_pos[:2]) >= MIN_GOAL_DISTANCE
        assert obs.state.shape == (len(STATE_NAMES),) and obs.state.dtype == np.float32
        assert obs.image.shape == (64, 64, 3) and obs.image.dtype == np.uint8


def test_same_seed_same_episode_even_after_other_episodes(sim):
    s1, a1, f1 = rollout(sim, 11, "far_left", 15)
    rollout(sim, 12, "near_right", 5)
    s2, a2, f2 = rollout(sim, 11, "far_left", 15)
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(s1, s2)
    assert np.abs(f1.astype(int) - f2.astype(int)).max() <= 2


def test_different_seeds_differ(sim):
    sim.reset(seed=1, zone="near_left")
    g1, b1 = sim.goal_pos, sim.block_pos
    sim.reset(seed=2, zone="near_left")
    assert not np.allclose(g1, sim.goal_pos) and not np.allclose(b1, sim.block_pos)


def test_expert_places_the_block(sim):
    sim.reset(seed=3, zone="far_centre")
    for _ in range(150):
        r = sim.step(sim.expert_action())
        if r.terminated or r.truncated:
            break
    assert r.success and sim.distance_to_goal() < 0.03
    goal = sim.goal_pos  # the success test with another goal, asked without moving the goal
    assert sim.would_succeed(goal[:2]) and not sim.would_succeed(goal[:2] + [0.05, 0.0])
    np.testing.assert_array_equal(sim.goal_pos, goal)


def test_the_state_shows_the_jaw_closing_while_the_expert_waits(sim):
    """gripper.pos is the jaw's measured opening: open on the way to the block, closing over the steps after the
    expert's close command while gripper.cmd stays the same, and held on the block when the expert lifts it, which
    it does once the jaw is still (the package's expert waits a fixed 10 steps)."""
    jaw, cmd = STATE_NAMES.index("gripper.pos"), STATE_NAMES.index("gripper.cmd")
    sim.reset(seed=3, zone="far_centre")
    states, phases = [], []
    for _ in range(40):
        action = sim.expert_action()
        phases.append(sim._expert.phase.name)  # the phase that chose this action; the state is after it
        states.append(sim.step(action).obs.state)
    assert min(float(s[jaw]) for s, p in zip(states, phases) if p == "DESCEND") > 0.95
    closing = [s for s, p in zip(states, phases) if p == "CLOSE"]
    assert len({float(s[cmd]) for s in closing}) == 1  # the command alone cannot tell these steps apart
    openings = [float(s[jaw]) for s in closing]
    assert openings[0] > openings[1] > openings[2] and openings[-1] < 0.5  # the jaw closes, then holds the block
    assert len(closing) < 10 and abs(openings[-1] - openings[-2]) < 0.005  # it waited for the jaw, not 10 steps
    speeds = [abs(float(s[STATE_NAMES.index("gripper.vel")])) for s in closing]
    assert speeds[0] > 1.0 and speeds[-1] < so101.JAW_STILL  # what it waits for is in the state
    assert 0.1 < float(states[phases.index("LIFT")][jaw]) < 0.5  # it holds the block, not an empty jaw
    np.testing.assert_allclose(states[-1][jaw], sim.block_reading().jaw_opening, atol=1e-6)


def test_restoring_a_snapshot_replays_the_continuation(sim):
    """After restore, the observation is the one seen at the snapshot, bit for bit, and the expert's steps repeat to
    the episode's end, even after another episode ran in between; a restored snapshot can be restored again."""
    def continuation(obs):
        out = [obs.state, obs.image]
        for _ in range(40):
            a = sim.expert_action()
            r = sim.step(a)
            out += [a, r.obs.state, r.obs.image,
                    np.array([r.success, r.terminated, r.truncated, sim.steps, sim._time_limit._elapsed_steps])]
            if r.terminated:
                return out
        pytest.fail("the expert did not finish")

    # Lifting (the expert's counters and the jaw's contacts matter), and the block back on the table (success
    # needs the env's memory that it was carried).
    for phase in ("LIFT", "OPEN"):
        obs = sim.reset(seed=21, zone="near_centre")
        while sim._expert.phase.name != phase:
            obs = sim.step(sim.expert_action()).obs
        snap = sim.snapshot()
        first = continuation(obs)
        assert first[-1][0]  # success
        rollout(sim, 22, "far_left", 8)
        for _ in range(2):
            again = continuation(sim.restore(snap))
            assert len(again) == len(first)
            assert all(np.array_equal(x, y) for x, y in zip(first, again, strict=True))
    other = np.array([0.21, 0.0])
    sim.restore(snap, goal_xy=other)
    np.testing.assert_array_equal(sim.goal_pos[:2], other)


def test_reset_goal_xy_is_the_goal_reset_draws(sim):
    for seed, zone in ((4, "default"), (5, "far_right")):
        sim.reset(seed=seed, zone=zone, block_xy=np.array([0.2, 0.0]))
        np.testing.assert_array_equal(sim.goal_pos[:2], reset_goal_xy(seed, zone))
        sim.reset(seed=seed, zone=zone)
        np.testing.assert_array_equal(sim.goal_pos[:2], reset_goal_xy(seed, zone))


def test_a_snapshot_names_a_field_the_package_lost(sim, monkeypatch):
    sim.reset(seed=0, zone="near_left")
    monkeypatch.delattr(sim._u, "_z_init")
    with pytest.raises(SigmaError, match="'_z_init'"):
        sim.snapshot()


def test_simplified_meshes_change_neither_physics_nor_the_picture(sim, monkeypatch):
    """The arm is drawn with far fewer triangles (the speed-up), the trajectory is bit-identical (physics never
    reads the face list) and the frames differ from full-detail ones by well under one grey level on average."""
    monkeypatch.setattr(so101, "simplify_render_meshes", lambda model, cell: None)
    with SO101Sim(image_size=64) as full:
        s_full, a_full, f_full = rollout(full, 5, "far_right", 25)
        faces_full = int(full._u.model.mesh_facenum.sum())
    s, a, f = rollout(sim, 5, "far_right", 25)
    assert int(sim._u.model.mesh_facenum.sum()) < faces_full / 5
    np.testing.assert_array_equal(s, s_full)
    np.testing.assert_array_equal(a, a_full)
    diff = np.abs(f.astype(np.int16) - f_full.astype(np.int16))
    assert diff.mean() < 0.5 and np.percentile(diff, 99) <= 8


def test_explicit_goal_outside_its_zone_is_refused(sim):
    with pytest.raises(SigmaError, match="outside zone"):
        sim.reset(seed=0, zone="near_left", goal_xy=np.array([0.28, -0.12]))
    with pytest.raises(SigmaError, match="unknown zone"):
        sim.reset(seed=0, zone="kitchen")


def test_block_resampling_keeps_distance():
    rng = np.random.default_rng(0)
    goal = np.array([0.2, 0.0])
    for _ in range(100):
        assert np.linalg.norm(resample_block_xy(rng, goal) - goal) >= MIN_GOAL_DISTANCE


def test_render_failure_names_the_debian_packages():
    class NoGL:
        def render(self):
            raise RuntimeError("Cannot initialize a EGL device display")

    with pytest.raises(SigmaError, match="libegl1") as err:
        probe_render(NoGL())
    assert "libosmesa6" in str(err.value) and "EGL device" in str(err.value)


def test_bad_image_size_is_refused():
    with pytest.raises(SigmaError, match="image size"):
        SO101Sim(image_size=63)
