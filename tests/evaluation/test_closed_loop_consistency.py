"""No train/serve skew: on recorded episodes the rollout path (raw observation -> SigmaPolicy -> raw action) gives
the offline path's actions (shards -> BatchTransform -> predict_chunk -> un-normalise), live frames look like the
recorded ones, and `sigma rollout` gives the same episodes for any number of workers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from sigma_vla.data.prep import PrepConfig, run_prep
from sigma_vla.data.shards import ShardDataset
from sigma_vla.evaluation.rollout import TEMPORAL_ENSEMBLE, RolloutJob, plan_episodes, run_rollouts
from sigma_vla.inference.policy import load_policy
from sigma_vla.processing.transforms import BatchTransform
from sigma_vla.sim.instructions import GENERIC_INSTRUCTION
from sigma_vla.sim.record import RecordConfig, record_dataset
from sigma_vla.sim.so101 import SO101Sim
from sigma_vla.training.run import train_base
from tests.conftest import run_cli

SIDE = 32


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(dataset, shards, base): 3 recorded episodes at 32 px, prepped, a base trained 4 steps on all of them."""
    root = tmp_path_factory.mktemp("loop")
    record_dataset(RecordConfig(episodes=3, image_size=SIDE, seed=5, codec="h264"), root / "ds", progress=False)
    run_prep(root / "ds", root / "shards", PrepConfig(image_size=SIDE, split="train:1.0"), progress=False)
    train_base(root / "shards", root / "base", GENERIC_INSTRUCTION, split="train", steps=4, batch_size=8,
               progress=False)
    return root / "ds", root / "shards", root / "base"


def test_rollout_path_reproduces_offline_actions(trained):
    _, shards, base_dir = trained
    policy = load_policy(base_dir, "base")
    data = ShardDataset(shards, "train")
    idx = torch.arange(0, len(data), 7)  # (N,) windows from every episode, padded ones included
    batch = {k: v[idx] for k, v in data.data.items()}
    offline = policy.norm.unaction(policy.base.predict_chunk(BatchTransform.from_meta(data.meta, None)(batch)))
    for i in range(len(idx)):
        obs = {"observation.state": batch["robot_state"][i].numpy(),
               "observation.images.front": batch["vision_inputs"][i, 0].permute(1, 2, 0).numpy()}
        live = policy.plan(obs, "any words: this base reads its generic instruction").actions  # (C, Da) raw
        np.testing.assert_allclose(live, offline[i, : len(live)].numpy(), rtol=1e-5, atol=1e-5)


def test_live_frames_match_the_recorded_ones(trained):
    """Replaying an episode's recorded actions renders frames within a few levels of the decoded video."""
    dataset, shards, _ = trained
    data = ShardDataset(shards, "train")
    ep = int(data.data["episode_index"][0])
    rows = torch.nonzero(data.data["episode_index"] == ep).squeeze(1)
    episodes = pq.read_table(dataset / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    seed, zone = next((e["sigma/seed"], e["sigma/zone"]) for e in episodes if e["episode_index"] == ep)
    actions = data.data["gt_action_vector"][rows].numpy()  # (F, Da): window starts are consecutive frames
    frames = data.data["vision_inputs"][rows, 0].permute(0, 2, 3, 1).numpy()  # (F, S, S, 3)
    with SO101Sim(image_size=SIDE) as sim:
        obs = sim.reset(seed=seed, zone=zone)
        diffs = []
        for t in range(len(actions)):
            diffs.append(np.abs(obs.image.astype(float) - frames[t].astype(float)).mean())
            obs = sim.step(actions[t]).obs
    assert max(diffs) < 6.0, diffs  # H.264 at 32 px: a few levels of 255 per pixel


def test_rollouts_are_identical_for_any_worker_count(trained, tmp_path):
    _, _, base_dir = trained
    job = RolloutJob(str(base_dir), "base", 1, SIDE, max_steps=12)
    specs = plan_episodes(3, seed=1)
    one = run_rollouts(job, specs, tmp_path / "w1", animations=1, workers=1, progress=False)
    two = run_rollouts(job, specs, tmp_path / "w2", animations=1, workers=2, progress=False)
    assert one["episodes_detail"] == two["episodes_detail"]
    assert (tmp_path / "w2" / "episode_000.gif").is_file()
    assert set(one["by"]) == {"kind", "templates", "zone"} and one["episodes"] == 3


def test_rollout_cli_with_the_users_own_words(trained, tmp_path, capsys):
    _, _, base_dir = trained
    lines = tmp_path / "mine.jsonl"
    lines.write_text('{"zone": "far_left", "text": "over there, far on the left"}\n'
                     '{"zone": "near_right", "text": "by you, on the right", "kind": "implicit"}\n')
    code, out, err = run_cli(["rollout", base_dir, "--policy", "base", "--instructions", lines, "--episodes", "2",
                              "--max-steps", "3", "--animations", "0", "--out", tmp_path / "ro"], capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "ro" / "rollouts.json").read_text())
    assert summary["temporal_ensemble"] == TEMPORAL_ENSEMBLE and summary["n_action_steps"] == 1  # the defaults
    detail = summary["episodes_detail"]
    assert [(d["zone"], d["instruction"], d["kind"]) for d in detail] == [
        ("far_left", "over there, far on the left", "user"), ("near_right", "by you, on the right", "implicit")]
    code, _, err = run_cli(["rollout", base_dir, "--policy", "base", "--instructions", lines, "--episodes", "1",
                            "--max-steps", "3", "--animations", "0", "--out", tmp_path / "ro"], capsys)
    assert code == 0 and "note: replacing the earlier rollout in" in err and "(base, 2 episodes)" in err
    assert json.loads((tmp_path / "ro" / "rollouts.json").read_text())["episodes"] == 1

    lines.write_text('{"zone": "far_left", "text": "ok"}\n{"zone": "moon", "text": "to the moon"}\n')
    code, out, err = run_cli(["rollout", base_dir, "--policy", "base", "--instructions", lines, "--out",
                              tmp_path / "ro2"], capsys)
    assert code == 2 and f"{lines}:2: field 'zone': unknown zone 'moon'" in err and "Traceback" not in err
    lines.write_text('{"zone": "far_left", "text": "ok"}\nnot json\n')
    code, out, err = run_cli(["rollout", base_dir, "--policy", "base", "--instructions", lines, "--out",
                              tmp_path / "ro3"], capsys)
    assert code == 2 and f"{lines}:2: not JSON" in err
    code, out, err = run_cli(["rollout", base_dir, "--policy", "base", "--instruction", "far left", "--out",
                              tmp_path / "ro4"], capsys)
    assert code == 2 and "--zone" in err


def test_a_failed_rollout_leaves_no_directory(trained, tmp_path, capsys):
    _, _, base_dir = trained
    code, _, err = run_cli(["rollout", base_dir, "--policy", "base", "--image-size", "15", "--episodes", "1",
                            "--out", tmp_path / "ro"], capsys)
    assert code == 2 and "field '--image-size'" in err and "Traceback" not in err
    assert not (tmp_path / "ro").exists()
