"""The offline replay keeps the paper's protocol: full windows only, even when prep padded the episode ends."""

from __future__ import annotations

import json

import numpy as np

from sigma_vla.data.schema import SPLIT_CODES
from sigma_vla.data.shards import write_shard
from sigma_vla.evaluation.offline import load_eval_data


def test_padded_windows_are_left_out_of_the_replay(tmp_path):
    n = 6
    pad = np.array([0, 0, 0, 1, 5, 0])
    write_shard(tmp_path / "shard_00000.safetensors", {
        "robot_state": np.zeros((n, 3), np.float32), "gt_action_vector": np.zeros((n, 2), np.float32),
        "base_action_vector": np.zeros((n, 2), np.float32), "base_action_chunk": np.zeros((n, 1, 2), np.float32),
        "base_action_trajectory": np.zeros((n, 1, 2), np.float32), "frame_index": np.arange(n),
        "split": np.full(n, SPLIT_CODES["test"]), "pad_steps": pad})
    (tmp_path / "meta.json").write_text(json.dumps({"status": "complete", "tasks": ["x"], "state_dim": 3,
                                                     "action_dim": 2, "params": {}, "normalization": {}}))
    data, _ = load_eval_data(tmp_path, "test")
    assert data["frame_index"].tolist() == [0, 1, 2, 5]
