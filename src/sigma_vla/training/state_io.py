"""Nested state (optimizer, scheduler, RNG) <-> safetensors + JSON, without pickle (DESIGN section 3).

`flatten_state` walks dicts, lists and tuples: every torch tensor goes to a flat {key: tensor} map for safetensors
and leaves a {"__tensor__": key} marker in a JSON skeleton; numpy arrays become JSON lists with their dtype; dict
keys keep their type (optimizer state is keyed by int). `unflatten_state` is the exact inverse.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file


def flatten_state(obj: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], Any]:
    """(tensors for safetensors, JSON-able skeleton) of a nested state."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(x: Any, key: str) -> Any:
        if isinstance(x, torch.Tensor):
            tensors[key] = x.detach().cpu().contiguous().clone()
            return {"__tensor__": key}
        if isinstance(x, np.ndarray):
            return {"__ndarray__": x.tolist(), "dtype": str(x.dtype)}
        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, dict):
            return {"__dict__": [[k, walk(v, f"{key}/{k}")] for k, v in x.items()]}
        if isinstance(x, tuple):
            return {"__tuple__": [walk(v, f"{key}/{i}") for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [walk(v, f"{key}/{i}") for i, v in enumerate(x)]
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        raise TypeError(f"cannot store {type(x).__name__} at {key!r} without pickle")

    return tensors, walk(obj, prefix or "state")


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of flatten_state."""
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    if not isinstance(skeleton, dict):
        return skeleton
    if "__tensor__" in skeleton:
        return tensors[skeleton["__tensor__"]]
    if "__ndarray__" in skeleton:
        return np.asarray(skeleton["__ndarray__"], dtype=skeleton["dtype"])
    if "__tuple__" in skeleton:
        return tuple(unflatten_state(v, tensors) for v in skeleton["__tuple__"])
    if "__dict__" in skeleton:
        return {k: unflatten_state(v, tensors) for k, v in skeleton["__dict__"]}
    raise ValueError(f"unknown state skeleton node {sorted(skeleton)}")


def save_state(state: Any, directory: Path, name: str) -> None:
    """`name.safetensors` (only if there are tensors) + `name.json`."""
    tensors, skeleton = flatten_state(state, name)
    if tensors:
        save_file(tensors, str(directory / f"{name}.safetensors"))
    (directory / f"{name}.json").write_text(json.dumps(skeleton))


def load_state(directory: Path, name: str) -> Any:
    skeleton = json.loads((directory / f"{name}.json").read_text())
    path = directory / f"{name}.safetensors"
    tensors = load_file(str(path)) if path.exists() else {}
    return unflatten_state(skeleton, tensors)


def rng_state() -> dict[str, Any]:
    """This process's RNG streams: torch CPU (a uint8 tensor), CUDA if present, python and numpy."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate(),
                             "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
