"""`sigma record` end to end: a 2-episode recording at 64 px through the CLI, determinism, discards."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest

import sigma_vla.sim.record as rec
from sigma_vla.errors import SigmaError
from sigma_vla.sim.instructions import TEMPLATES_BY_ID, ZONES
from sigma_vla.sim.record import RecordConfig, episode_seed, plan_instruction, record_dataset
from sigma_vla.sim.so101 import STATE_NAMES
from tests.conftest import run_cli

CAM = "observation.images.front"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rec") / "ds"
    config = RecordConfig(episodes=2, image_size=64, seed=3, codec="h264")
    summary = record_dataset(config, out, progress=False)
    assert summary.kept == 2 and summary.discarded == 0 and summary.path == out
    return out


def test_recorded_dataset_is_consistent(recorded):
    info = json.loads((recorded / "meta/info.json").read_text())
    data = pq.read_table(recorded / "data/chunk-000/file-000.parquet")
    eps = pq.read_table(recorded / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert info["total_episodes"] == len(eps) == 2 and info["total_frames"] == len(data)
    state = info["features"]["observation.state"]
    assert state["shape"] == [len(STATE_NAMES)] and state["names"] == list(STATE_NAMES)
    assert info["features"]["action"]["shape"] == [4] and info["fps"] == 10
    for e in eps:
        assert e["sigma/seed"] == episode_seed(3, e["episode_index"])
        t = TEMPLATES_BY_ID[e["sigma/template_id"]]
        assert e["tasks"] == [t.text] and e["sigma/zone"] == t.zone and e["sigma/held_out"] == t.held_out
        assert e["sigma/instruction_kind"] == t.kind
        assert ZONES[e["sigma/zone"]].contains(np.array(e["sigma/goal_pos"][:2]), margin=1e-6)
    with av.open(str(recorded / f"videos/{CAM}/chunk-000/file-000.mp4")) as c:
        times = [f.time for f in c.decode(c.streams.video[0])]
    assert len(times) == len(data)
    ts = np.array(data.column("timestamp").to_pylist())
    starts = np.concatenate([[e[f"videos/{CAM}/from_timestamp"]] * e["length"] for e in eps])
    assert np.abs(np.array(times) - (starts + ts)).max() < 0.05


def test_recording_is_deterministic(recorded):
    """Replaying a recorded seed in a fresh simulator reproduces its actions and states exactly."""
    data = pq.read_table(recorded / "data/chunk-000/file-000.parquet")
    n0 = pq.read_table(recorded / "meta/episodes/chunk-000/file-000.parquet").column("length")[0].as_py()
    from sigma_vla.sim.so101 import SO101Sim

    with SO101Sim(image_size=64) as sim:
        again = rec.run_episode(sim, base_seed=3, attempt=0)
    np.testing.assert_array_equal(again.action, np.array(data.column("action").to_pylist()[:n0], np.float32))
    np.testing.assert_array_equal(again.state, np.array(data.column("observation.state").to_pylist()[:n0],
                                                         np.float32))
    with av.open(str(recorded / f"videos/{CAM}/chunk-000/file-000.mp4")) as c:
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])][:n0])
    assert np.abs(decoded.astype(int) - again.frames.astype(int)).mean() < 6  # lossy codec, same scene


def test_plan_instruction_is_a_function_of_the_seed():
    assert plan_instruction(42) == plan_instruction(42)
    assert len({plan_instruction(s).zone for s in range(60)}) == 6


def test_action_noise_fades_as_the_expert_converges_and_labels_stay_clean():
    rng = np.random.default_rng(0)
    still = np.array([0.0, 0.0, 0.0, 1.0], np.float32)  # a hold step (jaw closing): no motion, no noise
    np.testing.assert_array_equal(rec.perturb(still, 0.5, rng), still)
    moving = np.array([1.0, -0.4, 0.2, -1.0], np.float32)
    noisy = np.stack([rec.perturb(moving, 0.5, rng) for _ in range(2000)])
    assert noisy[:, 3].tolist() == [-1.0] * 2000  # the grasp command is never perturbed
    assert abs(noisy[:, :3].std(axis=0).mean() - 0.5) < 0.05 and abs((noisy[:, :3] - moving[:3]).mean()) < 0.05
    with rec.SO101Sim(image_size=16) as sim:
        clean = rec.run_episode(sim, base_seed=3, attempt=1)
        again = rec.run_episode(sim, base_seed=3, attempt=1, action_noise=0.3)
    assert clean.success and again.success and not np.array_equal(clean.state, again.state)
    # the labels are the expert's own (clean) actions in the states the noise led to
    assert np.abs(again.action[:, :3]).max() <= 1.0 + 1e-6


def test_generic_episode_carries_the_block_to_the_default_goal():
    """--generic-episodes: the base's demonstrations name no zone and end at the default goal, in no zone."""
    from sigma_vla.sim.instructions import DEFAULT_GOAL, GENERIC_INSTRUCTION, zone_of
    with rec.SO101Sim(image_size=16) as sim:
        r = rec.run_episode(sim, base_seed=3, attempt=0, generic=True)
    assert r.success and r.instruction.text == GENERIC_INSTRUCTION and r.instruction.zone == "default"
    assert DEFAULT_GOAL.contains(r.goal_pos[:2]) and zone_of(r.goal_pos[:2], margin=0.015) is None
    assert rec.to_record(r).extra["sigma/zone"] == "default"


