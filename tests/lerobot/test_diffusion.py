"""LeRobot's Diffusion Policy (random weights) as Sigma's frozen base. It conditions on n_obs_steps observations
kept in its queues; LeRobotPolicyBase fills them with the shard's single frame, which a direct call cannot do."""

from __future__ import annotations

import pytest
import torch

from sigma_vla.data.shards import read_meta
from tests.lerobot.conftest import lerobot_base, policy_features, shard_batch

pytest.importorskip("lerobot", reason="LeRobot is not installed here: `make test-lerobot` builds .venv-lerobot")
pytest.importorskip("diffusers", reason="Diffusion needs lerobot[diffusion] (diffusers)")
pytestmark = pytest.mark.lerobot


def make_diffusion(meta: dict, **features):
    """A small Diffusion Policy: a 2-level U-Net, 4 denoising steps, n_obs_steps 2, 8 actions per chunk."""
    from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy

    torch.manual_seed(0)
    config = DiffusionConfig(**policy_features(meta, **features), pretrained_backbone_weights=None, device="cpu",
                             use_group_norm=True, crop_shape=None, n_obs_steps=2, horizon=16, n_action_steps=8,
                             down_dims=(32, 64), num_inference_steps=4)
    return DiffusionPolicy(config)


def test_diffusion_predicts_chunks_on_shard_batches(shards):
    meta = read_meta(shards)
    base = lerobot_base(make_diffusion(meta), shards)
    chunk = base.predict_chunk(shard_batch(shards, 4))
    assert chunk.shape == (4, 6, 4) and torch.isfinite(chunk).all()  # (B, T, Da) of its 8 actions
    again = base.predict_chunk(shard_batch(shards, 3))  # another batch size: the queues start afresh
    assert again.shape == (3, 6, 4)


def test_a_direct_call_needs_the_history_the_base_fills(shards):
    """Why LeRobotPolicyBase fills the queues: LeRobot's Diffusion refuses a single-frame batch."""
    meta = read_meta(shards)
    base = lerobot_base(make_diffusion(meta), shards)
    obs = base.preprocess(base.to_lerobot(shard_batch(shards, 2)))
    obs.pop("action", None)
    with pytest.raises((AssertionError, RuntimeError)):
        base.policy.predict_action_chunk(obs)


def test_diffusion_image_size_mismatch_is_one_line(shards):
    from sigma_vla.errors import SigmaError

    meta = read_meta(shards)
    with pytest.raises(SigmaError, match=r"3x32x32 .*declares 3x64x64"):
        lerobot_base(make_diffusion(meta, image_size=64), shards).predict_chunk(shard_batch(shards, 2))
