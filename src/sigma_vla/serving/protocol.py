"""What the server serves: the `ServedPolicy` interface, and the checks on what a policy hands back.

The server never trusts the client (sigma_vla_client.wire checks every observation) and checks the policy too: the
metadata it announces must be complete, and its actions must be a finite float32 (n, Da) chunk, because a
controller must never receive a non-finite command, even from a buggy policy (docs/architecture.md, "Non-finite
commands never reach a controller").
"""

from __future__ import annotations

import sys
from importlib import metadata as importlib_metadata
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

import numpy as np

from sigma_vla import __version__
from sigma_vla_client.wire import PROTOCOL_VERSION, InputSpec, parse_inputs

# Keys every policy's metadata() must carry (the client and the robot's control loop read them).
REQUIRED_METADATA = ("action_dim", "horizon", "chunk", "fps", "cameras", "image_size", "state_dim", "inputs")
# Keys every infer() output must carry.
RESULT_KEYS = ("actions", "adapter_scale", "risk", "tau_norm")
# Keys the server itself sets on the metadata message; a policy may not shadow them.
RESERVED_METADATA = ("type", "versions", "limits")


@runtime_checkable
class ServedPolicy(Protocol):
    """One connection's policy: shared weights, its own episode state (semantic memory, action queue).

    The server calls `policy_factory()` once per connection, so two robots never share episode state; the
    factory shares the weights. All three methods run in the server's single model thread, one at a time.
    """

    def metadata(self) -> dict[str, Any]:
        """action_dim, horizon, chunk, fps, cameras, image_size, state_dim, and `inputs`: {key: {dtype, shape}},
        exactly the arrays an observation must contain."""
        ...

    def reset(self) -> None:
        """Start a new episode: clear the semantic memory and any queued actions."""
        ...

    def infer(self, obs: dict[str, np.ndarray], instruction: str) -> dict[str, Any]:
        """The next chunk for a checked observation: at least "actions" (n, Da) float32, "adapter_scale" float,
        "risk" {name: float}, "tau_norm" float."""
        ...


PolicyFactory = Callable[[], ServedPolicy]


class PolicyOutputError(RuntimeError):
    """The policy broke its contract (missing key, wrong shape, non-finite action); reported to the client."""


def check_metadata(meta: Any) -> tuple[dict[str, Any], dict[str, InputSpec]]:
    """The policy's metadata (a plain dict) and its parsed input specs; raises PolicyOutputError if incomplete."""
    if not isinstance(meta, Mapping):
        raise PolicyOutputError(f"policy metadata() must return a dict, got {type(meta).__name__}")
    missing = [k for k in REQUIRED_METADATA if k not in meta]
    if missing:
        raise PolicyOutputError(f"policy metadata() lacks {missing}")
    shadowed = [k for k in RESERVED_METADATA if k in meta]
    if shadowed:
        raise PolicyOutputError(f"policy metadata() may not set the server's keys {shadowed}")
    try:
        specs = parse_inputs(meta["inputs"])
    except ValueError as err:
        raise PolicyOutputError(str(err)) from None
    meta = dict(meta)
    meta["inputs"] = {key: spec.describe() for key, spec in specs.items()}  # canonical: dtype names, int lists
    return meta, specs


def _as_float(name: str, value: Any) -> float:
    """A diagnostic number; non-finite is passed on as information (only actions must be finite)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise PolicyOutputError(f"policy output {name!r} must be a number, got {type(value).__name__}") from None


def check_result(out: Any, action_dim: int) -> dict[str, Any]:
    """The reply fields of a policy's infer() output, after checking the contract.

    Why refuse non-finite actions here although the adapter already guards them: the server is the last line
    before a motor, and a policy other than SigmaPolicy may be plugged in.
    """
    if not isinstance(out, Mapping) or any(k not in out for k in RESULT_KEYS):
        raise PolicyOutputError(f"policy infer() must return a dict with at least {list(RESULT_KEYS)}")
    actions = np.asarray(out["actions"])
    if actions.ndim != 2 or actions.shape[1] != action_dim or actions.shape[0] < 1:
        raise PolicyOutputError(f"policy actions have shape {list(actions.shape)}, expected [n, {action_dim}]")
    if actions.dtype.kind not in "fiu":
        raise PolicyOutputError(f"policy actions have dtype {actions.dtype}, expected float32")
    actions = actions.astype(np.float32, copy=False)
    if not np.isfinite(actions).all():
        raise PolicyOutputError("policy returned non-finite actions; refusing to send them to a robot")
    risk = out["risk"]
    if not isinstance(risk, Mapping):
        raise PolicyOutputError(f"policy output 'risk' must be a dict of floats, got {type(risk).__name__}")
    flags = out.get("flags", [])
    if not isinstance(flags, (list, tuple)) or len(flags) > 8 or not all(isinstance(f, str) and len(f) <= 32
                                                                         for f in flags):
        raise PolicyOutputError("policy output 'flags' must be a short list of short strings")
    return {"actions": actions,
            "adapter_scale": _as_float("adapter_scale", out["adapter_scale"]),
            "risk": {str(k): _as_float(f"risk.{k}", v) for k, v in risk.items()},
            "tau_norm": _as_float("tau_norm", out["tau_norm"]), "flags": list(flags)}


def _installed_version(dist: str) -> str | None:
    """A package's version without importing it (the server itself never needs torch)."""
    module = sys.modules.get(dist)
    if module is not None and hasattr(module, "__version__"):
        return str(module.__version__)
    try:
        return importlib_metadata.version(dist)
    except importlib_metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, Any]:
    """What the metadata message reports, so a client can refuse a protocol it does not speak."""
    return {"sigma_vla": __version__, "protocol": PROTOCOL_VERSION, "numpy": np.__version__,
            "torch": _installed_version("torch"), "python": sys.version.split()[0]}
