"""The frozen backbone in 4-bit NF4 or 8-bit int8 (bitsandbytes), LoRA trained over it (QLoRA through PEFT).

Why: the frozen backbone is most of a pi0.5-sized model's memory; quantizing its transformer layers lets it train on a
24 GB card (docs/gpu.md, "A 24 GB card: nf4 + gradient checkpointing"). Only the nn.Linear layers inside the
backbone's layer stacks (its nn.ModuleLists) are quantized, before LoRA is injected; embeddings, norms and every
Sigma head stay in full precision.

Saving and reloading (one design for every kind of backbone): a layer is quantized from its float weights when the
backbone is built, and quantization is deterministic, so the same float weights always give the same bytes. A
reloadable backbone (the packaged MiniLM, a lerobot: reference) skips its frozen weights in the model file as before
and is rebuilt and quantized again on load, byte for byte. A random backbone saves bitsandbytes' own state (the
packed weight and its quantization statistics); a load-state-dict pre-hook on each quantized layer rebuilds the
weight from them (`Params4bit.from_prequantized`, int8's SCB), so a reload or a resume holds exactly the saved bytes
and no float copy is ever kept.

bitsandbytes is the optional extra `sigma-vla[quant]`; `require_bitsandbytes` says so in one line when it is missing.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

from torch import Tensor, nn

from sigma_vla.errors import SigmaError
from sigma_vla.models.config import QUANTIZE_MODES

INSTALL_HINT = "pip install -c constraints.txt 'sigma-vla[quant]'"
INT8_THRESHOLD = 6.0  # LLM.int8()'s outlier threshold, transformers' default for load_in_8bit


def require_bitsandbytes(what: str = "--quantize") -> Any:
    """The bitsandbytes module, imported quietly; missing, a one-line SigmaError with the install command."""
    try:
        with warnings.catch_warnings():  # a CPU-only install may warn about its kernels on import
            warnings.simplefilter("ignore")
            import bitsandbytes
    except (ImportError, OSError) as err:
        raise SigmaError(f"{what} needs bitsandbytes: {INSTALL_HINT}") from err
    # Our compute dtype is float32, so int8's matmul notes a float16 cast on every forward: expected, not news.
    logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
    return bitsandbytes


def quantize_layers(model: nn.Module, mode: str) -> int:
    """Replace, in place, every nn.Linear inside model's layer stacks (nn.ModuleList) by a frozen bitsandbytes layer
    ("nf4": Linear4bit, "int8": Linear8bitLt), quantized on the layer's device. Returns how many were replaced."""
    if mode == "none":
        return 0
    if mode not in QUANTIZE_MODES:
        raise SigmaError(f"must be one of {list(QUANTIZE_MODES)}, got {mode!r}", field="backbone.quantize")
    bnb = require_bitsandbytes(f"backbone.quantize '{mode}'")
    in_stacks = {id(m) for stack in model.modules() if isinstance(stack, nn.ModuleList) for m in stack.modules()}
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear and id(child) in in_stacks:
                setattr(parent, name, _nf4(bnb, child) if mode == "nf4" else _int8(bnb, child))
                count += 1
    return count


def _nf4(bnb: Any, linear: nn.Linear) -> nn.Module:
    layer = bnb.nn.Linear4bit(linear.in_features, linear.out_features, linear.bias is not None,
                              compute_dtype=linear.weight.dtype, quant_type="nf4", device="meta")
    # (out, in) float -> (out * in / 2, 1) uint8 on .to(device); double quantization of absmax (QLoRA's default)
    layer.weight = bnb.nn.Params4bit(linear.weight.data, requires_grad=False, quant_type="nf4",
                                     compress_statistics=True, module=layer)
    _copy_bias(layer, linear)
    layer = layer.to(linear.weight.device)
    layer._register_load_state_dict_pre_hook(_load_nf4, with_module=True)
    return layer


def _int8(bnb: Any, linear: nn.Linear) -> nn.Module:
    layer = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, linear.bias is not None,
                                has_fp16_weights=False, threshold=INT8_THRESHOLD, device="meta")
    # (out, in) float -> (out, in) int8 + SCB (out,) row scales on .to(device)
    layer.weight = bnb.nn.Int8Params(linear.weight.data, requires_grad=False, has_fp16_weights=False)
    _copy_bias(layer, linear)
    layer = layer.to(linear.weight.device)
    layer._register_load_state_dict_pre_hook(_load_int8, with_module=True)
    return layer


def _copy_bias(layer: nn.Module, linear: nn.Linear) -> None:
    if linear.bias is not None:
        layer.bias = nn.Parameter(linear.bias.data, requires_grad=False)


def _load_nf4(module: nn.Module, state: dict[str, Tensor], prefix: str, *_: Any) -> None:
    """Rebuild the packed weight and its statistics from a saved state (absent when the file skipped frozen keys)."""
    key = prefix + "weight"
    if key not in state:
        return
    stats = {k[len(key) + 1:]: state.pop(k) for k in list(state) if k.startswith(key + ".")}
    import bitsandbytes as bnb

    module.weight = bnb.nn.Params4bit.from_prequantized(data=state[key], quantized_stats=stats, requires_grad=False,
                                                        device=module.weight.device, module=module)


def _load_int8(module: nn.Module, state: dict[str, Tensor], prefix: str, *_: Any) -> None:
    """Copy the saved row scales too: bitsandbytes reads SCB only under strict loading, our loader is not strict."""
    scb = state.pop(prefix + "SCB", None)
    if scb is None:
        return
    module.weight.SCB = scb.to(module.weight.device).clone()
    if module.state.SCB is not None:
        module.state.SCB = module.weight.SCB


def is_quant_blob(key: str) -> bool:
    """A bitsandbytes quant-state key packed as JSON bytes: its length follows the statistics' values, so its shape
    may differ between two builds of the same config (models/checkpoint.py does not compare it)."""
    return ".quant_state.bitsandbytes__" in key


def frozen_bytes(module: nn.Module) -> int:
    """Bytes the frozen weights of `module` take: parameters that do not train and buffers, by their storage, with
    bitsandbytes' quantization statistics (absmax, code maps, nested statistics, SCB) counted; a tensor shared by
    several layers counts once. Pure: reads the module, imports nothing (benchmarks/memory.py)."""
    seen: set[tuple[str, int]] = set()
    total = 0

    def add(t: Any) -> None:
        nonlocal total
        if not isinstance(t, Tensor) or t.numel() == 0:
            return
        key = (str(t.device), t.data_ptr())
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()

    for p in module.parameters():
        if p.requires_grad:
            continue
        add(p)
        qs = getattr(p, "quant_state", None)
        for stats in (qs, getattr(qs, "state2", None)):
            if stats is not None:
                add(stats.absmax)
                add(stats.code)
        add(getattr(p, "SCB", None))
    for m in module.modules():  # Linear8bitLt moves SCB from its weight to its matmul state after a first forward
        add(getattr(getattr(m, "state", None), "SCB", None))
    for b in module.buffers():
        add(b)
    return total
