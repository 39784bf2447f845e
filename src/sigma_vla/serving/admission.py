"""Who may connect, and who keeps a slot (docs/reliability.md, "Serving").

Token: exactly one credential, exactly the token. A client presents it once, as `Authorization: Bearer T` or as
`?token=T`; two credentials (a wrong and a right one, a header and a query) are refused, and so is a token with
anything around it. websockets strips the whitespace around header values before we see them, so the header is
read from the handshake's raw bytes (RawHandshakeConnection).

Slots: at most `max_connections` connections hold a policy. A connection that sends nothing for `idle_timeout`
seconds is closed (its client reconnects on its next call, as a fresh episode). When every slot is taken, a new
client takes the slot of the connection idle the longest, if that one has been idle for `evict_idle_after`
seconds; a robot's control loop, which asks for a chunk several times a second, is never idle that long.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from websockets.asyncio.server import ServerConnection

MAX_HEAD_BYTES = 16 * 1024  # websockets refuses larger handshakes anyway


class RawHandshakeConnection(ServerConnection):
    """A ServerConnection that keeps the handshake's raw header bytes (`raw_head`)."""

    raw_head: bytearray

    def data_received(self, data: bytes) -> None:
        head = self.__dict__.setdefault("raw_head", bytearray())
        if len(head) < MAX_HEAD_BYTES and b"\r\n\r\n" not in head:
            head += data[: MAX_HEAD_BYTES - len(head)]
        super().data_received(data)


def _raw_authorization(connection: Any) -> list[bytes]:
    """Every Authorization header's raw value, leading whitespace removed (it is syntax), trailing kept."""
    head = bytes(getattr(connection, "raw_head", b"")).split(b"\r\n\r\n", 1)[0]
    values = []
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"authorization":
            values.append(value.lstrip(b" \t"))
    return values


def token_accepted(connection: Any, query: str, token: str) -> bool:
    """Exactly one credential was presented, and it is exactly the token (constant-time comparison)."""
    headers = _raw_authorization(connection)
    queries = parse_qs(query, keep_blank_values=True).get("token", [])
    if len(headers) + len(queries) != 1:
        return False
    if headers:
        scheme, sep, presented = headers[0].partition(b" ")
        if scheme != b"Bearer" or not sep:
            return False
    else:
        presented = queries[0].encode()
    return hmac.compare_digest(presented, token.encode())


@dataclass
class Slot:
    """One connection's activity: when it last sent or was answered, and whether a call is under way."""

    last: float
    busy: bool = False

    def idle_for(self, now: float) -> float:
        return 0.0 if self.busy else now - self.last


class Slots:
    """The live connections; capacity with eviction of the longest-idle one (see the module docstring)."""

    def __init__(self, max_connections: int, evict_idle_after: float):
        self.max_connections, self.evict_idle_after = max_connections, evict_idle_after
        self.live: dict[Any, Slot] = {}
        self.evicted: set[Any] = set()

    def __len__(self) -> int:
        return len(self.live) - len(self.evicted & set(self.live))

    def victim(self) -> Any | None:
        """None when a slot is free; else the connection to evict (idle long enough); raises LookupError if full."""
        if len(self) < self.max_connections:
            return None
        now = time.monotonic()
        idle = [(slot.idle_for(now), id(conn), conn) for conn, slot in self.live.items() if conn not in self.evicted]
        longest, _, conn = max(idle, key=lambda x: (x[0], x[1]))
        if longest < self.evict_idle_after:
            raise LookupError("every slot is in use")
        self.evicted.add(conn)
        return conn

    def open(self, conn: Any) -> Slot:
        slot = self.live[conn] = Slot(time.monotonic())
        return slot

    def close(self, conn: Any) -> None:
        self.live.pop(conn, None)
        self.evicted.discard(conn)
