"""LeRobot's ACT (random weights, no pretrained backbone) as Sigma's frozen base: chunks on our shard batches, base
actions into the shards, Sigma trained on them; features that disagree with the shards are one-line errors."""

from __future__ import annotations

import pytest
import torch

from sigma_vla.bases.actions import write_base_actions
from sigma_vla.data.schema import BASE_ACTION_KEYS
from sigma_vla.data.shards import load_shards, read_meta
from sigma_vla.errors import SigmaError
from tests.lerobot.conftest import lerobot_base, policy_features, shard_batch

pytest.importorskip("lerobot", reason="LeRobot is not installed here: `make test-lerobot` builds .venv-lerobot")
pytestmark = pytest.mark.lerobot


def make_act(meta: dict, chunk_size: int = 10, **features):
    """A small ACT (one encoder and decoder layer, width 64; resnet18 without pretrained weights: offline)."""
    from lerobot.policies.act.configuration_act import ACTConfig
    from lerobot.policies.act.modeling_act import ACTPolicy

    torch.manual_seed(0)
    config = ACTConfig(**policy_features(meta, **features), pretrained_backbone_weights=None, device="cpu",
                       chunk_size=chunk_size, n_action_steps=chunk_size, dim_model=64, n_heads=2,
                       dim_feedforward=128, n_encoder_layers=1, n_decoder_layers=1)
    return ACTPolicy(config)


def test_act_predicts_chunks_on_shard_batches(shards):
    meta = read_meta(shards)
    base = lerobot_base(make_act(meta), shards)
    batch = shard_batch(shards, 4)
    chunk = base.predict_chunk(batch)
    assert chunk.shape == (4, 6, 4) and torch.isfinite(chunk).all()  # (B, T, Da), cut from ACT's 10 steps
    assert torch.equal(base.predict_chunk(batch), chunk)  # eval mode: deterministic


def test_act_base_actions_then_sigma_trains_on_them(shards, tmp_path):
    from sigma_vla.training.run import train_sigma

    meta = read_meta(shards)
    done = write_base_actions(shards, lerobot_base(make_act(meta), shards), "act-random-weights", batch_size=8)
    assert done["written"] == 2 and done["samples"] == 16
    data = load_shards(shards, list(BASE_ACTION_KEYS))
    assert data["base_action_trajectory"].shape == (16, 6, 4) and torch.isfinite(data["base_action_trajectory"]).all()
    assert read_meta(shards)["base_actions"]["status"] == "complete"
    result = train_sigma(shards, tmp_path / "run", "tiny", {"steps": 2, "batch_size": 4}, progress=False)
    assert (tmp_path / "run" / "model").is_dir() and result is not None


@pytest.mark.parametrize("features, words", [
    ({"image_size": 96}, ["image size of observation.images.cam0", "3x32x32", "3x96x96", "--image-size 96"]),
    ({"state_dim": 14}, ["state dim", "has 6", "declares 14"]),
    ({"action_dim": 6}, ["action dim", "ours is 4", "declares 6"]),
    ({"cameras": ["observation.images.front"]}, ["cameras", "cam0", "observation.images.front"]),
])
def test_act_features_that_differ_from_the_shards_are_one_line(shards, features, words):
    meta = read_meta(shards)
    with pytest.raises(SigmaError) as err:
        lerobot_base(make_act(meta, **features), shards).predict_chunk(shard_batch(shards, 2))
    message = str(err.value)
    assert "\n" not in message and all(w in message for w in words), message
