"""The wire format on its own: arrays round-trip exactly, untrusted bytes only ever raise WireError, and the
robot-side client imports without torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sigma_vla_client.wire import ALLOWED_DTYPES, WireError, check_observation, pack, parse_inputs, unpack

DTYPES = st.sampled_from(sorted(ALLOWED_DTYPES)).map(np.dtype)


@settings(max_examples=150, deadline=None)
@given(hnp.arrays(DTYPES, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)))
def test_arrays_round_trip_bit_exact(a):
    back = unpack(pack({"a": a}), 2**20)["a"]
    assert back.dtype == a.dtype and back.shape == a.shape
    assert back.tobytes() == a.tobytes()  # bit-exact, NaN payloads included
    assert back.flags.writeable


def test_big_endian_and_non_contiguous_inputs_arrive_native():
    a = np.arange(12, dtype=">f4").reshape(3, 4)[:, ::2]
    back = unpack(pack({"a": a}), 2**20)["a"]
    np.testing.assert_array_equal(back, a)
    assert back.dtype == np.dtype("float32")


@pytest.mark.parametrize("bad", [np.array(["a"]), np.array([object()], dtype=object), np.array([1 + 2j]),
                                 np.array(["2020-01-01"], dtype="datetime64[D]")])
def test_unlisted_dtypes_cannot_be_sent(bad):
    with pytest.raises(WireError, match="cannot travel"):
        pack({"a": bad})


def test_unknown_python_objects_cannot_be_sent():
    with pytest.raises(WireError, match="cannot encode"):
        pack({"a": {1, 2}})


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_only_raise_wire_error(data):
    try:
        unpack(data, 1024)
    except WireError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=64), st.integers(0, 2000))
def test_corrupted_valid_messages_only_raise_wire_error(noise, position):
    msg = bytearray(pack({"type": "infer", "obs": {"s": np.arange(14, dtype=np.float32)}, "id": 1}))
    position %= len(msg)
    msg[position:position + len(noise)] = noise
    try:
        unpack(bytes(msg), 4096)
    except WireError:
        pass


def test_unpack_caps_containers_and_size():
    with pytest.raises(WireError, match="exceeds the limit"):
        unpack(bytes(2000), 1000)
    with pytest.raises(WireError, match="not valid msgpack"):
        unpack(msgpack.packb({"a": list(range(5000))}), 2**20)
    with pytest.raises(WireError, match="not valid msgpack"):
        unpack(b"\x81\xa1a\xdb" + (2**31).to_bytes(4, "big"), 512)  # a str header claiming 2 GiB


def test_check_observation_restricts_to_declared_keys():
    specs = parse_inputs({"s": {"dtype": "float32", "shape": (2,)}})
    obs = {"s": np.zeros(2, np.float32), "extra": np.zeros(1, np.uint8)}
    with pytest.raises(WireError, match="unexpected key"):
        check_observation(obs, specs)
    assert list(check_observation(obs, specs, allow_extra=True)) == ["s"]


@pytest.mark.parametrize("inputs", [{}, {"s": {"dtype": "object", "shape": [1]}}, {"s": {"dtype": "float32",
                                    "shape": [1.5]}}, {"s": {"dtype": "float32", "shape": [-1]}}, ["s"]])
def test_bad_declared_inputs_are_refused(inputs):
    with pytest.raises(WireError):
        parse_inputs(inputs)


def test_client_imports_without_torch_or_the_server():
    """A robot installs the client without torch: block torch outright and import the client."""
    code = textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "transformers", "mujoco", "gymnasium"):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        import sigma_vla_client
        bad = [m for m in sys.modules if m == "sigma_vla" or m.startswith(("torch", "sigma_vla."))]
        assert not bad, bad
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