def test_paired_twin_repeats_the_zone_episode_until_the_carry():
    """--paired: the twin starts with the block where the zone episode had it, and the expert's approach, grasp and
    lift are the same actions on the same frames; only the carry (to the default goal) differs."""
    from sigma_vla.sim.instructions import GENERIC_INSTRUCTION
    with rec.SO101Sim(image_size=32) as sim:
        zone, twin = rec.run_attempt(sim, 3, 0, rec.MAX_STEPS, generic=False, action_noise=0.0, paired=True)
    assert zone.success and twin.success and zone.seed == twin.seed
    assert twin.instruction.text == GENERIC_INSTRUCTION and zone.instruction.zone != "default"
    np.testing.assert_array_equal(twin.block_xy, zone.block_xy)
    n = min(zone.steps, twin.steps)
    same = np.all(zone.action[:n] == twin.action[:n], axis=1)
    carry = int(np.argmin(same))  # the first step that differs
    assert not same.all() and carry >= 25  # measured 31-34 of 43-50 steps
    np.testing.assert_array_equal(zone.frames[:carry], twin.frames[:carry])
    np.testing.assert_array_equal(zone.state[:carry], twin.state[:carry])


def test_snapshot_twin_is_the_twin_resimulated_from_reset(monkeypatch):
    """run_pair copies the twin's shared prefix and simulates only its carry, from a snapshot: the twin is the one
    re-simulated from reset, array for array, with action noise too; a zone episode cut before its carry (max_steps
    20) has no branch and its twin is re-simulated."""
    def assert_same(a: rec.EpisodeResult, b: rec.EpisodeResult) -> None:
        assert (a.success, a.steps, a.instruction, a.seed) == (b.success, b.steps, b.instruction, b.seed)
        for name in ("goal_pos", "block_xy", "state", "action", "frames"):
            x, y = getattr(a, name), getattr(b, name)
            assert x.dtype == y.dtype and np.array_equal(x, y), name

    with rec.SO101Sim(image_size=32) as sim:
        with monkeypatch.context() as m:  # the snapshot path must not fall back on re-simulation
            m.setattr(rec, "run_episode", lambda *a, **k: pytest.fail("twin re-simulated"))
            pairs = {(1, 0.0): rec.run_pair(sim, 3, 1), (2, 0.3): rec.run_pair(sim, 3, 2, action_noise=0.3)}
        for (attempt, noise), pair in pairs.items():
            zone = rec.run_episode(sim, 3, attempt, action_noise=noise)
            twin = rec.run_episode(sim, 3, attempt, generic=True, action_noise=noise, block_xy=zone.block_xy)
            assert pair[0].success and pair[1].success
            assert_same(pair[0], zone)
            assert_same(pair[1], twin)
        short = rec.run_pair(sim, 3, 1, max_steps=20)
        zone = rec.run_episode(sim, 3, 1, 20)
        assert [r.steps for r in short] == [20, 20]
        assert_same(short[0], zone)
        assert_same(short[1], rec.run_episode(sim, 3, 1, 20, True, block_xy=zone.block_xy))


