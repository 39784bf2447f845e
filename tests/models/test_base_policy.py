"""The base-policy seam: TinyBasePolicy (train, freeze, save/load) and LeRobotPolicyBase with a LeRobot stand-in."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from sigma_vla.bases.lerobot import LeRobotPolicyBase
from sigma_vla.bases.policy import BasePolicy, TinyBaseConfig, TinyBasePolicy, load_base_policy
from sigma_vla.models import SigmaConfig, SigmaModel, make_fake_batch
from sigma_vla.models.config import ConfigError
from sigma_vla.processing.action_triple import ActionTriple
from sigma_vla.training.config import TrainConfig
from sigma_vla.training.tasks import BaseFinetuneTask

B = 3


@pytest.fixture(scope="module")
def batch() -> dict[str, Tensor]:
    return make_fake_batch(SigmaConfig.tiny(), B)


def test_tiny_base_trains_through_the_task_the_trainer_uses(batch: dict) -> None:
    """BaseFinetuneTask.loss is what `sigma train-base` and the control group train: MSE of the (B, T, Da) chunk
    against the ground-truth trajectory, with the vector and chunk columns of Sigma's log."""
    torch.manual_seed(0)
    base = TinyBasePolicy(TinyBaseConfig.tiny())
    assert isinstance(base, BasePolicy) and (base.action_dim, base.horizon) == (4, 6)
    task = BaseFinetuneTask(base, TrainConfig(), lambda b, step=None: b, chunk=3)
    task.param_groups("lora")
    loss, metrics = task.loss(base, batch, 0)
    pred, gt = base(batch).detach(), batch["gt_action_trajectory"]
    assert loss.item() == pytest.approx(F.mse_loss(pred, gt).item(), rel=1e-6)
    assert metrics["mse_vector"].item() == pytest.approx(F.mse_loss(pred[:, 0], gt[:, 0]).item(), rel=1e-6)
    assert metrics["mse_chunk"].item() == pytest.approx(F.mse_loss(pred[:, :3], gt[:, :3]).item(), rel=1e-6)
    loss.backward()
    assert base.text_table.weight.grad is None  # MiniLM word embeddings stay frozen
    assert base.head.weight.grad.abs().sum() > 0
    chunk = base.predict_chunk(batch)
    assert chunk.shape == (B, 6, 4) and not chunk.requires_grad
    triple = ActionTriple.from_chunk(chunk, 3)
    assert triple.chunk.shape == (B, 3, 4) and torch.equal(triple.vector, chunk[:, 0])


def test_training_sigma_never_touches_the_base(batch: dict) -> None:
    base = TinyBasePolicy(TinyBaseConfig.tiny())
    sigma = SigmaModel(SigmaConfig.tiny())
    final = base.predict_chunk(batch) + sigma(batch).action_trajectory  # TRAF: a = a_base + model output
    final.pow(2).mean().backward()
    assert all(p.grad is None for p in base.parameters())


def test_tiny_base_save_load_round_trip(batch: dict, tmp_path) -> None:
    base = TinyBasePolicy(TinyBaseConfig.tiny())
    base.save_pretrained(tmp_path)
    loaded = load_base_policy(tmp_path)
    assert torch.equal(loaded.predict_chunk(batch), base.predict_chunk(batch))
    assert not any(p.requires_grad for p in loaded.parameters())


class StandInLeRobotPolicy(torch.nn.Module):
    """LeRobot's PreTrainedPolicy surface: config.image_features / output_features, predict_action_chunk, reset."""

    def __init__(self, chunk_size: int = 10, action_dim: int = 4):
        super().__init__()
        self.config = SimpleNamespace(
            image_features={"observation.images.front": None, "observation.images.wrist": None},
            output_features={"action": SimpleNamespace(shape=(action_dim,))}, chunk_size=chunk_size)
        self.seen: dict | None = None
        self.resets = 0
        self.chunk_size, self.action_dim = chunk_size, action_dim

    @torch.no_grad()
    def predict_action_chunk(self, batch: dict[str, Tensor], **kwargs) -> Tensor:
        self.seen = batch
        b = batch["observation.state"].shape[0]
        steps = torch.arange(self.chunk_size, dtype=torch.float32)[None, :, None]
        return batch["observation.state"][:, None, :1] + steps.expand(b, -1, self.action_dim)  # (B, n, Da)

    def reset(self) -> None:
        self.resets += 1


