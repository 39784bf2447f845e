"""SigmaModel on the tiny config: shapes, gradients, the telepathy switch, a pure forward, path C, save/load."""

from __future__ import annotations

from dataclasses import fields

import pytest
import torch

from sigma_vla.errors import SigmaError
from sigma_vla.models import SigmaConfig, SigmaModel, SigmaOutput, make_fake_batch
from sigma_vla.models.config import LanguageConfig, VisionConfig

B = 3


@pytest.fixture(scope="module")
def cfg() -> SigmaConfig:
    return SigmaConfig.tiny()


@pytest.fixture
def model(cfg: SigmaConfig) -> SigmaModel:
    torch.manual_seed(0)
    return SigmaModel(cfg)


@pytest.fixture(scope="module")
def batch(cfg: SigmaConfig) -> dict[str, torch.Tensor]:
    return make_fake_batch(cfg, B, with_base_actions=True)


def test_every_output_has_its_shape(model: SigmaModel, cfg: SigmaConfig, batch: dict) -> None:
    out = model(batch)
    da, c, t, d, k, dt = cfg.action_dim, cfg.chunk, cfg.horizon, cfg.d_model, cfg.language.num_factors, 8
    n_text = int(batch["text_attention_mask"].any(dim=0).nonzero().max()) + 1  # columns padded in every row go
    n = n_text + cfg.vision.num_tokens + cfg.vision.state_tokens
    w, nq = cfg.action.width, cfg.action.num_queries
    expected = {
        "action_vector": (B, da), "action_chunk": (B, c, da), "action_trajectory": (B, t, da),
        "baseline_vector": (B, da), "baseline_chunk": (B, c, da), "baseline_trajectory": (B, t, da),
        "residual_vector": (B, da), "residual_chunk": (B, c, da), "residual_trajectory": (B, t, da),
        "fused_action": (B, da), "telepathy_factors": (B, dt), "high_level_rep": (B, n, d), "hidden_mask": (B, n),
        "action_conditions": (B, dt), "baseline_conditions": (B, dt), "action_query_tokens": (B, nq, w),
        "semantic_factors": (B, k, d), "z_pool": (B, d), "semantic_memory": (B, d), "prev_memory": (B, d),
        "intent": (B, d), "env_context": (B, d), "behavior_summary": (B, d), "text_summary": (B, d),
        "text_pool": (B, d), "vision_pool": (B, d), "text_vision_pool": (B, d),
        "vision_tokens": (B, cfg.vision.num_tokens, d), "vector_logits": (B, da, cfg.action.vector_bins),
    }
    tensor_fields = [f.name for f in fields(SigmaOutput) if isinstance(getattr(out, f.name), torch.Tensor)]
    assert sorted(tensor_fields) == sorted(expected)
    for name, shape in expected.items():
        value = getattr(out, name)
        assert tuple(value.shape) == shape, name
        assert torch.isfinite(value.float()).all(), name


def test_dropping_the_texts_common_padding_changes_no_output(model: SigmaModel, batch: dict, monkeypatch) -> None:
    # Texts are padded to text_max_len and the backbone runs only the columns some row uses; with the positions
    # kept (BERT's are absolute) every output must equal the padded forward's.
    from sigma_vla.models import sigma as sigma_module

    short = dict(batch, text_attention_mask=batch["text_attention_mask"].clone())
    short["text_attention_mask"][:, 3:] = 0  # every text ends by column 3 of 8
    model.eval()
    trimmed = model(short)
    monkeypatch.setattr(sigma_module, "_trim_padding", lambda text, mask: (text, mask))
    padded = model(short)
    assert trimmed.hidden_mask.shape[1] == padded.hidden_mask.shape[1] - (short["text_attention_mask"].shape[1] - 3)
    for name in ("action_vector", "action_chunk", "action_trajectory", "residual_chunk", "telepathy_factors",
                 "semantic_memory", "intent"):
        torch.testing.assert_close(getattr(trimmed, name), getattr(padded, name), rtol=1e-5, atol=1e-6, msg=name)


