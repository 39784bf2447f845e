"""Model directories: `model.safetensors` + `config.json`, written atomically, read without pickle
(docs/architecture.md, "No pickle").

Frozen weights that an installed package can rebuild exactly (the pretrained MiniLM) are left out of the file and
restored by building the model from its config; the loader checks that nothing else is missing. A quantized
backbone's layers load their packed weights through their own hooks (models/quantize.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from sigma_vla.errors import SigmaError, first_line
from sigma_vla.models.quantize import is_quant_blob
from sigma_vla.outdir import atomic_write, atomic_write_text, read_json

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def save_model_dir(directory: str | Path, module: nn.Module, config: dict[str, Any], kind: str,
                   skip_keys: Iterable[str] = ()) -> Path:
    """Write module's state dict (minus skip_keys) and {'kind', 'config', 'skipped_frozen'} as config.json."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    skip = set(skip_keys)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items() if k not in skip}
    atomic_write(out / WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp), metadata={"kind": kind}))
    meta = {"kind": kind, "config": config, "skipped_frozen": sorted(skip)}
    atomic_write_text(out / CONFIG_FILE, json.dumps(meta, indent=2) + "\n")
    return out


def read_model_dir(directory: str | Path, kind: str) -> tuple[dict[str, Any], dict[str, Tensor], list[str]]:
    """-> (config dict, state dict, keys that were skipped as frozen). Errors name the file and what is wrong."""
    d = Path(directory)
    cfg_path, w_path = d / CONFIG_FILE, d / WEIGHTS_FILE
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise SigmaError(f"missing (expected a model directory with {CONFIG_FILE} and {WEIGHTS_FILE})", file=p)
    meta = read_json(cfg_path)  # size-capped, regular files only
    if not isinstance(meta, dict) or meta.get("kind") != kind:
        got = meta.get("kind") if isinstance(meta, dict) else type(meta).__name__
        raise SigmaError(f"holds a {got!r}, expected {kind!r}", file=cfg_path, field="kind")
    if not isinstance(meta.get("config"), dict):
        raise SigmaError("missing or not a JSON object", file=cfg_path, field="config")
    try:
        state = load_file(str(w_path))
    except (SafetensorError, OSError) as err:  # truncated, emptied or foreign: say so, no traceback
        raise SigmaError(f"unreadable weights (truncated or corrupt?): {first_line(err)}", file=w_path) from None
    return meta["config"], state, list(meta.get("skipped_frozen", []))


def load_state_checked(module: nn.Module, state: dict[str, Tensor], skipped: list[str], source: str | Path) -> None:
    """Load state into module; only keys recorded as skipped-frozen may be missing, nothing may be unexpected."""
    own = module.state_dict()
    for key, value in state.items():  # a relabelled or reshaped tensor is refused, not cast or crashed on
        if is_quant_blob(key):  # JSON bytes whose length follows the statistics: no fixed shape to compare
            continue
        if key in own and (value.dtype != own[key].dtype or value.shape != own[key].shape):
            raise SigmaError(f"weight {key!r} is {value.dtype} {list(value.shape)}, the config needs "
                             f"{own[key].dtype} {list(own[key].shape)}", file=source)
    result = module.load_state_dict(state, strict=False)
    missing = sorted(set(result.missing_keys) - set(skipped))
    if missing or result.unexpected_keys:
        raise SigmaError(f"weights do not fit the config: missing {missing[:5]}, unexpected "
                         f"{sorted(result.unexpected_keys)[:5]}", file=source)
