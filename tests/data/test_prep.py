"""Reading LeRobot v2.1 / v3.0 datasets with real videos, and prep's windows, splits, resume and parallelism."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sigma_vla.data import prep as prep_mod
from sigma_vla.data.lerobot import LeRobotDataset
from sigma_vla.data.prep import PrepConfig, run_prep
from sigma_vla.data.schema import SAMPLE_KEYS, SPLIT_CODES
from sigma_vla.data.shards import ShardDataset, load_shards, shard_paths
from sigma_vla.data.validate import validate_dataset
from tests.data.minidataset import TASKS, frame_level, write_mini_dataset

LENGTHS = (24, 30, 12, 27)


@pytest.fixture(scope="module", params=["v3.0", "v2.1"])
def mini(request, tmp_path_factory):
    return write_mini_dataset(tmp_path_factory.mktemp(request.param) / "ds", request.param, LENGTHS)


def test_reads_metadata_and_columns(mini):
    ds = LeRobotDataset(mini)
    assert [e.length for e in ds.episodes] == list(LENGTHS)
    assert ds.tasks == {0: TASKS[0], 1: TASKS[1]}
    assert ds.camera_keys == ["observation.images.front"]
    cols = ds.episode_columns(ds.episodes[1])
    assert cols["state"].shape == (30, 3) and cols["action"].shape == (30, 2)
    np.testing.assert_array_equal(cols["frame_index"], np.arange(30))
    assert validate_dataset(ds) == []


def test_prep_windows_match_the_episode(mini, tmp_path):
    cfg = PrepConfig(horizon=8, chunk=3, image_size=16, shard_size=10, split="train:0.5,val:0.25,test:0.25")
    meta = run_prep(mini, tmp_path / "s", cfg, progress=False)
    data = load_shards(tmp_path / "s")
    assert set(SAMPLE_KEYS) <= set(data)
    n = sum(max(0, length - 8 + 1) for length in LENGTHS)
    assert meta["num_samples"] == n == len(data["split"])
    assert data["vision_inputs"].shape == (n, 1, 3, 16, 16) and data["vision_inputs"].dtype == torch.uint8
    assert data["gt_action_trajectory"].shape == (n, 8, 2) and data["gt_action_chunk"].shape == (n, 3, 2)
    ds = LeRobotDataset(mini)
    for i in [0, 7, n // 2, n - 1]:
        ep, start = int(data["episode_index"][i]), int(data["frame_index"][i])
        cols = ds.episode_columns(ds.episodes[ep])
        np.testing.assert_array_equal(data["gt_action_trajectory"][i].numpy(), cols["action"][start:start + 8])
        np.testing.assert_array_equal(data["gt_action_chunk"][i].numpy(), cols["action"][start:start + 3])
        np.testing.assert_array_equal(data["robot_state"][i].numpy(), cols["state"][start])
        norms = np.linalg.norm(cols["action"][start:start + 8], axis=1)
        assert float(data["avg_action_l2"][i]) == pytest.approx(norms.mean(), rel=1e-5)
        assert float(data["max_action_l2"][i]) == pytest.approx(norms.max(), rel=1e-5)
        # the decoded frame is the one at the window start (flat gray level encodes the frame)
        level = data["vision_inputs"][i].float().mean().item()
        assert abs(level - frame_level(ep, start)) < 4, (ep, start, level)
    # splits are by episode, never by window
    for ep in set(data["episode_index"].tolist()):
        assert len(set(data["split"][data["episode_index"] == ep].tolist())) == 1
    assert meta["episodes"]["per_split"] == {"train": 2, "val": 1, "test": 1, "base": 0}
    assert len(meta["normalization"]["action"]["mean"]) == 2


def test_av1_video_is_decoded(tmp_path):
    root = write_mini_dataset(tmp_path / "av1", "v3.0", (12, 10), size=64, codec="av1")
    meta = run_prep(root, tmp_path / "s", PrepConfig(horizon=4, chunk=2, image_size=8), progress=False)
    data = load_shards(tmp_path / "s")
    assert meta["num_samples"] == 9 + 7
    i = 12  # second episode, window start 3
    assert int(data["episode_index"][i]) == 1 and int(data["frame_index"][i]) == 3
    assert abs(data["vision_inputs"][i].float().mean().item() - frame_level(1, 3)) < 4


def test_min_action_norm_drops_static_windows(mini, tmp_path):
    full = run_prep(mini, tmp_path / "a", PrepConfig(horizon=8, state_only=True), progress=False)
    data = load_shards(tmp_path / "a")
    threshold = float(np.median(data["avg_action_l2"].numpy()))
    cut = run_prep(mini, tmp_path / "b", PrepConfig(horizon=8, state_only=True, min_action_norm=threshold),
                   progress=False)
    kept = load_shards(tmp_path / "b")["avg_action_l2"]
    assert (kept >= threshold).all()
    assert cut["num_samples"] + cut["windows"]["windows_dropped_static"] == full["num_samples"]


class Killed(Exception):
    pass


def test_killed_run_resumes_to_identical_shards(mini, tmp_path, monkeypatch):
    cfg = PrepConfig(horizon=8, chunk=3, image_size=16, shard_size=7)
    run_prep(mini, tmp_path / "whole", cfg, progress=False)
    real_write, calls = prep_mod.ShardWriter._flush, []

    def dying_flush(self, n):
        if len(calls) == 3:
            raise Killed()
        calls.append(n)
        real_write(self, n)

    monkeypatch.setattr(prep_mod.ShardWriter, "_flush", dying_flush)
    with pytest.raises(Killed):
        run_prep(mini, tmp_path / "resumed", cfg, progress=False)
    assert len(shard_paths(tmp_path / "resumed")) == 3
    assert json.loads((tmp_path / "resumed/meta.json").read_text())["status"] == "in_progress"
    monkeypatch.setattr(prep_mod.ShardWriter, "_flush", real_write)
    run_prep(mini, tmp_path / "resumed", cfg, progress=False)
    whole, resumed = shard_paths(tmp_path / "whole"), shard_paths(tmp_path / "resumed")
    assert [p.name for p in whole] == [p.name for p in resumed]
    for a, b in zip(whole, resumed):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_workers_give_identical_shards(mini, tmp_path):
    cfg = PrepConfig(horizon=8, chunk=3, image_size=16, shard_size=16)
    run_prep(mini, tmp_path / "one", cfg, workers=1, progress=False)
    run_prep(mini, tmp_path / "two", cfg, workers=2, progress=False)
    for a, b in zip(shard_paths(tmp_path / "one"), shard_paths(tmp_path / "two"), strict=True):
        assert a.read_bytes() == b.read_bytes()


def test_shard_dataset_filters_split(mini, tmp_path):
    run_prep(mini, tmp_path / "s", PrepConfig(horizon=8, state_only=True), progress=False)
    train = ShardDataset(tmp_path / "s", split="train")
    assert len(train) > 0 and all(int(train[i]["split"]) == SPLIT_CODES["train"] for i in range(len(train)))
    assert train.tasks == TASKS


def test_real_fixture_state_only(tmp_path):
    from tests.conftest import FIXTURE

    meta = run_prep(FIXTURE, tmp_path / "s", PrepConfig(state_only=True), progress=False)
    assert meta["num_samples"] == 1492 - 4 * 15
    assert meta["state_dim"] == 6 and meta["cameras"] == []
    assert ShardDataset(tmp_path / "s")[0]["vision_inputs"].shape == (0, 3, 128, 128)  # 640 x 480, capped


def test_the_image_size_defaults_to_the_recordings_own(tmp_path):
    """--image-size used to default to 128 px and upscale a 64 px recording silently."""
    root = write_mini_dataset(tmp_path / "ds", "v3.0", (8, 8), size=16)
    meta = run_prep(root, tmp_path / "s", PrepConfig(horizon=4, chunk=2), progress=False)
    assert meta["params"]["image_size"] == 16
    assert load_shards(tmp_path / "s")["vision_inputs"].shape[1:] == (1, 3, 16, 16)
    assert run_prep(root, tmp_path / "s", PrepConfig(horizon=4, chunk=2), progress=False)["status"] == "complete"


def test_the_recordings_size_is_read_from_info_json_and_a_larger_size_warns(real_v30):
    ds = LeRobotDataset(real_v30)
    assert [ds.frame_size(k) for k in ds.camera_keys] == [(480, 640), (480, 640)]
    assert prep_mod.frame_side(ds) == 480  # the shorter side: no axis is upscaled
    assert prep_mod.with_image_size(ds, prep_mod.PrepConfig()).image_size == 128  # the default stays at most 128
    assert prep_mod.upscale_warning(ds, 480) is None and prep_mod.upscale_warning(ds, None) is None
    line = prep_mod.upscale_warning(ds, 512)
    assert "upscaled" in line and "observation.images.front 480x640" in line and "\n" not in line
    info = json.loads((real_v30 / "meta/info.json").read_text())  # a recording that lists channels first
    info["features"]["observation.images.top"].update(shape=[3, 240, 320], names=["channels", "height", "width"])
    (real_v30 / "meta/info.json").write_text(json.dumps(info))
    ds = LeRobotDataset(real_v30)
    assert ds.frame_size("observation.images.top") == (240, 320) and prep_mod.frame_side(ds) == 240


def test_held_out_template_episodes_only_in_test():
    from sigma_vla.data.windows import assign_splits

    fractions = {"base": 0.3, "train": 0.5, "val": 0.1, "test": 0.1}
    splits = assign_splits(list(range(40)), fractions, seed=3, held_out={1, 5, 9, 33})
    assert all(splits[e] == "test" for e in (1, 5, 9, 33))
    rest = [s for e, s in splits.items() if e not in (1, 5, 9, 33)]
    assert {s: rest.count(s) for s in fractions} == {"base": 11, "train": 18, "val": 4, "test": 3}


def test_pad_end_windows_start_at_every_frame(mini, tmp_path):
    """--pad-end: one window per frame; actions past the end repeat the episode's last action; pad_steps counts them."""
    meta = run_prep(mini, tmp_path / "s", PrepConfig(horizon=8, chunk=3, state_only=True, pad_end=True),
                    progress=False)
    data = load_shards(tmp_path / "s")
    assert meta["num_samples"] == sum(LENGTHS)
    ds = LeRobotDataset(mini)
    ep = int(data["episode_index"][-1])
    actions = ds.episode_columns(ds.episodes[ep])["action"]
    last = len(actions) - 1
    rows = torch.nonzero(data["episode_index"] == ep).squeeze(1)
    np.testing.assert_array_equal(data["frame_index"][rows].numpy(), np.arange(len(actions)))
    end = rows[-3]  # window starting 3 frames before the end: 3 real actions, 5 repeats of the last
    assert int(data["pad_steps"][end]) == 5 and int(data["pad_steps"][rows[0]]) == 0
    np.testing.assert_array_equal(data["gt_action_trajectory"][end].numpy(),
                                  actions[[last - 2, last - 1, last] + [last] * 5])