def test_a_pair_is_kept_whole_or_not_at_all(tmp_path, monkeypatch):
    pairs = [[fake_result(0, True), fake_result(0, True)], [fake_result(1, True), fake_result(1, False)]]
    monkeypatch.setattr(rec, "iter_attempts", lambda cfg: iter(pairs))
    s = record_dataset(RecordConfig(episodes=2, image_size=16, codec="h264", paired=True), tmp_path / "ds",
                       progress=False)
    assert (s.kept, s.discarded, s.discarded_seeds) == (2, 2, (1, 1))


def fake_result(attempt: int, success: bool, n: int = 4) -> rec.EpisodeResult:
    ins = plan_instruction(attempt)
    return rec.EpisodeResult(attempt, attempt, success, n, ins, np.array([0.2, 0.0, 0.02]), np.zeros(2),
                             np.zeros((n, len(STATE_NAMES)), np.float32), np.zeros((n, 4), np.float32),
                             np.zeros((n, 16, 16, 3), np.uint8))


def test_only_successful_episodes_are_kept(tmp_path, monkeypatch):
    outcomes = [True, False, True, False]
    monkeypatch.setattr(rec, "iter_attempts", lambda cfg: iter(
        [[fake_result(i, ok)] for i, ok in enumerate(outcomes)]))
    s = record_dataset(RecordConfig(episodes=4, image_size=16, codec="h264"), tmp_path / "ds", progress=False)
    assert (s.kept, s.discarded, s.frames, s.discarded_seeds) == (2, 2, 8, (1, 3))
    eps = pq.read_table(tmp_path / "ds/meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [e["sigma/seed"] for e in eps] == [0, 2] and [e["episode_index"] for e in eps] == [0, 1]


def test_all_failed_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(rec, "iter_attempts", lambda cfg: iter([[fake_result(0, False)]]))
    with pytest.raises(SigmaError, match="all 1 episodes failed"):
        record_dataset(RecordConfig(episodes=1, image_size=16), tmp_path / "ds", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_cli_records_and_refuses_a_non_empty_out(tmp_path, capsys):
    out = tmp_path / "cli"
    code, stdout, _ = run_cli(["record", "--episodes", "1", "--out", out, "--image-size", "32", "--seed", "5",
                               "--codec", "h264", "--workers", "1"], capsys)
    assert code == 0 and "kept 1" in stdout and "discarded 0" in stdout and str(out) in stdout
    code, _, err = run_cli(["record", "--episodes", "1", "--out", out], capsys)
    assert code == 2 and "not empty" in err and str(out) in err
    code, _, err = run_cli(["record", "--episodes", "0", "--out", tmp_path / "x"], capsys)
    assert code == 2 and "episodes" in err


@pytest.mark.slow
def test_two_workers_give_identical_output(tmp_path):
    cfg = dict(episodes=4, image_size=64, seed=1, codec="h264")
    a = record_dataset(RecordConfig(workers=1, **cfg), tmp_path / "w1", progress=False)
    b = record_dataset(RecordConfig(workers=2, **cfg), tmp_path / "w2", progress=False)
    for rel in ("data/chunk-000/file-000.parquet", "meta/episodes/chunk-000/file-000.parquet",
                "meta/tasks.parquet"):
        assert pq.read_table(a.path / rel).equals(pq.read_table(b.path / rel)), rel
    assert (a.path / "meta/stats.json").read_text() == (b.path / "meta/stats.json").read_text()


def test_worker_init_failure_surfaces_instead_of_respawning(monkeypatch):
    def broken(**kwargs):
        raise SigmaError("no GL here")

    from sigma_vla import errors

    monkeypatch.setattr(rec, "SO101Sim", broken)
    monkeypatch.setattr(errors, "_START_FAILURE", [])
    errors.start_worker(rec._init_worker, 64, 10)
    with pytest.raises(SigmaError, match="no GL here"):
        rec._worker_attempt((0, 0, 10, False, 0.0, False))