def test_untrained_sigma_adds_nothing_to_the_base(model: SigmaModel, batch: dict) -> None:
    # Under TRAF the executed action is base + output: a fresh model must leave the base's actions untouched.
    out = model(batch)
    for a in (out.action_vector, out.action_chunk, out.action_trajectory, out.fused_action):
        assert a.abs().max() < 1e-6


def _as_if_trained(model: SigmaModel) -> SigmaModel:
    """Small non-zero values in the zero-initialised action output layers, as the first optimizer steps give."""
    act = model.action
    with torch.no_grad():
        for p in (act.residual_head.g.fc2.weight, act.chunk_head.weight, act.token_head.weight):
            p.normal_(0.0, 0.02)
    return model


def test_final_actions_are_baseline_plus_residual(model: SigmaModel, batch: dict) -> None:
    out = _as_if_trained(model)(batch)
    assert torch.equal(out.action_vector, out.baseline_vector + out.residual_vector)
    assert torch.equal(out.action_trajectory, out.baseline_trajectory + out.residual_trajectory)
    assert out.residual_chunk.abs().sum() > 0  # tau != 0 moves the actions


def _all_losses(model: SigmaModel, out: SigmaOutput, batch: dict) -> torch.Tensor:
    terms = [out.action_vector, out.action_chunk, out.action_trajectory, out.fused_action, out.z_pool, out.intent,
             out.semantic_memory, out.telepathy_factors, out.action_conditions, out.vector_logits]
    flow = model.trajectory_flow_loss(out, batch["gt_action_trajectory"])
    return sum(x.pow(2).mean() for x in terms) + flow.mean()


