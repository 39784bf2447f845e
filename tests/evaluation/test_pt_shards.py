"""The paper's .pt shards are read only through torch.load(weights_only=True)."""

from __future__ import annotations

import pytest
import torch

from sigma_vla.errors import SigmaError
from sigma_vla.evaluation.pt_shards import load_pt_shards


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


class Payload:
    """Stands in for a malicious object: unpickling it would run arbitrary code."""


def test_refuses_arbitrary_objects(tmp_path):
    torch.save([Payload()], tmp_path / "shard_00000.pt")
    with pytest.raises(SigmaError, match="refusing to unpickle"):
        load_pt_shards(tmp_path)
