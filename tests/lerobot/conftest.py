"""Helpers for the tests against real LeRobot code (`make test-lerobot`, .venv-lerobot: LeRobot 0.6.1, Python
3.12, LeRobot's own torch). Policies are built offline with random weights (no Hub, no pretrained backbones) on
miniature shards written by our own shard writer. Nothing here imports lerobot at module level: in an environment
without it, each test module skips itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from sigma_vla.bases.lerobot import LeRobotPolicyBase
from sigma_vla.data.shards import load_shards, read_meta
from tests.training.fake_shards import write_fake_shards

IMAGE_SIZE = 32
# Image statistics for LeRobot's normaliser (our shards keep none: the frames stay uint8); any fixed values do.
IMAGE_MEAN, IMAGE_STD = 0.5, 0.25


@pytest.fixture
def shards(tmp_path: Path) -> Path:
    """Miniature shards (tiny config: 2 cameras of 32 px, state dim 6, action dim 4, horizon 6), no base actions."""
    return write_fake_shards(tmp_path / "shards", n_train=12, n_val=4, image_size=IMAGE_SIZE, shard_size=8)


def policy_features(meta: dict, image_size: int | None = None, state_dim: int | None = None,
                    action_dim: int | None = None, cameras: list[str] | None = None) -> dict[str, Any]:
    """input_features / output_features as LeRobot declares them, from the shards' meta (or overridden, to make a
    policy that disagrees with the shards)."""
    from lerobot.configs.types import FeatureType, PolicyFeature

    s = image_size or meta["params"]["image_size"]
    inputs = {cam: PolicyFeature(FeatureType.VISUAL, (3, s, s)) for cam in cameras or meta["cameras"]}
    inputs["observation.state"] = PolicyFeature(FeatureType.STATE, (state_dim or meta["state_dim"],))
    outputs = {"action": PolicyFeature(FeatureType.ACTION, (action_dim or meta["action_dim"],))}
    return {"input_features": inputs, "output_features": outputs}


def dataset_stats(shards: Path) -> dict[str, dict[str, torch.Tensor]]:
    """LeRobot's dataset_stats (raw units: mean, std, min, max) of the shards' state and actions."""
    data = load_shards(shards, ["robot_state", "gt_action_trajectory"])
    state, action = data["robot_state"].float(), data["gt_action_trajectory"].float().flatten(0, 1)  # (N, Ds), (N*T, Da)
    stats = {key: {"mean": x.mean(0), "std": x.std(0), "min": x.amin(0), "max": x.amax(0),
                   "q01": x.quantile(0.01, dim=0), "q99": x.quantile(0.99, dim=0)}  # pi0.5 normalises by quantiles
             for key, x in (("observation.state", state), ("action", action))}
    for cam in read_meta(shards)["cameras"]:
        one = torch.ones(3, 1, 1)
        stats[cam] = {"mean": one * IMAGE_MEAN, "std": one * IMAGE_STD, "min": one * 0, "max": one}
    return stats


def lerobot_base(policy: Any, shards: Path, horizon: int | None = None) -> LeRobotPolicyBase:
    """The policy as Sigma's frozen base on these shards, with LeRobot's own pre/post-processors (normalisation with
    the shards' raw statistics) and the shards' normalisation undone / redone around it."""
    from lerobot.policies.factory import make_pre_post_processors

    meta = read_meta(shards)
    pre, post = make_pre_post_processors(policy.config, dataset_stats=dataset_stats(shards))
    norm = meta["normalization"]
    stats = {k: (torch.tensor(norm[k]["mean"]), torch.tensor(norm[k]["std"])) for k in ("robot_state", "action")}
    return LeRobotPolicyBase(policy.eval(), horizon or meta["params"]["horizon"], camera_keys=meta["cameras"],
                             action_dim=meta["action_dim"], tasks=meta["tasks"], preprocess=pre, postprocess=post,
                             state_stats=stats["robot_state"], action_stats=stats["action"])


def shard_batch(shards: Path, n: int = 4) -> dict[str, Any]:
    """The first n windows of the shards, as `sigma base-actions` hands them to a base (normalised state)."""
    from sigma_vla.processing.transforms import BatchTransform

    data = load_shards(shards)
    return BatchTransform.from_meta(read_meta(shards), None)({k: v[:n] for k, v in data.items()})


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):
    """Small models on a busy 2-core machine: intra-op threads only add contention (tests/conftest.py)."""
    yield


def save_checkpoint(policy: Any, shards: Path, out: Path) -> Path:
    """What a user's trained LeRobot checkpoint looks like: the policy's `save_pretrained` plus its pre/post-processor
    pipelines (normalisation with the shards' raw statistics), in one directory."""
    from lerobot.policies.factory import make_pre_post_processors

    pre, post = make_pre_post_processors(policy.config, dataset_stats=dataset_stats(shards))
    for part in (policy, pre, post):
        part.save_pretrained(out)
    return out
