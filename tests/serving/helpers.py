"""Serving test helpers: observations, server configs, and a raw websocket that sends arbitrary bytes (the client
only sends well-formed messages, so the malformed suite bypasses it)."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
from websockets.sync.client import ClientConnection, connect

from sigma_vla.serving.server import ServerConfig
from sigma_vla.sim.so101 import STATE_NAMES
from sigma_vla_client.wire import pack, unpack

IMAGE_SIZE = 64
DS = len(STATE_NAMES)  # the stand-in is shaped like the SO-101 simulator
LIMIT = 64 * 1024  # small message limit for the tests: a valid observation is ~12.4 KB
TOKEN = "s3cret-token"
INSTRUCTION = "place it far left"


def make_obs(state0: float = 0.0, image_value: int = 0, size: int = IMAGE_SIZE) -> dict[str, np.ndarray]:
    state = np.zeros(DS, np.float32)
    state[0] = state0
    return {"observation.state": state,
            "observation.images.front": np.full((size, size, 3), image_value, np.uint8)}


def infer_message(obs: dict[str, Any] | None = None, msg_id: int = 1, instruction: Any = INSTRUCTION) -> dict:
    return {"type": "infer", "obs": make_obs() if obs is None else obs, "instruction": instruction, "id": msg_id}


def _connect_kwargs() -> dict[str, Any]:
    params = inspect.signature(connect).parameters
    kwargs: dict[str, Any] = {"compression": None, "max_size": 2**24, "open_timeout": 10}
    if "legacy" in params:
        kwargs["legacy"] = True
    if "proxy" in params:
        kwargs["proxy"] = None
    return kwargs


class RawConnection:
    """A websocket to the server that sends whatever bytes a test wants and decodes the replies."""

    def __init__(self, port: int, path: str = "/", headers: dict[str, str] | None = None):
        self.ws: ClientConnection = connect(f"ws://127.0.0.1:{port}{path}", additional_headers=headers,
                                            **_connect_kwargs())
        self.metadata = self.recv()

    def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        return unpack(self.ws.recv(timeout=timeout), 2**24)

    def send_raw(self, data: bytes | str) -> dict[str, Any]:
        self.ws.send(data)
        return self.recv()

    def send(self, message: dict[str, Any]) -> dict[str, Any]:
        return self.send_raw(pack(message))

    def close(self) -> None:
        self.ws.close()


def server_config(**overrides: Any) -> ServerConfig:
    return ServerConfig(**{"host": "127.0.0.1", "port": 0, "max_message_bytes": LIMIT, **overrides})


def handshake_status(port: int, path: str = "/", header_lines: str = "") -> int:
    """The HTTP status of a websocket handshake sent byte for byte (clients normalise headers; a test of what the
    server accepts must control every byte, trailing spaces included)."""
    import base64
    import os
    import socket

    key = base64.b64encode(os.urandom(16)).decode()
    request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{header_lines}\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request.encode("latin-1"))
        status = sock.recv(64).split(b"\r\n", 1)[0]
    return int(status.split()[1])
