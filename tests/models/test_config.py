"""SigmaConfig: presets are valid, JSON round trip, bad values are named with the value."""

from __future__ import annotations

import json

import pytest

from sigma_vla.errors import SigmaError
from sigma_vla.models import ActionConfig, BackboneConfig, ConfigError, SigmaConfig, VisionConfig


@pytest.mark.parametrize("preset", [SigmaConfig, SigmaConfig.tiny, SigmaConfig.pi05_like])
def test_presets_round_trip_through_json(preset) -> None:
    cfg = preset()
    again = SigmaConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


def test_paper_defaults() -> None:
    cfg = SigmaConfig()
    assert (cfg.backbone.kind, cfg.d_model, cfg.backbone.lora_rank) == ("minilm", 384, 16)
    assert cfg.backbone.lora_targets == ("query", "key", "value", "attention.output.dense")
    assert (cfg.horizon, cfg.telepathy) == (16, True)
    pi = SigmaConfig.pi05_like()
    assert (pi.d_model, pi.vision.num_cameras, pi.chunk) == (2048, 3, 50)


@pytest.mark.parametrize("make, field, value", [
    (lambda: VisionConfig(image_size=100, patch_size=16), "vision.image_size", "100"),
    (lambda: ActionConfig(width=30, heads=4), "action.heads", "30"),
    (lambda: BackboneConfig(kind="minilm", hidden_size=512), "backbone.hidden_size", "512"),
    (lambda: BackboneConfig(kind="llama"), "backbone.kind", "llama"),
    (lambda: BackboneConfig(dropout=1.5), "backbone.dropout", "1.5"),
    (lambda: SigmaConfig(horizon=4, chunk=8), "chunk", "8"),
    (lambda: SigmaConfig(action_dim=0), "action_dim", "0"),
])
def test_bad_values_are_named(make, field: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        make()
    assert isinstance(err.value, SigmaError) and isinstance(err.value, ValueError)
    assert f"field '{field}'" in str(err.value) and value in str(err.value)


def test_unknown_keys_are_refused() -> None:
    data = SigmaConfig.tiny().to_dict()
    data["vision"]["num_camera"] = 2
    with pytest.raises(ConfigError, match="num_camera"):
        SigmaConfig.from_dict(data)


def test_backbone_dropout_sets_the_frozen_layers_and_leaves_loras_own() -> None:
    import torch

    from sigma_vla.models.backbone import build_backbone

    small = dict(kind="bert", hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, vocab_size=100)
    rates = {name: m.p for name, m in build_backbone(BackboneConfig(**small, dropout=0.0)).named_modules()
             if isinstance(m, torch.nn.Dropout)}
    lora = {n for n in rates if "lora_dropout" in n}
    assert lora and {rates[n] for n in lora} == {0.05}
    assert {rates[n] for n in set(rates) - lora} == {0.0}
    kept = {m.p for m in build_backbone(BackboneConfig(**small)).modules() if isinstance(m, torch.nn.Dropout)}
    assert kept == {0.05, 0.1}  # None: the transformer's own (BERT's 0.1)