def test_lerobot_base_maps_keys_and_units(batch: dict) -> None:
    policy = StandInLeRobotPolicy()
    state_stats = (torch.full((6,), 1.0), torch.full((6,), 2.0))
    action_stats = (torch.zeros(4), torch.full((4,), 10.0))
    base = LeRobotPolicyBase(policy, horizon=6, tasks=["t0", "t1", "t2", "t3", "t4"], state_stats=state_stats,
                             action_stats=action_stats)
    assert base.camera_keys == ["observation.images.front", "observation.images.wrist"] and base.action_dim == 4
    chunk = base.predict_chunk(batch)
    seen = policy.seen
    front = seen["observation.images.front"]
    assert front.dtype == torch.float32 and front.shape == (B, 3, 16, 16) and 0.0 <= front.min() <= front.max() <= 1
    assert torch.allclose(front * 255, batch["vision_inputs"][:, 0].float())
    assert torch.allclose(seen["observation.state"], batch["robot_state"] * 2.0 + 1.0)  # raw units for LeRobot
    assert seen["task"] == [f"t{i}" for i in batch["task_index"].tolist()]
    assert chunk.shape == (B, 6, 4)  # cut from the policy's 10 steps to our horizon
    raw = seen["observation.state"][:, None, :1] + torch.arange(6.0)[None, :, None]
    assert torch.allclose(chunk, raw / 10.0)  # back to our normalised units
    base.reset()
    assert policy.resets == 1


def test_lerobot_base_uses_processors_and_checks_shapes(batch: dict) -> None:
    calls = []
    base = LeRobotPolicyBase(StandInLeRobotPolicy(chunk_size=4), horizon=6, camera_keys=["front", "wrist"],
                             preprocess=lambda obs: calls.append("pre") or obs,
                             postprocess=lambda act: calls.append("post") or act)
    with pytest.raises(ValueError, match=">= 6"):
        base.predict_chunk({**batch, "task": "pick"})
    assert calls == ["pre", "post"]
    with pytest.raises(TypeError, match="predict_action_chunk"):
        LeRobotPolicyBase(object(), horizon=6, camera_keys=[], action_dim=4)


def _declaring(cams: dict, state_dim: int, action_dim: int = 4, **config) -> StandInLeRobotPolicy:
    """The stand-in with a config that declares shapes, as LeRobot's PolicyFeature does."""
    policy = StandInLeRobotPolicy(action_dim=action_dim)
    feature = lambda *shape: SimpleNamespace(shape=shape)  # noqa: E731
    policy.config = SimpleNamespace(image_features={k: feature(*v) for k, v in cams.items()},
                                    input_features={"observation.state": feature(state_dim)},
                                    output_features={"action": feature(action_dim)}, **config)
    return policy


FRONT, WRIST = "observation.images.front", "observation.images.wrist"


@pytest.mark.parametrize("policy, kwargs, match", [
    (_declaring({FRONT: (3, 96, 96), WRIST: (3, 96, 96)}, 6), {},
     r"image size of observation.images.front: the batch's frames are 3x16x16 \(CxHxW\), the policy's config "
     r"declares 3x96x96 \(CxHxW\) \(input_features\); prep the shards with --image-size 96"),
    (_declaring({FRONT: (3, 16, 16), WRIST: (3, 16, 16)}, 14), {},
     r"state dim: the batch's robot_state has 6, the policy's config declares 14"),
    (_declaring({FRONT: (3, 16, 16), "observation.images.top": (3, 16, 16)}, 6), {"camera_keys": ["front", "wrist"]},
     r"cameras: ours are \[.*front.*wrist.*\] \(camera_keys\), the policy's config declares \[.*front.*top"),
    (_declaring({FRONT: (3, 16, 16), WRIST: (3, 16, 16)}, 6, action_dim=6), {"action_dim": 4},
     r"action dim: ours is 4 \(the shards' actions\), the policy's config declares 6"),
    (_declaring({FRONT: (3, 16, 16)}, 6), {},
     r"cameras: the batch has 2, the policy takes 1"),
])
def test_declared_features_that_differ_are_one_line_naming_both_sides(batch, policy, kwargs, match) -> None:
    from sigma_vla.errors import SigmaError

    with pytest.raises(SigmaError, match=match) as err:
        LeRobotPolicyBase(policy, horizon=6, tasks=["t"] * 5, **kwargs).predict_chunk(batch)
    assert "\n" not in str(err.value)


