"""The quantized frozen backbone (models/quantize.py): bitsandbytes layers in the transformer stacks only, LoRA
training over them, frozen bytes that drop, reloads that hold the same bytes, every backbone kind; and gradient
checkpointing that changes nothing but memory. Tiny sizes, CPU."""

from __future__ import annotations

import dataclasses
import sys

import pytest
import torch
from safetensors.torch import load_file

from sigma_vla.errors import SigmaError
from sigma_vla.models import BackboneConfig, HFBackbone, SigmaConfig, SigmaModel, build_backbone, make_fake_batch
from sigma_vla.models.backbone import frozen_bytes
from sigma_vla.models.config import GEMMA_LORA_TARGETS

bnb = pytest.importorskip("bitsandbytes")
QUANTIZED = {"nf4": bnb.nn.Linear4bit, "int8": bnb.nn.Linear8bitLt}


def _tiny(quantize: str = "none", **backbone) -> SigmaConfig:
    cfg = SigmaConfig.tiny()
    return cfg.replace(backbone=dataclasses.replace(cfg.backbone, quantize=quantize, **backbone))


def _batch(cfg: SigmaConfig, n: int = 3) -> dict[str, torch.Tensor]:
    return make_fake_batch(cfg, n, seed=0, with_base_actions=True)


def _hidden(backbone, seed: int = 0) -> torch.Tensor:
    x = torch.randn(2, 5, backbone.hidden_size, generator=torch.Generator().manual_seed(seed))  # (B, N, D)
    return backbone(x, torch.ones(2, 5, dtype=torch.bool))  # (B, N, D)


@pytest.mark.parametrize("mode", ["nf4", "int8"])
def test_only_the_layer_stacks_quantize_and_lora_trains_over_them(mode) -> None:
    torch.manual_seed(0)
    floats = build_backbone(_tiny().backbone)
    torch.manual_seed(0)
    bb = build_backbone(_tiny(mode).backbone)
    layers = [m for m in bb.model.encoder.modules() if isinstance(m, QUANTIZED[mode])]
    assert len(layers) == 2 * 6  # q, k, v, o, intermediate, output in each of the 2 layers
    assert isinstance(bb.model.get_input_embeddings(), torch.nn.Embedding)  # embeddings stay float
    assert bb.model.get_input_embeddings().weight.dtype == torch.float32
    assert not any(isinstance(m, tuple(QUANTIZED.values())) for m in bb.model.embeddings.modules())
    assert all("lora_" in n for n, p in bb.named_parameters() if p.requires_grad)
    with torch.no_grad():
        ref = _hidden(floats.eval())
        err = (_hidden(bb.eval()) - ref).abs().mean() / ref.abs().mean()
    assert 0 < err < 0.1, err  # close to the float layers it was quantized from, not equal
    _hidden(bb.train()).square().mean().backward()
    lora = list(bb.lora_parameters())
    assert len(lora) == 2 * 4 * 2 and all(p.grad is not None for p in lora)
    assert any(p.grad.abs().sum() > 0 for p in lora)


@pytest.mark.parametrize("mode", ["nf4", "int8"])
def test_a_quantized_model_reloads_the_same_bytes(mode, tmp_path) -> None:
    """The random backbone saves bitsandbytes' packed weights; a reload under another seed holds them exactly."""
    torch.manual_seed(0)
    model = SigmaModel(_tiny(mode)).eval()
    with torch.no_grad():
        want = model(_batch(model.config)).action_chunk  # (B, C, Da)
    model.save_pretrained(tmp_path)
    torch.manual_seed(123)  # the fresh build draws other random weights: only the file can make them equal
    loaded = SigmaModel.from_pretrained(tmp_path).eval()
    assert loaded.config.backbone.quantize == mode
    with torch.no_grad():
        assert torch.equal(loaded(_batch(model.config)).action_chunk, want)
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(isinstance(m, QUANTIZED[mode]) for m in loaded.backbone.modules())