def test_base_task_episodes_form_the_base_split(mini, tmp_path):
    """--base-task: the episodes recorded for the base go to base, and only they; the rest are cut as before."""
    ds = LeRobotDataset(mini)
    meta = run_prep(mini, tmp_path / "s", PrepConfig(horizon=8, state_only=True, base_task=TASKS[0],
                                                      split="train:0.5,val:0.25,test:0.25"), progress=False)
    for e in ds.episodes:
        assert (meta["episode_splits"][str(e.index)] == "base") == (TASKS[0] in e.tasks)
    assert meta["episodes"]["per_split"]["base"] >= 1


def test_unknown_base_task_is_a_one_line_error(mini, tmp_path):
    from sigma_vla.errors import SigmaError

    with pytest.raises(SigmaError, match="no episode has the task"):
        run_prep(mini, tmp_path / "s", PrepConfig(horizon=8, state_only=True, base_task="nobody said this"),
                 progress=False)
    assert not (tmp_path / "s").exists()


def test_twins_of_evaluated_episodes_stay_out_of_the_base_split(tmp_path):
    """`record --paired`: a base twin shares its zone episode's seed; the twin of a val or test episode is left
    out (the base must not see a block position the evaluation holds out), the twin of a train episode is base."""
    from types import SimpleNamespace

    from sigma_vla.data.prep import episode_splits

    generic, zone = "pick up the block", "place it far left"
    eps = []
    for seed in range(40):  # zone episode 2 * seed, its twin 2 * seed + 1
        eps.append(SimpleNamespace(index=2 * seed, tasks=[zone], extra={"sigma/seed": seed,
                                                                         "sigma/held_out": seed % 8 == 0}))
        eps.append(SimpleNamespace(index=2 * seed + 1, tasks=[generic], extra={"sigma/seed": seed}))
    eps.append(SimpleNamespace(index=80, tasks=[generic], extra={}))  # a base episode with no twin stays base
    splits = episode_splits(SimpleNamespace(episodes=eps, root=tmp_path),
                            PrepConfig(split="train:0.6,val:0.2,test:0.2", base_task=generic))
    for seed in range(40):
        twin_in_base = splits.get(2 * seed + 1) == "base"
        assert twin_in_base == (splits[2 * seed] == "train"), seed
        assert splits.get(2 * seed + 1) in ("base", None)
    assert splits[80] == "base" and {s for e, s in splits.items() if e % 2 == 0 and e < 80} == {"train", "val", "test"}