def test_policies_that_resize_frames_themselves_take_any_size(batch) -> None:
    policy = _declaring({FRONT: (3, 480, 640), WRIST: (3, 480, 640)}, 6, resize_imgs_with_padding=(512, 512))
    assert LeRobotPolicyBase(policy, horizon=6, tasks=["t"] * 5).predict_chunk(batch).shape == (B, 6, 4)


class StandInHistoryPolicy(StandInLeRobotPolicy):
    """Diffusion's surface: observation queues of n_obs_steps, stacked inside predict_action_chunk, which fails on
    empty queues (as LeRobot's does: torch.stack of an empty list)."""

    def __init__(self, n_obs_steps: int = 2):
        super().__init__()
        self.n_obs_steps = n_obs_steps
        self.reset()

    def reset(self) -> None:
        from collections import deque

        super().reset()
        n = getattr(self, "n_obs_steps", 2)
        self._queues = {"observation.state": deque(maxlen=n), "observation.images": deque(maxlen=n),
                        "action": deque(maxlen=8)}

    def predict_action_chunk(self, batch: dict[str, Tensor], **kwargs) -> Tensor:
        stacked = {k: torch.stack(list(self._queues[k]), dim=1) for k in batch if k in self._queues}
        chunk = super().predict_action_chunk({"observation.state": stacked["observation.state"][:, -1]})
        self.seen = stacked
        return chunk


def test_history_queues_are_filled_with_the_current_frame(batch) -> None:
    policy = StandInHistoryPolicy(n_obs_steps=2)
    base = LeRobotPolicyBase(policy, horizon=6, tasks=["t"] * 5)
    for _ in range(2):  # the second batch starts from fresh queues, not the first batch's frames
        assert base.predict_chunk(batch).shape == (B, 6, 4)
        images, state = policy.seen["observation.images"], policy.seen["observation.state"]
        assert images.shape == (B, 2, 2, 3, 16, 16) and state.shape == (B, 2, 6)  # (B, n_obs, V, 3, S, S)
        assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(state[:, 0], state[:, 1])
        assert torch.allclose(images[:, 0, 1] * 255, batch["vision_inputs"][:, 1].float())


def test_importing_models_does_not_import_lerobot() -> None:
    """In a fresh interpreter: beside LeRobot, other tests (the simulator package) import it into this one."""
    import subprocess
    import sys

    code = "import sys, sigma_vla.models; assert 'lerobot' not in sys.modules, 'lerobot imported'"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_random_shift_moves_each_sample_within_the_pad():
    from sigma_vla.bases.vision import random_shift

    frames = torch.zeros(64, 3, 16, 16)
    frames[:, :, 8, 8] = 1.0  # one bright pixel
    torch.manual_seed(0)
    out = random_shift(frames, 2)
    assert out.shape == frames.shape and torch.equal(random_shift(frames, 0), frames)
    peaks = torch.nonzero(out[:, 0] == 1.0)  # (64, 3): sample, row, col
    assert len(peaks) == 64 and (peaks[:, 1:] - 8).abs().max() <= 2 and len(set(peaks[:, 1].tolist())) > 1


def test_spatial_softmax_finds_the_peak_and_encoders_give_tokens():
    from sigma_vla.bases.vision import FlatEncoder, KeypointEncoder, spatial_softmax

    maps = torch.zeros(1, 1, 5, 5)
    maps[0, 0, 4, 0] = 50.0  # bottom-left corner
    assert torch.allclose(spatial_softmax(maps, torch.tensor(1.0)), torch.tensor([[[-1.0, 1.0]]]), atol=1e-4)
    x = torch.randn(2, 3, 32, 32)
    assert FlatEncoder(16, 2, tokens=3)(x).shape == (2, 3, 16)
    assert KeypointEncoder(16, keypoints=5)(x).shape == (2, 5, 16)


def test_every_vision_encoder_trains_through_the_policy():
    for vision in ("flat", "keypoints", "grid"):
        model = TinyBasePolicy(TinyBaseConfig.tiny(vision=vision, augment_shift=1))
        batch = make_fake_batch(SigmaConfig.tiny(), 3)
        model(batch).pow(2).mean().backward()
        assert model.cameras[0].parameters().__next__().grad is not None


@pytest.mark.parametrize("field, value", [("vision", "bogus"), ("dropout", 2.0), ("augment_shift", -1)])
def test_bad_base_options_name_the_field(field, value):
    with pytest.raises(ConfigError, match=f"base.{field}"):
        TinyBaseConfig.tiny(**{field: value})
