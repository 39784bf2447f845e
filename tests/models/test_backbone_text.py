"""The backbone seam (LoRA only on q/k/v/o) and instruction tokenization with MiniLM's tokenizer (offline)."""

from __future__ import annotations

import time

import pytest
import torch

from sigma_vla.models import BackboneConfig, HFBackbone, SigmaConfig, SigmaModel, build_backbone
from sigma_vla.models.backbone import describe
from sigma_vla.processing.text import TaskTokens, TextTokenizer


def test_lora_trains_only_the_attention_projections() -> None:
    cfg = SigmaConfig.tiny().backbone
    bb = build_backbone(cfg)
    trainable = [n for n, p in bb.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    targets = {n.split(".lora_")[0].split("model.encoder.layer.")[1].split(".", 1)[1] for n in trainable}
    assert targets == {"attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"}
    r, d, layers = cfg.lora_rank, cfg.hidden_size, cfg.num_layers
    assert describe(bb)["lora"] == layers * 4 * r * (d + d)


def test_a_custom_backbone_stands_in() -> None:
    from transformers import BertConfig, BertModel

    bert = BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=64), add_pooling_layer=False)
    bb = HFBackbone(bert, lora=BackboneConfig(kind="bert", hidden_size=32, num_heads=2, lora_rank=2))
    model = SigmaModel(SigmaConfig.tiny(), backbone=bb)
    assert model.backbone is bb and len(model.lora_parameters()) == 4 * 2


def test_tokenizer_pads_to_max_len_and_task_tokens_gather() -> None:
    tok = TextTokenizer(max_len=12)
    enc = tok(["place the block far left", "the bin is on your left, close to you and a bit further than that"])
    ids, mask = enc["text_input_ids"], enc["text_attention_mask"]
    assert ids.shape == mask.shape == (2, 12) and ids.dtype == torch.long
    assert ids[0, 0].item() == 101 and mask[0].sum() < 12 and mask[1].sum() == 12  # [CLS]; padded; truncated
    tasks = TaskTokens(["a", "place it far right"], max_len=8)
    got = tasks(torch.tensor([1, 0, 1]))
    assert torch.equal(got["text_input_ids"][0], got["text_input_ids"][2])
    assert not torch.equal(got["text_input_ids"][0], got["text_input_ids"][1])
    with pytest.raises(IndexError, match="task_index"):
        tasks(torch.tensor([2]))


def test_real_minilm_loads_offline_with_294912_lora_parameters(tmp_path) -> None:
    """The embedded default: pretrained MiniLM from the installed package, LoRA r=16 on q/k/v/o (paper 4.2)."""
    start = time.perf_counter()
    model = SigmaModel(SigmaConfig())
    counts = describe(model.backbone)
    assert counts["lora"] == 294_912 and counts["frozen"] == 22_565_376
    assert sum(p.numel() for p in model.backbone.parameters() if p.requires_grad) == 294_912
    assert model.backbone.reloadable
    model.save_pretrained(tmp_path)  # frozen MiniLM weights are rebuilt on load, not stored
    assert (tmp_path / "model.safetensors").stat().st_size < 60e6
    loaded = SigmaModel.from_pretrained(tmp_path)
    a, b = model.backbone.state_dict(), loaded.backbone.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert time.perf_counter() - start < 30
