"""The paper's .pt shards are read only through torch.load(weights_only=True), and `sigma eval` runs on them."""

from __future__ import annotations

import json

import pytest
import torch

from sigma_vla.data.shards import load_shards
from sigma_vla.errors import SigmaError
from sigma_vla.evaluation.pt_shards import load_pt_shards
from tests.conftest import run_cli


def _sample(i: int, text: str) -> dict:
    return {"robot_state": torch.randn(6), "gt_action_vector": torch.randn(6), "gt_action_chunk": torch.randn(8, 6),
            "gt_action_trajectory": torch.randn(16, 6), "avg_action_l2": torch.tensor(1.0), "text": text}


def test_reads_paper_shards(tmp_path):
    torch.save([_sample(i, "pick") for i in range(3)], tmp_path / "shard_00000.pt")
    torch.save([_sample(i, "place") for i in range(2)], tmp_path / "shard_00001.pt")
    data, meta = load_pt_shards(tmp_path)
    assert data["gt_action_trajectory"].shape == (5, 16, 6)
    assert meta["tasks"] == ["pick", "place"] and data["task_index"].tolist() == [0, 0, 0, 1, 1]
    assert len(meta["normalization"]["action"]["mean"]) == 6
    # no episode_index in the samples: each sample is its own episode, at position 0
    assert data["episode_index"].tolist() == [0, 1, 2, 3, 4] and data["frame_index"].tolist() == [0] * 5


def test_frame_index_is_the_position_within_the_episode(tmp_path):
    samples = [{**_sample(i, "pick"), "episode_index": ep} for i, ep in enumerate([7, 7, 3, 7, 3])]
    torch.save(samples, tmp_path / "shard_00000.pt")
    data, _ = load_pt_shards(tmp_path)
    assert data["frame_index"].tolist() == [0, 1, 0, 2, 1]
    torch.save([{**s, "frame_index": 10 + i} for i, s in enumerate(samples)], tmp_path / "shard_00000.pt")
    assert load_pt_shards(tmp_path)[0]["frame_index"].tolist() == [10, 11, 12, 13, 14]  # the samples' own


def test_bad_sample_names_file_and_field(tmp_path):
    samples = [_sample(0, "pick"), {**_sample(1, "pick"), "gt_action_chunk": torch.randn(7, 6)}]
    torch.save(samples, tmp_path / "shard_00000.pt")
    with pytest.raises(SigmaError, match="shard_00000.pt: field 'gt_action_chunk': shapes differ"):
        load_pt_shards(tmp_path)
    torch.save([{**_sample(0, "pick"), "episode_index": 1}, {**_sample(1, "x"), "episode_index": "seven"}],
               tmp_path / "shard_00000.pt")
    with pytest.raises(SigmaError, match="field 'episode_index'"):
        load_pt_shards(tmp_path)


class Payload:
    """Stands in for a malicious object: unpickling it would run arbitrary code."""


def test_refuses_arbitrary_objects(tmp_path):
    torch.save([Payload()], tmp_path / "shard_00000.pt")
    with pytest.raises(SigmaError, match="refusing to unpickle"):
        load_pt_shards(tmp_path)


def test_sigma_eval_runs_on_paper_pt_shards(tiny_run, tmp_path, capsys, one_torch_thread):
    """The whole command on well-formed paper-layout shards (no frame_index, as the paper writes them)."""
    shards, run = tiny_run
    data = load_shards(shards)
    tasks = json.loads((shards / "meta.json").read_text())["tasks"]
    keys = ["robot_state", "gt_action_vector", "gt_action_chunk", "gt_action_trajectory", "vision_inputs",
            "base_action_vector", "base_action_chunk", "base_action_trajectory"]
    samples = [{**{k: data[k][i] for k in keys}, "text": tasks[int(data["task_index"][i])],
                "episode_index": int(data["episode_index"][i])} for i in range(len(data["split"]))]
    pt = tmp_path / "pt"
    pt.mkdir()
    torch.save(samples[:12], pt / "shard_00000.pt")
    torch.save(samples[12:], pt / "shard_00001.pt")
    code, out, err = run_cli(["eval", run, pt, "--out", tmp_path / "eval", "--bootstrap", "20"], capsys)
    assert code == 0, err
    assert "sigma_adapter" in out and "Traceback" not in err
    report = json.loads((tmp_path / "eval/sigma_eval_report.json").read_text())
    assert set(report["groups"]) >= {"base_untuned", "sigma", "sigma_adapter"}
    assert report["groups"]["sigma"]["avg_mse_traj"] > 0