def test_frozen_bytes_drop_4x_for_nf4_and_3x_for_int8() -> None:
    """Counted from the layers' storage, statistics included; at width 128 the per-layer code maps are small."""
    sizes = dict(hidden_size=128, num_heads=2, intermediate_size=256, vocab_size=512)
    cfg = _tiny(**sizes).backbone
    fp32 = frozen_bytes(build_backbone(cfg).model.encoder)
    nf4_bb = build_backbone(dataclasses.replace(cfg, quantize="nf4"))
    nf4 = frozen_bytes(nf4_bb.model.encoder)
    int8 = frozen_bytes(build_backbone(dataclasses.replace(cfg, quantize="int8")).model.encoder)
    weights = 2 * (4 * 128 * 128 + 2 * 128 * 256)
    assert fp32 > weights * 4 and int8 >= weights  # the float weights plus biases and norms; int8's one byte each
    assert fp32 / nf4 >= 4.0 and fp32 / int8 >= 3.0, (fp32, nf4, int8)
    whole = frozen_bytes(build_backbone(cfg))
    assert whole - fp32 == frozen_bytes(nf4_bb) - nf4  # embeddings are float in both, the same bytes


def test_the_other_kinds_quantize(tmp_path) -> None:
    """gemma through build_backbone, and what the lerobot kind wraps (a LeRobot VLA's Llama / Gemma text model,
    handed to HFBackbone with q/k/v/o LoRA targets); the MiniLM is rebuilt and requantized on load, not saved."""
    from transformers import LlamaConfig, LlamaModel

    gemma = BackboneConfig(kind="gemma", hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=16,
                           intermediate_size=64, vocab_size=128, lora_rank=4, lora_targets=GEMMA_LORA_TARGETS,
                           quantize="nf4")
    llama = LlamaModel(LlamaConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                   num_key_value_heads=1, intermediate_size=64))
    for bb in (build_backbone(gemma), HFBackbone(llama, dataclasses.replace(gemma, kind="lerobot", ref="lerobot:x",
                                                                            quantize="int8"), reloadable=True)):
        assert sum(isinstance(m, tuple(QUANTIZED.values())) for m in bb.modules()) == 2 * 7  # q k v o gate up down
        _hidden(bb).square().mean().backward()
        assert all(p.grad is not None for p in bb.lora_parameters())
    model = SigmaModel(SigmaConfig(backbone=BackboneConfig(quantize="nf4"))).eval()  # the packaged MiniLM
    assert model.backbone.reloadable
    model.save_pretrained(tmp_path)
    saved = load_file(str(tmp_path / "model.safetensors"))
    assert all("lora_" in k for k in saved if k.startswith("backbone."))  # LoRA and heads only: MiniLM is rebuilt
    loaded = SigmaModel.from_pretrained(tmp_path).eval()
    batch = make_fake_batch(model.config, 2, seed=0)
    with torch.no_grad():
        assert torch.equal(loaded(batch).action_chunk, model(batch).action_chunk)
    a, b = model.backbone.state_dict(), loaded.backbone.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # quantization is deterministic: the same bytes


def test_without_bitsandbytes_quantize_is_one_line(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # `import bitsandbytes` now raises ImportError
    with pytest.raises(SigmaError, match=r"needs bitsandbytes: pip install -c constraints.txt 'sigma-vla\[quant\]'"):
        build_backbone(_tiny("nf4").backbone)
    build_backbone(_tiny().backbone)  # unquantized needs nothing


def test_gradient_checkpointing_gives_the_same_loss_and_gradients() -> None:
    """One SigmaTask step with and without checkpointing (dropout on): equal loss and gradients, and the layers
    really run twice (recomputed in backward)."""
    from sigma_vla.training.config import TrainConfig
    from sigma_vla.training.tasks import SigmaTask

    def step(checkpointing: bool):
        torch.manual_seed(0)
        model = SigmaModel(_tiny()).train()
        if checkpointing:
            model.backbone.enable_gradient_checkpointing()
        calls = []  # a module inside a checkpointed layer: transformers checkpoints the layers' forward, not hooks
        model.backbone.model.encoder.layer[0].intermediate.register_forward_hook(lambda *_: calls.append(1))
        task = SigmaTask(model, TrainConfig(), lambda batch, step=None: batch)
        task.param_groups("lora")
        torch.manual_seed(1)
        loss, _ = task.loss(model, _batch(model.config, 4), 0)
        loss.backward()
        return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}, len(calls)

    loss0, grads0, calls0 = step(False)
    loss1, grads1, calls1 = step(True)
    assert (calls0, calls1) == (1, 2)
    torch.testing.assert_close(loss1, loss0)
    assert grads0.keys() == grads1.keys() and any("lora_" in k for k in grads0)
    for k in grads0:
        torch.testing.assert_close(grads1[k], grads0[k], rtol=1e-5, atol=1e-7)
