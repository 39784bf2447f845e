"""Shard batch -> model batch (processing/transforms.py) and the action triple (processing/action_triple.py), shared by
training, inference and evaluation."""

from __future__ import annotations

import json

import pytest
import torch

from sigma_vla.errors import SigmaError
from sigma_vla.processing.action_triple import ActionTriple, BASE_ACTION, GT_ACTION, has_actions
from sigma_vla.processing.transforms import BatchTransform, Normalizer


STATS = {"robot_state": {"mean": [1.0, 2.0], "std": [2.0, 4.0]}, "action": {"mean": [10.0], "std": [5.0]}}


def test_transform_normalises_and_leaves_base_actions():
    t = BatchTransform(Normalizer.from_meta({"normalization": STATS}))
    batch = {"robot_state": torch.tensor([[3.0, 6.0]]), "gt_action_vector": torch.tensor([[20.0]]),
             "gt_action_chunk": torch.full((1, 3, 1), 15.0), "gt_action_trajectory": torch.zeros(1, 6, 1),
             "base_action_vector": torch.tensor([[0.5]]), "base_action_chunk": torch.zeros(1, 3, 1),
             "base_action_trajectory": torch.zeros(1, 6, 1)}
    out = t(batch)
    assert out["robot_state"].tolist() == [[1.0, 1.0]] and out["gt_action_vector"].tolist() == [[2.0]]
    assert out["gt_action_chunk"].unique().tolist() == [1.0] and out["base_action_vector"].tolist() == [[0.5]]
    assert has_actions(out) and not has_actions({"robot_state"})
    with pytest.raises(SigmaError, match="only some base action keys"):
        has_actions({"base_action_vector"})
    with pytest.raises(SigmaError, match="normalization"):
        Normalizer.from_meta({})


def test_normalizer_round_trips_through_json_bit_for_bit():
    """A run can carry its own statistics: to_dict is JSON, and from_dict gives back the same float32 tensors."""
    g = torch.Generator().manual_seed(0)
    norm = Normalizer(torch.randn(5, generator=g), torch.rand(5, generator=g) + 0.1, torch.randn(3, generator=g),
                      torch.rand(3, generator=g) + 0.1)
    back = Normalizer.from_dict(json.loads(json.dumps(norm.to_dict())))
    for a, b in zip((norm.state_mean, norm.state_std, norm.action_mean, norm.action_std),
                    (back.state_mean, back.state_std, back.action_mean, back.action_std)):
        assert b.dtype == torch.float32 and torch.equal(a, b)
    assert Normalizer.from_dict(STATS).to_dict() == STATS


def test_action_triple_reads_and_writes_batches_by_prefix():
    chunk = torch.arange(2 * 6 * 1, dtype=torch.float32).view(2, 6, 1)  # (B, T, Da)
    base = ActionTriple.from_chunk(chunk, 3)
    assert base.vector.tolist() == [[0.0], [6.0]] and base.chunk.shape == (2, 3, 1) and base.trajectory is chunk
    batch = base.as_dict(BASE_ACTION)
    assert sorted(batch) == ["base_action_chunk", "base_action_trajectory", "base_action_vector"]
    assert ActionTriple.from_batch(batch, BASE_ACTION) == base
    with pytest.raises(KeyError, match="gt_action_vector"):
        ActionTriple.from_batch(batch, GT_ACTION)
    total = base.plus(base.map(torch.ones_like))  # scale by scale, not tuple concatenation
    assert len(total) == 3 and total.vector.tolist() == [[1.0], [7.0]]
