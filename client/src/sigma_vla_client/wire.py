"""The wire format shared by the policy server and the robot-side client (docs/architecture.md, "No pickle").

This module imports only numpy, msgpack and the standard library, so the client can use it on a robot that
has no torch. Everything that crosses the socket goes through `pack` / `unpack` here.

Messages are msgpack maps. A numpy array travels as a map
    {"__ndarray__": True, "dtype": "float32", "shape": [14], "data": <raw little-endian bytes>}
with the dtype from a whitelist (no object, string, void or datetime dtypes: nothing that could carry code or
pointers) and `len(data) == prod(shape) * itemsize` checked before a single byte is interpreted.
Unpacking is bounded: `raw=False`, `strict_map_key=True`, no msgpack extension types, and byte / string /
container lengths capped from the message size limit, so a crafted message cannot make us allocate much more
than it weighs.

Observations are checked against the policy's declared inputs ({key: {"dtype", "shape"}}): exact dtype, exact
shape, finite floats, no missing key. Extra keys are an error by default (a typo'd camera name must not be
silently ignored while the policy sees a stale default); a server may allow them, and then drops them.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any, Mapping

import msgpack
import numpy as np

PROTOCOL_VERSION = 1
ALLOWED_DTYPES = frozenset({"bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
                            "float16", "float32", "float64"})
MAX_NDIM = 16
MAX_CONTAINER_LEN = 4096  # items in one msgpack array or map; observations hold a handful of keys


class WireError(ValueError):
    """A message that does not follow the protocol. The text is one line, safe to send back to the peer."""


# ---- arrays -----------------------------------------------------------------------------------------------------
def encode_array(a: np.ndarray) -> dict[str, Any]:
    """The wire map of one array: raw little-endian C-order bytes plus dtype and shape."""
    if a.dtype.name not in ALLOWED_DTYPES:
        raise WireError(f"dtype {a.dtype} cannot travel on the wire (allowed: {sorted(ALLOWED_DTYPES)})")
    a = a.astype(a.dtype.newbyteorder("<"), order="C", copy=False)  # (ascontiguousarray makes 0-d into 1-d)
    # A memoryview avoids one copy of large images; numpy cannot cast empty or 0-d views to bytes.
    data = memoryview(a).cast("B") if a.size and a.ndim else a.tobytes()
    return {"__ndarray__": True, "dtype": a.dtype.name, "shape": list(a.shape), "data": data}


def _check_shape(shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, list) or len(shape) > MAX_NDIM:
        raise WireError(f"array shape must be a list of at most {MAX_NDIM} ints, got {type(shape).__name__}")
    if not all(type(d) is int and d >= 0 for d in shape):  # noqa: E721  (bool is an int subclass: reject it)
        raise WireError(f"array shape must hold non-negative ints, got {shape!r:.80}")
    return tuple(shape)


def decode_array(m: Mapping[str, Any]) -> np.ndarray:
    """The array of a wire map, validated before its bytes are interpreted; a writable copy the caller owns."""
    if set(m) != {"__ndarray__", "dtype", "shape", "data"} or m["__ndarray__"] is not True:
        raise WireError("array map must have exactly __ndarray__=true, dtype, shape, data")
    name, data = m["dtype"], m["data"]
    if not isinstance(name, str) or name not in ALLOWED_DTYPES:
        raise WireError(f"array dtype {name!r:.40} is not allowed (allowed: {sorted(ALLOWED_DTYPES)})")
    if not isinstance(data, bytes):
        raise WireError(f"array data must be msgpack bin (bytes), got {type(data).__name__}")
    shape = _check_shape(m["shape"])
    dtype = np.dtype(name).newbyteorder("<")
    expected = math.prod(shape) * dtype.itemsize
    if expected != len(data):
        raise WireError(f"array of dtype {name} and shape {list(shape)} needs {expected} bytes, got {len(data)}")
    out = np.frombuffer(data, dtype=dtype).reshape(shape)
    return out.astype(out.dtype.newbyteorder("="), copy=True)  # native order, writable (torch.from_numpy-safe)


# ---- messages ---------------------------------------------------------------------------------------------------
def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return encode_array(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot send a {type(obj).__name__} on the wire")


def pack(message: Mapping[str, Any]) -> bytes:
    """msgpack bytes of a message whose leaves are str, int, float, bool, None, bytes, lists, maps or arrays."""
    try:
        return msgpack.packb(message, default=_default, use_bin_type=True)
    except WireError:
        raise
    except (TypeError, ValueError, OverflowError) as err:
        raise WireError(f"cannot encode message: {err}") from None


def _object_hook(m: dict[str, Any]) -> Any:
    return decode_array(m) if "__ndarray__" in m else m


def unpack(data: bytes, max_bytes: int, max_container_len: int = MAX_CONTAINER_LEN) -> dict[str, Any]:
    """The message map in `data`; raises WireError (one line) on anything else, never another exception type.

    Why the caps: msgpack allocates a container before filling it, so an 8-byte header claiming 2**32 items
    would cost gigabytes; byte and string lengths are capped at the message limit, containers at
    `max_container_len`.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireError("expected a binary frame holding msgpack, got a text frame")
    if len(data) > max_bytes:
        raise WireError(f"message of {len(data)} bytes exceeds the limit of {max_bytes} bytes")
    try:
        msg = msgpack.unpackb(data, raw=False, strict_map_key=True, object_hook=_object_hook, use_list=True,
                              max_bin_len=max_bytes, max_str_len=max_bytes, max_array_len=max_container_len,
                              max_map_len=max_container_len, max_ext_len=0)
    except WireError:
        raise
    except Exception as err:  # noqa: BLE001  (untrusted bytes: every msgpack failure mode is a protocol error)
        raise WireError(f"message is not valid msgpack ({type(err).__name__})") from None
    if not isinstance(msg, dict):
        raise WireError(f"message must be a msgpack map, got {type(msg).__name__}")
    return msg


