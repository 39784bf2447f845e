"""The malformed-message suite: each bad message gets an error reply naming the problem, and
the same connection then still serves a valid request; nothing bad ever reaches the policy."""

from __future__ import annotations

from typing import Any, Callable

import msgpack
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from sigma_vla_client import PolicyAuthError, PolicyClient
from sigma_vla_client.wire import pack
from tests.serving.helpers import DS, LIMIT, TOKEN, RawConnection, infer_message, make_obs


def _obs_with(**entries: Any) -> dict[str, Any]:
    obs: dict[str, Any] = make_obs()
    for key, value in entries.items():
        key = key.replace("__", ".")
        if value is None:
            del obs[key]
        else:
            obs[key] = value
    return obs


def _state(dtype: Any = np.float32, shape: tuple[int, ...] = (DS,), fill: float = 0.0) -> np.ndarray:
    return np.full(shape, fill, dtype)


def _forged(**fields: Any) -> dict[str, Any]:
    """A hand-made array map: the client never sends these, an attacker might."""
    base = {"__ndarray__": True, "dtype": "float32", "shape": [DS], "data": bytes(4 * DS)}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


def _infer_with_state(state: Any) -> bytes:
    return msgpack.packb({"type": "infer", "obs": {"observation.state": state, "observation.images.front":
                                                   _image_map()}, "instruction": "x", "id": 5}, use_bin_type=True)


def _image_map() -> dict[str, Any]:
    return {"__ndarray__": True, "dtype": "uint8", "shape": [64, 64, 3], "data": bytes(64 * 64 * 3)}


def _nested(depth: int) -> bytes:
    return b"\x91" * depth + b"\x00"  # fixarray of one element, nested