def test_gradients_reach_lora_and_every_head_never_the_frozen_backbone(model: SigmaModel, batch: dict) -> None:
    # Zero-initialised gates (FiLM W_2, adaLN, LoRA B) block gradients to what sits behind them at step 0 only;
    # give them small values so the test sees the whole graph.
    with torch.no_grad():
        for p in model.trainable_parameters():
            if not p.any():
                p.normal_(0, 0.02)
    model.train()
    _all_losses(model, model(batch), batch).backward()
    frozen = [(n, p) for n, p in model.backbone.named_parameters() if "lora_" not in n]
    assert frozen and all(not p.requires_grad and p.grad is None for _, p in frozen)
    lora = model.lora_parameters()
    assert lora and all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora)
    dead = [n for n, p in model.head_named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert dead == []


def test_telepathy_off_gives_exactly_the_baseline(model: SigmaModel, batch: dict) -> None:
    _as_if_trained(model).eval()
    off = model(batch, telepathy=False)
    assert torch.count_nonzero(off.telepathy_factors) == 0
    assert torch.equal(off.action_vector, off.baseline_vector)
    assert torch.equal(off.action_chunk, off.baseline_chunk)
    assert torch.equal(off.action_trajectory, off.baseline_trajectory)
    on = model(batch)  # the baseline branch never sees tau, so it is the same with telepathy on
    assert torch.equal(on.baseline_trajectory, off.baseline_trajectory)
    assert not torch.equal(on.action_trajectory, off.action_trajectory)
    model.telepathy = False  # the attribute switch, as evaluation uses it
    assert torch.equal(model(batch).action_chunk, off.baseline_chunk)


def test_skipping_path_c_leaves_the_chunk_and_vector_unchanged(model: SigmaModel, batch: dict) -> None:
    """The policy's "sigma" mode executes the chunk only and skips path C's sampler; what it executes must not move."""
    _as_if_trained(model).eval()
    with torch.no_grad():
        full, fast = model(batch), model(batch, trajectory=False)
    assert torch.equal(fast.action_chunk, full.action_chunk)
    assert torch.equal(fast.action_vector, full.action_vector)
    assert torch.equal(fast.semantic_memory, full.semantic_memory)
    assert fast.trajectory_condition is None and torch.count_nonzero(fast.baseline_trajectory) == 0


def test_forward_is_pure_and_memory_is_an_argument(model: SigmaModel, batch: dict) -> None:
    """The model keeps no episode state (a server shares it between robots; SigmaPolicy carries the memory):
    the same call gives the same output, and m_{t-1} changes it only when passed."""
    model.eval()
    obs = {k: v for k, v in batch.items() if not k.startswith(("gt_", "base_"))}
    with torch.no_grad():
        first = model(obs)
        assert torch.count_nonzero(first.prev_memory) == 0
        assert torch.equal(model(obs).semantic_memory, first.semantic_memory)  # nothing carried between calls
        second = model(obs, prev_memory=first.semantic_memory)
    assert torch.equal(second.prev_memory, first.semantic_memory)
    assert not torch.equal(second.semantic_memory, first.semantic_memory)
    assert not any(isinstance(v, torch.Tensor) and k.endswith("memory") for k, v in vars(model).items())


def test_sampling_is_deterministic_and_noise_changes_it(model: SigmaModel, batch: dict, cfg: SigmaConfig) -> None:
    model.eval()
    with torch.no_grad():
        a = model(batch).action_trajectory
        assert torch.equal(model(batch).action_trajectory, a)
        model.action.trajectory.out.weight.normal_(0, 0.1)  # give the zero-initialised DiT a velocity: noise matters
        noise = torch.randn(B, cfg.horizon, cfg.action_dim)
        assert not torch.equal(model(batch, noise=noise).action_trajectory, model(batch).action_trajectory)


def test_trajectory_flow_loss_is_per_sample_and_trains_the_dit(model: SigmaModel, batch: dict) -> None:
    out = model(batch)
    loss = model.trajectory_flow_loss(out, batch["gt_action_trajectory"], time=torch.full((B,), 0.5))
    assert loss.shape == (B,)
    loss.mean().backward()
    assert model.action.trajectory.out.weight.grad.abs().sum() > 0


def test_save_load_round_trip_gives_identical_outputs(model: SigmaModel, batch: dict, tmp_path) -> None:
    model.eval()
    before = model(batch)
    model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    loaded = SigmaModel.from_pretrained(tmp_path / "m").eval()
    assert loaded.config == model.config
    after = loaded(batch)
    for f in fields(SigmaOutput):
        if isinstance(getattr(before, f.name), torch.Tensor):
            assert torch.equal(getattr(before, f.name), getattr(after, f.name)), f.name


def test_from_pretrained_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(SigmaError, match="config.json"):
        SigmaModel.from_pretrained(tmp_path)


@pytest.mark.parametrize("variant", ["command_id", "state_only", "depth_audio"])
def test_variants_run(variant: str) -> None:
    if variant == "command_id":
        cfg = SigmaConfig.tiny(language=LanguageConfig(text_mode="command_id", num_commands=5, num_factors=3, heads=2,
                                                       telepathy_hidden=16, tau_dim=8, gate_dim=8))
    elif variant == "state_only":
        cfg = SigmaConfig.tiny(vision=VisionConfig(num_cameras=0, image_size=16, patch_size=8, patch_dim=16,
                                                   num_tokens=4, state_hidden=16, heads=2, film_hidden=16))
    else:
        cfg = SigmaConfig.tiny(vision=VisionConfig(num_cameras=1, image_size=16, patch_size=8, patch_dim=16,
                                                   num_tokens=4, state_hidden=16, heads=2, film_hidden=16,
                                                   use_depth=True, use_audio=True, audio_mels=8, audio_frames=16,
                                                   audio_patch=4))
    model = SigmaModel(cfg)
    batch = make_fake_batch(cfg, 2)
    out = model(batch)
    assert out.action_trajectory.shape == (2, cfg.horizon, cfg.action_dim)
    assert torch.isfinite(out.action_trajectory).all()
    out.action_trajectory.sum().backward()
