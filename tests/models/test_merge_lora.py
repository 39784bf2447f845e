"""A policy folds LoRA into the frozen weights (one matmul per projection): the same outputs, quantized layers left."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from sigma_vla.models import SigmaConfig, build_backbone


def _hidden(backbone) -> torch.Tensor:
    x = torch.randn(2, 5, backbone.hidden_size, generator=torch.Generator().manual_seed(0))  # (B, N, D)
    with torch.no_grad():
        return backbone(x, torch.ones(2, 5, dtype=torch.bool))  # (B, N, D)


def _trained_looking(quantize: str = "none"):
    cfg = SigmaConfig.tiny().backbone
    torch.manual_seed(0)
    bb = build_backbone(dataclasses.replace(cfg, quantize=quantize)).eval()
    for name, p in bb.named_parameters():
        if "lora_B" in name:  # B starts at 0 (LoRA's init), which would make folding trivially exact
            p.data.normal_(0, 0.5)
    return bb


def test_folding_lora_keeps_the_outputs_and_drops_the_extra_matmuls() -> None:
    bb = _trained_looking()
    before = _hidden(bb)
    weights = {n: p.clone() for n, p in bb.named_parameters() if "base_layer.weight" in n}
    assert bb.merge_lora() == 2 * 4  # q, k, v, o in each of the 2 layers
    assert all(not torch.equal(weights[n], p) for n, p in bb.named_parameters() if n in weights)  # folded in
    assert (before - _hidden(bb)).abs().max() < 1e-5


def test_quantized_layers_are_not_folded() -> None:
    pytest.importorskip("bitsandbytes")
    bb = _trained_looking("nf4")
    before = _hidden(bb)
    assert bb.merge_lora() == 0
    assert torch.equal(before, _hidden(bb))
