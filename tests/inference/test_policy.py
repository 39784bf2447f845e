"""SigmaPolicy: action queue, its own semantic memory per episode, modes, and serving a real policy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dataclasses import replace

from sigma_vla.bases.policy import TinyBaseConfig, TinyBasePolicy
from sigma_vla.errors import SigmaError
from sigma_vla.inference.policy import PolicyConfig, SigmaPolicy
from sigma_vla.models import SigmaConfig, SigmaModel
from sigma_vla.processing.text import TextTokenizer
from sigma_vla.processing.transforms import Normalizer
from sigma_vla.sim.so101 import STATE_NAMES

DS = len(STATE_NAMES)  # the simulator's state, so the served loop (tests/serving) can drive it

S = 64


def make_policy(mode: str = "sigma+adapter", n_action_steps: int = 2) -> SigmaPolicy:
    torch.manual_seed(0)
    cfg = SigmaConfig.tiny(state_dim=DS, action_dim=4, horizon=8, chunk=4)
    cfg = cfg.replace(vision=cfg.vision.__class__(**{**cfg.vision.__dict__, "num_cameras": 1, "image_size": S}))
    model = SigmaModel(cfg).eval()
    base = TinyBasePolicy(TinyBaseConfig.tiny(state_dim=DS, action_dim=4, horizon=8, num_cameras=1)).eval()
    config = PolicyConfig(mode=mode, n_action_steps=n_action_steps, image_size=S)
    norm = Normalizer(torch.zeros(DS), torch.ones(DS), torch.full((4,), 0.5), torch.full((4,), 2.0))
    return SigmaPolicy(model, base, norm, TextTokenizer(cfg.language.text_max_len), config, {"fps": 10.0})


def obs(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"observation.state": rng.normal(size=DS).astype(np.float32),
            "observation.images.front": rng.integers(0, 256, (S, S, 3), dtype=np.uint8)}


def test_queue_replans_every_n_steps_and_memory_advances():
    policy = make_policy(n_action_steps=2)
    policy.reset()
    a0 = policy.select_action(obs(), "put it far left")
    first_plan, m1 = policy.last_plan, policy.memory.clone()
    a1 = policy.select_action(obs(1), "put it far left")
    assert policy.last_plan is first_plan  # the second action came from the queue
    np.testing.assert_array_equal(a1, first_plan.actions[1])
    np.testing.assert_array_equal(a0, first_plan.actions[0])
    policy.select_action(obs(2), "put it far left")
    assert policy.last_plan is not first_plan and not torch.equal(policy.memory, m1)  # re-planned, m_t moved on
    policy.reset()
    assert policy.memory is None and not policy.queue


def test_temporal_ensemble_replans_every_step_and_blends_overlapping_chunks():
    policy = make_policy(mode="base")
    policy.config = replace(policy.config, temporal_ensemble=0.5)
    policy.reset()
    a0 = policy.select_action(obs(0), "x")
    first = policy.last_plan.actions  # (C, Da)
    np.testing.assert_allclose(a0, first[0], rtol=1e-6)  # one chunk: its own first action
    a1 = policy.select_action(obs(1), "x")
    second = policy.last_plan.actions
    w = np.exp(-0.5)
    np.testing.assert_allclose(a1, (first[1] + w * second[0]) / (1 + w), rtol=1e-5)
    for i in range(6):
        policy.select_action(obs(i + 2), "x")
    assert len(policy.ensemble.chunks) == 3  # chunk length 4: at most 4 chunks cover a step, minus the one just used up
    policy.reset()
    assert not policy.ensemble.chunks


def test_base_mode_returns_the_base_chunk_in_raw_units():
    policy = make_policy(mode="base")
    plan = policy.plan(obs(), "anything")
    batch = policy.batch(obs(), "anything")
    expected = policy.base.predict_chunk(batch)[0, :4] * 2.0 + 0.5  # un-normalised with std 2, mean 0.5
    np.testing.assert_allclose(plan.actions, expected.numpy(), rtol=1e-5, atol=1e-6)
    assert plan.adapter_scale == 0.0


def test_policies_sharing_weights_keep_their_own_memory():
    a = make_policy()
    b = SigmaPolicy(a.model, a.base, a.norm, a.tokenizer, a.config, a.info)
    a.plan(obs(0), "put it far left")
    mem_a = a.memory.clone()
    b.plan(obs(5), "the bin is on your right")
    assert torch.equal(a.memory, mem_a) and b.memory is not None and not torch.equal(b.memory, mem_a)


def test_metadata_declares_the_inputs():
    meta = make_policy().metadata()
    assert meta["inputs"] == {"observation.state": {"dtype": "float32", "shape": [DS]},
                              "observation.images.front": {"dtype": "uint8", "shape": [S, S, 3]}}
    assert meta["chunk"] == 4 and meta["action_dim"] == 4


@pytest.mark.parametrize("mode", ["sigma", "sigma+adapter"])
def test_actions_are_finite_and_shaped(mode):
    plan = make_policy(mode).plan(obs(), "hand it to the person on your left")
    assert plan.actions.shape == (4, 4) and np.isfinite(plan.actions).all()


def test_a_state_of_another_size_is_named():
    policy = make_policy()
    policy.reset()
    bad = {**obs(), "observation.state": np.zeros(DS - 1, np.float32)}  # e.g. a robot's state without the jaw
    with pytest.raises(SigmaError, match=f"trained on {DS} state values, the observation has {DS - 1}") as err:
        policy.select_action(bad, "put it far left")
    assert err.value.field == "observation.state"


@pytest.mark.parametrize("mode", ["sigma", "sigma+adapter"])
def test_a_non_finite_step_never_enters_the_episodes_memory(mode):
    """One extreme state used to leave NaN in the connection's semantic memory: every later plan had tau = nan and
    fell back to the base, flagged nowhere. Now the memory stays as it was before that step, and the reply says so."""
    policy = make_policy(mode)
    policy.reset()
    first = policy.infer(obs(0), "put it far left")
    kept = policy.memory.clone()
    assert first["flags"] == [] and torch.isfinite(kept).all()
    bad = obs(1)
    bad["observation.state"] = np.full(DS, 1e38, np.float32)
    reply = policy.infer(bad, "put it far left")
    assert "memory_kept" in reply["flags"] and torch.equal(policy.memory, kept)
    later = policy.infer(obs(2), "put it far left")
    assert np.isfinite(later["tau_norm"]) and "memory_kept" not in later["flags"]


def test_actions_beyond_the_trained_range_are_clamped_and_reported():
    """normalization.action.std = [1e30]*4 made the server send actions of 2.9e29; such statistics are now refused,
    and an action beyond the trained [min, max] (widened by ACTION_MARGIN) is clamped and flagged."""
    from sigma_vla.processing.transforms import ACTION_MARGIN

    policy = make_policy("base")
    policy.reset()
    free = policy.infer(obs(0), "x")["actions"]
    lo, hi = torch.full((4,), -1e-3), torch.full((4,), 1e-3)
    policy.norm = replace(policy.norm, action_min=lo, action_max=hi)
    reply = policy.infer(obs(0), "x")
    bound = 1e-3 * (1 + 2 * ACTION_MARGIN)
    assert reply["flags"] == ["clamped"] and np.abs(reply["actions"]).max() <= bound + 1e-9
    np.testing.assert_allclose(reply["actions"], np.clip(free, -bound, bound), rtol=1e-6)
    for bad, field in (({"std": [1e30] * 4}, "normalization.action.std"),
                       ({"mean": [float("nan")] * 4}, "normalization.action.mean"),
                       ({"std": [0.0] * 4}, "normalization.action.std"), ({"std": "x"}, "normalization.action.std")):
        stats = policy.norm.to_dict()
        stats["action"].update(bad)
        with pytest.raises(SigmaError, match=f"field '{field}'"):
            Normalizer.from_dict(stats, "policy.json")