CASES: dict[str, tuple[Callable[[], bytes | str], str, str]] = {
    # name: (message, expected code, substring of the error)
    "wrong dtype state": (lambda: pack(infer_message(_obs_with(observation__state=_state(np.float64)))),
                          "bad_request", "dtype float64, expected float32"),
    "wrong dtype image": (lambda: pack(infer_message(_obs_with(observation__images__front=np.zeros(
        (64, 64, 3), np.float32)))), "bad_request", "expected uint8"),
    "wrong shape state": (lambda: pack(infer_message(_obs_with(observation__state=_state(shape=(DS - 1,))))),
                          "bad_request", f"shape [{DS - 1}], expected [{DS}]"),
    "wrong shape image": (lambda: pack(infer_message(_obs_with(observation__images__front=np.zeros(
        (32, 32, 3), np.uint8)))), "bad_request", "shape [32, 32, 3]"),
    "missing key": (lambda: pack(infer_message(_obs_with(observation__images__front=None))),
                    "bad_request", "missing key(s) ['observation.images.front']"),
    "extra key": (lambda: pack(infer_message(_obs_with(observation__images__wrist=np.zeros(3, np.uint8)))),
                  "bad_request", "unexpected key(s) ['observation.images.wrist']"),
    "nan": (lambda: pack(infer_message(_obs_with(observation__state=_state(fill=np.nan)))),
            "bad_request", "non-finite"),
    "inf": (lambda: pack(infer_message(_obs_with(observation__state=_state(fill=-np.inf)))),
            "bad_request", "non-finite"),
    "oversized": (lambda: pack(infer_message(_obs_with(observation__images__front=np.zeros(
        (int(LIMIT * 1.5),), np.uint8)))), "too_large", "exceeds the limit"),
    "garbage bytes": (lambda: bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
                      "bad_request", "not valid msgpack"),
    "reserved msgpack byte": (lambda: b"\xc1", "bad_request", "not valid msgpack"),
    "empty frame": (lambda: b"", "bad_request", "not valid msgpack"),
    "truncated message": (lambda: pack(infer_message())[:-100], "bad_request", "not valid msgpack"),
    "trailing bytes": (lambda: pack(infer_message()) + b"\x00", "bad_request", "not valid msgpack"),
    "text frame": (lambda: '{"type": "infer"}', "bad_request", "text frame"),
    "not a map": (lambda: msgpack.packb([1, 2, 3]), "bad_request", "must be a msgpack map"),
    "int map key": (lambda: msgpack.packb({1: 2}), "bad_request", "not valid msgpack"),
    "ext type": (lambda: msgpack.packb({"type": msgpack.ExtType(5, b"xx")}), "bad_request", "not valid msgpack"),
    "huge array header": (lambda: b"\xdd\xff\xff\xff\xff", "bad_request", "not valid msgpack"),
    "huge bin header": (lambda: b"\xc6\xff\xff\xff\xff", "bad_request", "not valid msgpack"),
    "deep nesting": (lambda: _nested(50_000), "bad_request", "not valid msgpack"),
    "wrong message type": (lambda: pack({"type": "dance", "id": 3}), "bad_request", "unknown message type"),
    "missing message type": (lambda: pack({"id": 3}), "bad_request", "unknown message type"),
    "id not an int": (lambda: pack({**infer_message(), "id": "7"}), "bad_request", "'id' must be an integer"),
    "id is a bool": (lambda: pack({**infer_message(), "id": True}), "bad_request", "'id' must be an integer"),
    "instruction not a string": (lambda: pack(infer_message(instruction=42)), "bad_request", "'instruction'"),
    "instruction too long": (lambda: pack(infer_message(instruction="x" * 5000)), "bad_request", "exceeds"),
    "obs not a map": (lambda: pack({**infer_message(), "obs": [1, 2]}), "bad_request", "'obs' must be a map"),
    "plain list instead of array": (lambda: pack(infer_message(_obs_with(observation__state=[0.0] * DS))),
                                    "bad_request", "expected an array, got list"),
    "forged dtype object": (lambda: _infer_with_state(_forged(dtype="object")), "bad_request", "not allowed"),
    "forged dtype unicode": (lambda: _infer_with_state(_forged(dtype="<U4")), "bad_request", "not allowed"),
    "forged dtype float128": (lambda: _infer_with_state(_forged(dtype="float128")), "bad_request", "not allowed"),
    "forged data too short": (lambda: _infer_with_state(_forged(data=bytes(4 * DS - 1))), "bad_request",
                              f"needs {4 * DS} bytes"),
    "forged data too long": (lambda: _infer_with_state(_forged(data=bytes(4 * DS + 1))), "bad_request",
                             f"needs {4 * DS} bytes"),
    "forged negative shape": (lambda: _infer_with_state(_forged(shape=[-DS])), "bad_request", "non-negative"),
    "forged shape not a list": (lambda: _infer_with_state(_forged(shape=str(DS))), "bad_request", "shape"),
    "forged data as text": (lambda: _infer_with_state(_forged(data="x" * (4 * DS))), "bad_request", "msgpack bin"),
    "forged missing field": (lambda: _infer_with_state(_forged(shape=None)), "bad_request", "exactly"),
    "forged extra field": (lambda: _infer_with_state(_forged(order="F")), "bad_request", "exactly"),
    "forged marker not true": (lambda: _infer_with_state(_forged(__ndarray__=1)), "bad_request", "exactly"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_message_gets_error_reply_and_connection_survives(raw: RawConnection, name: str):
    make, code, fragment = CASES[name]
    reply = raw.send_raw(make())
    assert reply["type"] == "error", reply
    assert reply["code"] == code
    assert fragment in reply["error"], reply["error"]
    assert "\n" not in reply["error"]
    ok = raw.send(infer_message(msg_id=99))
    assert ok["type"] == "result" and ok["id"] == 99
    assert ok["risk"]["calls"] == 1.0  # nothing bad reached the policy: this is its first call


def test_error_reply_echoes_the_id_when_readable(raw: RawConnection):
    reply = raw.send(infer_message(_obs_with(observation__state=_state(np.float64)), msg_id=41))
    assert reply["type"] == "error" and reply["id"] == 41


def test_frame_over_hard_limit_closes_1009_and_server_stays_up(server):
    conn = RawConnection(server.port)
    conn.ws.send(bytes(3 * LIMIT))  # hard limit is 2 x LIMIT: websockets refuses to buffer it
    with pytest.raises(ConnectionClosed) as info:
        conn.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    fresh = RawConnection(server.port)
    assert fresh.send(infer_message())["type"] == "result"
    fresh.close()


@pytest.mark.parametrize("headers,path", [(None, "/"), ({"Authorization": "Bearer wrong"}, "/"),
                                          ({"Authorization": TOKEN}, "/"), (None, "/?token=wrong"),
                                          ({"Authorization": "Basic czNjcmV0LXRva2Vu"}, "/")])
def test_bad_token_gets_401_and_server_stays_up(token_server, headers, path):
    with pytest.raises(InvalidStatus) as info:
        RawConnection(token_server.port, path=path, headers=headers)
    assert info.value.response.status_code == 401
    good = RawConnection(token_server.port, headers={"Authorization": f"Bearer {TOKEN}"})
    assert good.send(infer_message())["type"] == "result"
    good.close()


def test_token_in_query_is_accepted(token_server):
    conn = RawConnection(token_server.port, path=f"/?token={TOKEN}")
    assert conn.send(infer_message())["type"] == "result"
    conn.close()


def test_client_with_wrong_token_raises_auth_error_without_retrying(token_server):
    with pytest.raises(PolicyAuthError, match="401"):
        PolicyClient("127.0.0.1", token_server.port, token="wrong", retries=50, backoff=1.0)
    with PolicyClient("127.0.0.1", token_server.port, token=TOKEN) as client:
        assert client.infer(make_obs(), "x")["actions"].shape == (8, 4)


def test_unknown_path_is_404(server):
    with pytest.raises(InvalidStatus) as info:
        RawConnection(server.port, path="/admin")
    assert info.value.response.status_code == 404
