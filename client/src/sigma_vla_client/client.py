"""The robot side of `sigma serve`: a synchronous client, because a robot's control loop is synchronous.

    from sigma_vla_client import PolicyClient
    with PolicyClient("gpu-box", 8000, token="...") as policy:
        print(policy.metadata["inputs"])          # exactly the arrays an observation must hold
        policy.reset()                            # new episode: clears this connection's semantic memory
        out = policy.infer({"observation.state": state, "observation.images.front": image}, "place it far left")
        chunk = out["actions"]                    # (n, Da) float32

An observation holds the state as a float vector (float64 is cast to the float32 the policy declares) and each
camera frame as HWC uint8, H x W x 3 (`metadata["inputs"]` gives H and W): a channels-first or float frame is
refused before it is sent, with what it must be.

This package imports only numpy, msgpack, websockets and the standard library (`pip install ./client` from a
clone of sigma-vla), so a robot installs it without torch. Episode state lives in the server, per connection:
when the connection drops, the client reconnects with exponential backoff (bounded), and the new connection
starts a fresh episode (as after reset()); `reconnects` counts how often that happened. One client per control
loop: a lock serializes calls from several threads, but their episode state is shared.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from typing import Any, Mapping

import numpy as np
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from sigma_vla_client.wire import PROTOCOL_VERSION, InputSpec, WireError, pack, parse_inputs, unpack

log = logging.getLogger("sigma_vla_client")

_CONNECT_PARAMS = inspect.signature(connect).parameters
_RETRYABLE = (OSError, ConnectionClosed, InvalidHandshake)  # TimeoutError and refused connections are OSErrors


class PolicyClientError(Exception):
    """Base of every error this client raises."""


class PolicyServerError(PolicyClientError):
    """The server answered with an error (bad observation, policy failure); the connection is still usable."""

    def __init__(self, code: str, message: str):
        self.code, self.message = code, message
        super().__init__(f"policy server error ({code}): {message}")


class PolicyConnectionError(PolicyClientError):
    """No connection after the bounded retries, or the server refused us for good (wrong path, protocol)."""


class PolicyAuthError(PolicyConnectionError):
    """HTTP 401: the token is missing or wrong. Never retried."""


class PolicyTimeoutError(PolicyClientError):
    """No reply within `timeout`; the connection stays open and the late reply is discarded when it comes."""


def _is_frame(spec: InputSpec) -> bool:
    return spec.dtype == np.uint8 and len(spec.shape) == 3 and spec.shape[2] == 3


def _frame_error(key: str, value: np.ndarray, spec: InputSpec) -> str:
    h, w, _ = spec.shape
    hint = ""
    if value.shape == (3, h, w):
        hint = " (channels first: pass frame.transpose(1, 2, 0))"
    elif value.dtype.kind == "f":
        hint = " (a float image: scale it to 0..255 and cast with .astype(np.uint8))"
    got = " x ".join(map(str, value.shape))
    return f"{key}: a frame must be HWC uint8, H x W x 3 = {h} x {w} x 3; got {value.dtype.name} {got}{hint}"


def conform(obs: Mapping[str, Any], specs: Mapping[str, InputSpec]) -> dict[str, Any]:
    """The observation as the policy declares it (`metadata["inputs"]`): a float array where float32 is declared
    is cast to float32 (numpy's default float64 state included), and a frame that is not HWC uint8, H x W x 3, is
    refused with what it must be (PolicyClientError). Anything else goes as given: the server checks every entry
    and its error names the key."""
    out = dict(obs)
    for key, spec in specs.items():
        value = out.get(key)
        if not isinstance(value, np.ndarray):
            continue
        if _is_frame(spec) and (value.dtype != np.uint8 or value.shape != spec.shape):
            raise PolicyClientError(_frame_error(key, value, spec))
        if spec.dtype == np.float32 and value.dtype.kind == "f" and value.dtype != np.float32:
            out[key] = value.astype(np.float32)
    return out


def _ws_url(host: str, port: int) -> str:
    return f"ws://[{host}]:{port}/" if ":" in host else f"ws://{host}:{port}/"


class PolicyClient:
    """Sync client of a policy server: `metadata`, `infer(obs, instruction)`, `reset()`.

    timeout: seconds to wait for one reply. retries / backoff / max_backoff: a (re)connection is attempted
    1 + retries times, sleeping backoff, 2 x backoff, ... (capped at max_backoff) in between.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
                 timeout: float = 30.0, connect_timeout: float = 10.0, retries: int = 5, backoff: float = 0.1,
                 max_backoff: float = 5.0, max_message_bytes: int = 64 * 2**20):
        if timeout <= 0 or connect_timeout <= 0 or retries < 0 or backoff < 0:
            raise ValueError(f"need timeout, connect_timeout > 0 and retries, backoff >= 0; got {timeout}, "
                             f"{connect_timeout}, {retries}, {backoff}")
        self.url = _ws_url(host, port)
        self.token, self.timeout, self.connect_timeout = token, timeout, connect_timeout
        self.retries, self.backoff, self.max_backoff = retries, backoff, max_backoff
        self.max_message_bytes = max_message_bytes
        self.reconnects = 0
        self._ws: ClientConnection | None = None
        self._meta: dict[str, Any] = {}
        self._next_id = 1
        self._lock = threading.Lock()
        self._connect_with_retries()

    # ---- public API -------------------------------------------------------------------------------------------
    @property
    def metadata(self) -> dict[str, Any]:
        """The server's first message: action_dim, horizon, chunk, fps, cameras, image_size, state_dim, inputs,
        versions, limits."""
        return dict(self._meta)

    def infer(self, obs: Mapping[str, np.ndarray], instruction: str) -> dict[str, Any]:
        """The next action chunk: {"actions" (n, Da) float32, "adapter_scale", "risk", "tau_norm", "timing"}.

        obs: the state as a float vector (float64 is cast to float32) and each frame as HWC uint8, H x W x 3, as
        `metadata["inputs"]` declares. Raises PolicyClientError for a frame of another layout or dtype (before
        sending), PolicyServerError when the server rejects the observation (the message says which key and why).
        """
        start = time.perf_counter()
        obs = conform(obs, self._specs())
        reply = self._request({"type": "infer", "obs": obs, "instruction": instruction}, "result")
        reply.setdefault("timing", {})["roundtrip_ms"] = (time.perf_counter() - start) * 1e3
        return reply

    def _specs(self) -> dict[str, InputSpec]:
        """The declared inputs of the server's metadata; none when it declares none readable (the server checks)."""
        try:
            return parse_inputs(self._meta.get("inputs"))
        except WireError:
            return {}

    def reset(self) -> None:
        """Start a new episode on the server (clears this connection's semantic memory and action queue)."""
        self._request({"type": "reset"}, "reset")

    def close(self) -> None:
        if self._ws is not None:
            self._ws.close()
            self._ws = None

    def __enter__(self) -> PolicyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- connection -------------------------------------------------------------------------------------------
    def _open(self) -> None:
        """One connection attempt: handshake, then the metadata message."""
        kwargs: dict[str, Any] = {"compression": None, "open_timeout": self.connect_timeout,
                                  "max_size": self.max_message_bytes, "close_timeout": 2.0}
        if self.token is not None:
            kwargs["additional_headers"] = {"Authorization": f"Bearer {self.token}"}
        if "legacy" in _CONNECT_PARAMS:  # websockets >= 16: a plain connection, no deprecation warning
            kwargs["legacy"] = True
        if "proxy" in _CONNECT_PARAMS:  # a robot talks to its policy directly, whatever HTTP_PROXY says
            kwargs["proxy"] = None
        try:
            ws = connect(self.url, **kwargs)
        except InvalidStatus as err:
            status = err.response.status_code
            if status == 401:
                raise PolicyAuthError(f"{self.url}: HTTP 401, the token is missing or wrong") from None
            if status < 500:
                raise PolicyConnectionError(f"{self.url}: HTTP {status} at the handshake") from None
            raise
        try:
            hello = self._decode(ws.recv(timeout=self.connect_timeout))
        except BaseException:
            ws.close()
            raise
        self._check_hello(hello, ws)
        hello.pop("type")
        self._ws, self._meta = ws, hello

    def _check_hello(self, hello: dict[str, Any], ws: ClientConnection) -> None:
        if hello.get("type") == "error":
            ws.close()
            raise PolicyServerError(str(hello.get("code")), str(hello.get("error")))
        protocol = (hello.get("versions") or {}).get("protocol")
        if hello.get("type") != "metadata" or protocol != PROTOCOL_VERSION:
            ws.close()
            raise PolicyConnectionError(f"{self.url}: expected metadata of protocol {PROTOCOL_VERSION}, got "
                                        f"type {hello.get('type')!r}, protocol {protocol!r}")

    def _connect_with_retries(self) -> None:
        delay, last = self.backoff, None
        for attempt in range(self.retries + 1):
            try:
                self._open()
                return
            except _RETRYABLE as err:
                last = err
                if attempt < self.retries:
                    log.warning("connecting to %s failed (%s); retrying in %.2f s", self.url, err, delay)
                    time.sleep(delay)
                    delay = min(2 * delay, self.max_backoff)
        raise PolicyConnectionError(f"could not connect to {self.url} after {self.retries + 1} attempt(s): "
                                    f"{type(last).__name__}: {last}")

    def _drop(self) -> None:
        if self._ws is not None:
            try:
                self._ws.close()
            except Exception:  # noqa: BLE001  (already broken; we only free it)
                pass
            self._ws = None

    # ---- requests ---------------------------------------------------------------------------------------------
    def _decode(self, raw: bytes | str) -> dict[str, Any]:
        try:
            return unpack(raw, self.max_message_bytes)
        except WireError as err:
            raise PolicyClientError(f"{self.url} sent an unreadable message: {err}") from None

    def _request(self, message: dict[str, Any], expect: str) -> dict[str, Any]:
        """Send, wait for the matching reply; after a dropped connection, reconnect and send once more."""
        with self._lock:
            msg_id, self._next_id = self._next_id, self._next_id + 1
            data = pack({**message, "id": msg_id})
            limit = self._meta.get("limits", {}).get("max_message_bytes")
            if limit is not None and len(data) > limit:
                raise PolicyClientError(f"message of {len(data)} bytes exceeds the server's limit of {limit}")
            for attempt in range(2):
                if self._ws is None:
                    self._connect_with_retries()
                    self.reconnects += 1
                    log.warning("reconnected to %s: the server starts a fresh episode", self.url)
                try:
                    self._ws.send(data)
                    return self._await_reply(msg_id, expect)
                except ConnectionClosed as err:
                    self._drop()
                    if attempt:
                        raise PolicyConnectionError(f"connection to {self.url} lost twice: {err}") from None
            raise AssertionError("unreachable")

    def _await_reply(self, msg_id: int, expect: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                raw = self._ws.recv(timeout=max(deadline - time.monotonic(), 0.0))
            except TimeoutError:
                raise PolicyTimeoutError(f"no reply from {self.url} within {self.timeout} s") from None
            reply = self._decode(raw)
            reply_id = reply.get("id")
            if isinstance(reply_id, int) and reply_id < msg_id:
                continue  # the late reply to a request that timed out
            if reply.get("type") == "error":
                raise PolicyServerError(str(reply.get("code")), str(reply.get("error")))
            if reply.get("type") != expect or reply_id != msg_id:
                self._drop()
                raise PolicyClientError(f"{self.url}: expected a {expect!r} reply to id {msg_id}, got type "
                                        f"{reply.get('type')!r}, id {reply_id!r}")
            reply.pop("type")
            return reply