# ---- declared inputs --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InputSpec:
    """What one observation entry must be: exact dtype and exact shape."""

    dtype: np.dtype
    shape: tuple[int, ...]

    def describe(self) -> dict[str, Any]:
        return {"dtype": self.dtype.name, "shape": list(self.shape)}


def parse_inputs(inputs: Any) -> dict[str, InputSpec]:
    """The policy's declared inputs {key: {"dtype": str, "shape": [int, ...]}} as InputSpecs (validated)."""
    if not isinstance(inputs, Mapping) or not inputs:
        raise WireError("metadata 'inputs' must be a non-empty map of key -> {dtype, shape}")
    specs = {}
    for key, spec in inputs.items():
        if not isinstance(key, str) or not isinstance(spec, Mapping):
            raise WireError(f"metadata 'inputs' entry {key!r:.60} must map a string to {{dtype, shape}}")
        name = spec.get("dtype")
        if name not in ALLOWED_DTYPES:
            raise WireError(f"metadata 'inputs' {key}: dtype {name!r} is not allowed")
        try:
            shape = [operator.index(d) for d in spec.get("shape", ())]
        except TypeError:
            raise WireError(f"metadata 'inputs' {key}: shape must be a list of ints") from None
        specs[key] = InputSpec(np.dtype(name), _check_shape(shape))
    return specs


def _check_entry(key: str, value: Any, spec: InputSpec) -> None:
    if not isinstance(value, np.ndarray):
        raise WireError(f"{key}: expected an array, got {type(value).__name__}")
    if value.dtype != spec.dtype:
        raise WireError(f"{key}: dtype {value.dtype.name}, expected {spec.dtype.name}")
    if value.shape != spec.shape:
        raise WireError(f"{key}: shape {list(value.shape)}, expected {list(spec.shape)}")
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        raise WireError(f"{key}: contains non-finite values (NaN or inf)")


def check_observation(obs: Any, specs: Mapping[str, InputSpec], allow_extra: bool = False) -> dict[str, np.ndarray]:
    """The observation restricted to the declared keys, after checking every entry; WireError names the culprit."""
    if not isinstance(obs, dict):
        raise WireError(f"'obs' must be a map of key -> array, got {type(obs).__name__}")
    missing = sorted(set(specs) - set(obs))
    if missing:
        raise WireError(f"observation is missing key(s) {missing}; the policy needs {sorted(specs)}")
    extra = sorted(set(obs) - set(specs))
    if extra and not allow_extra:
        raise WireError(f"observation has unexpected key(s) {extra}; the policy takes exactly {sorted(specs)}")
    for key, spec in specs.items():
        _check_entry(key, obs[key], spec)
    return {key: obs[key] for key in specs}
