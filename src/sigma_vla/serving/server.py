"""The policy server: websocket + msgpack, metadata first, one policy instance per connection.

Modelled on openpi's remote inference (the client gets the policy's metadata on connect, then sends
observations and receives action chunks), without pickle anywhere: LeRobot's gRPC async inference unpickled
untrusted bytes and got a CVE for it. The wire format is sigma_vla_client.wire (client/); what is served is a
ServedPolicy.

Concurrency: the event loop only parses, checks and routes messages; every policy call (factory, reset, infer)
runs in one dedicated model thread, which acts as the lock around the model and serves waiting calls fairly:
the connection that used the least model time recently goes first (fair.py). Torch releases the GIL inside its
kernels, so the loop keeps answering other connections, pings and /healthz while a model call runs, and torch's
thread-local state (grad mode) is the same for every call.

Limits (also in the metadata message; docs/pipeline.md, "Serving a real robot"): a message up to
`max_message_bytes` is decoded; one between that and `hard_limit_factor` times it is read and answered with a
"too_large" error (the connection stays up); websockets closes anything bigger with 1009 (message too big) before buffering it, and the
server stays up. Memory held for clients is bounded by max_connections x max_queue x the hard limit
(32 x 2 x 16 MiB by default; lower them on a small box). A connection idle for `idle_timeout` seconds is closed,
and when every slot is taken a new client takes the slot of one idle for `evict_idle_after` seconds
(admission.py); the token must be presented exactly once, exactly. Only connections to "/" upgrade; GET /healthz
answers "ok" without a token (it reveals nothing but liveness); any other path is 404.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Callable
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from sigma_vla.errors import ConfigError
from sigma_vla.serving.admission import RawHandshakeConnection, Slots, token_accepted
from sigma_vla.serving.fair import FairModelThread
from sigma_vla.serving.protocol import PolicyFactory, ServedPolicy, check_metadata, check_result, versions
from sigma_vla_client.wire import InputSpec, WireError, check_observation, pack, unpack

log = logging.getLogger("sigma_vla.serving")



def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the server on this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class ServerConfig:
    """How the server listens and what it accepts. Defaults are safe: loopback only, 8 MiB messages."""

    host: str = "127.0.0.1"  # loopback: exposing a robot policy to the network must be a deliberate choice
    port: int = 8000  # 0 picks a free port (tests, benchmarks)
    token: str | None = None  # when set, every connection presents it (Bearer header or ?token=)
    max_message_bytes: int = 8 * 2**20  # two 224 px RGB cameras are 0.3 MB; 8 MiB leaves room for more
    hard_limit_factor: float = 2.0  # up to this x the limit: error reply; beyond: websockets closes with 1009
    allow_extra_keys: bool = False  # strict: an unknown observation key is an error, not silently dropped
    max_instruction_chars: int = 2000
    max_connections: int = 32  # each connection holds a policy instance (episode state); beyond: eviction or 503
    max_queue: int = 2  # frames buffered per connection (request-reply needs 1): bounds memory per client
    ping_interval: float | None = 20.0  # keepalive; a dead robot link is noticed within ~2 intervals
    close_timeout: float = 5.0
    # A robot's loop asks several times a second; a connection silent this long holds a slot for nothing.
    idle_timeout: float = 60.0  # closed after this long without a message (the client reconnects on its next call)
    evict_idle_after: float = 5.0  # when full, a new client may take the slot of a connection idle this long
    fair_half_life: float = 2.0  # memory of the fairness rule: model time used in the last few seconds counts

    def __post_init__(self):
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be in 0..65535, got {self.port}", field="port")
        if self.token is not None and not self.token.strip():
            raise ConfigError("token must be a non-empty string (or None for no authentication)", field="token")
        if self.max_message_bytes < 1024:
            raise ConfigError(f"max_message_bytes must be >= 1024, got {self.max_message_bytes}",
                              field="max_message_bytes")
        if self.hard_limit_factor < 1.0:
            raise ConfigError(f"hard_limit_factor must be >= 1, got {self.hard_limit_factor}",
                              field="hard_limit_factor")
        if min(self.max_instruction_chars, self.max_connections, self.max_queue) < 1:
            raise ConfigError(f"max_instruction_chars, max_connections and max_queue must be >= 1, got "
                              f"{self.max_instruction_chars}, {self.max_connections}, {self.max_queue}",
                              field="max_connections")
        if not min(self.idle_timeout, self.evict_idle_after, self.fair_half_life) > 0:
            raise ConfigError(f"idle_timeout, evict_idle_after and fair_half_life must be > 0, got "
                              f"{self.idle_timeout}, {self.evict_idle_after}, {self.fair_half_life}",
                              field="idle_timeout")
        if self.token is not None and self.token != self.token.strip():
            raise ConfigError("token must not start or end with whitespace (HTTP drops it from headers)", field="token")

    @property
    def hard_limit_bytes(self) -> int:
        return int(self.max_message_bytes * self.hard_limit_factor)


@dataclass
class _Session:
    """One connection's policy (its own episode state) and the checked facts about it."""

    policy: ServedPolicy
    meta: dict[str, Any]
    specs: dict[str, InputSpec]


def _error(code: str, message: str, msg_id: int | None = None) -> dict[str, Any]:
    """An error reply; `code` is bad_request, too_large or policy_failed, `error` is one line."""
    reply: dict[str, Any] = {"type": "error", "code": code, "error": message.splitlines()[0] if message else code}
    if msg_id is not None:
        reply["id"] = msg_id
    return reply


def _message_id(msg: dict[str, Any]) -> int | None:
    msg_id = msg.get("id")
    if msg_id is not None and type(msg_id) is not int:  # noqa: E721  (bool is an int subclass: reject it)
        raise WireError(f"'id' must be an integer, got {type(msg_id).__name__}")
    return msg_id


class PolicyServer:
    """Serves `policy_factory()` instances over websockets; `run()` blocks until Ctrl-C or SIGTERM."""

    def __init__(self, policy_factory: PolicyFactory, config: ServerConfig | None = None):
        self.factory = policy_factory
        self.config = config or ServerConfig()
        self._model: FairModelThread | None = None
        self._server: Any = None
        self._slots = Slots(self.config.max_connections, self.config.evict_idle_after)

    # ---- lifetime ---------------------------------------------------------------------------------------------
    async def start(self) -> int:
        """Bind and start accepting; returns the bound port."""
        cfg = self.config
        self._model = FairModelThread(cfg.fair_half_life)
        self._server = await serve(self._handle, cfg.host, cfg.port, process_request=self._process_request,
                                   max_size=cfg.hard_limit_bytes, max_queue=cfg.max_queue,
                                   compression=None,  # raw arrays and latency: deflate costs more than it saves
                                   ping_interval=cfg.ping_interval, close_timeout=cfg.close_timeout,
                                   create_connection=RawHandshakeConnection)  # the token check reads raw headers
        return self.port

    async def stop(self) -> None:
        """Close every connection (1001 going away), let running model calls finish, free the model thread."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self._model is not None:
            self._model.shutdown()
            self._model = None

    @property
    def port(self) -> int:
        return self._server.sockets[0].getsockname()[1]

    def run(self, on_ready: Callable[[int], None] | None = None) -> None:
        """Serve until SIGINT / SIGTERM, then shut down gracefully; a second Ctrl-C interrupts the shutdown."""
        asyncio.run(self._run_until_signal(on_ready))

    async def _run_until_signal(self, on_ready: Callable[[int], None] | None) -> None:
        import signal

        loop, stop = asyncio.get_running_loop(), asyncio.Event()
        signals = (signal.SIGINT, signal.SIGTERM)

        def _on_signal() -> None:
            stop.set()
            for sig in signals:  # restore the defaults: a second Ctrl-C kills a hung shutdown
                loop.remove_signal_handler(sig)

        for sig in signals:
            loop.add_signal_handler(sig, _on_signal)
        await self.start()
        if on_ready is not None:
            on_ready(self.port)
        try:
            await stop.wait()
        finally:
            log.info("shutting down")
            await self.stop()

    # ---- HTTP side of the handshake ---------------------------------------------------------------------------
    def _process_request(self, connection: ServerConnection, request: Any) -> Any:
        """/healthz (200 ok), unknown paths (404), not exactly the token (401), every slot busy (503); else the
        connection gets a slot, taken from the longest-idle connection when the server is full."""
        url = urlsplit(request.path)
        if url.path == "/healthz":
            return connection.respond(HTTPStatus.OK, "ok\n")
        if url.path != "/":
            return connection.respond(HTTPStatus.NOT_FOUND, "not found: connect to / or GET /healthz\n")
        if self.config.token is not None and not token_accepted(connection, url.query, self.config.token):
            return connection.respond(HTTPStatus.UNAUTHORIZED, "missing or wrong token\n")
        try:
            victim = self._slots.victim()
        except LookupError:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "too many connections, none idle\n")
        if victim is not None:
            log.info("server full: closing a connection idle for %.0f s for a new client", self.config.evict_idle_after)
            asyncio.ensure_future(victim.close(1000, "idle while the server was full"))
        self._slots.open(connection)  # reserved now: simultaneous handshakes cannot overfill the server
        asyncio.ensure_future(self._release_when_closed(connection))
        return None

    async def _release_when_closed(self, connection: ServerConnection) -> None:
        await connection.wait_closed()  # also after a handshake that failed before the handler ran
        self._slots.close(connection)
        if self._model is not None:
            self._model.forget(connection)

    # ---- websocket side ---------------------------------------------------------------------------------------
    async def _in_model_thread(self, ws: ServerConnection, fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
        """fn(*args) in the model thread, in this connection's fair turn; returns (result, ms inside fn)."""
        return await self._model.run(ws, fn, *args)

    async def _open_session(self, ws: ServerConnection) -> _Session:
        policy, _ = await self._in_model_thread(ws, self.factory)
        meta, _ = await self._in_model_thread(ws, policy.metadata)
        meta, specs = check_metadata(meta)
        return _Session(policy, meta, specs)

    def _hello(self, session: _Session) -> dict[str, Any]:
        cfg = self.config
        return {"type": "metadata", **session.meta, "versions": versions(),
                "limits": {"max_message_bytes": cfg.max_message_bytes,
                           "max_instruction_chars": cfg.max_instruction_chars,
                           "allow_extra_keys": cfg.allow_extra_keys, "max_connections": cfg.max_connections,
                           "idle_timeout_s": cfg.idle_timeout, "evict_idle_after_s": cfg.evict_idle_after,
                           "token": "exactly one: header 'Authorization: Bearer T' or ?token=T",
                           "fairness": "the connection that used the least model time in the last "
                                       f"~{cfg.fair_half_life:g} s (half-life) is served first"}}

    async def _handle(self, ws: ServerConnection) -> None:
        """One connection: its own policy, metadata first, then one reply per message, in order; closed after
        idle_timeout seconds without a message."""
        slot = self._slots.live.get(ws) or self._slots.open(ws)
        try:
            try:
                session = await self._open_session(ws)
            except Exception as err:  # noqa: BLE001  (report a broken factory to the client, keep serving)
                log.exception("policy factory failed")
                await ws.send(pack(_error("policy_failed", f"policy could not start: {type(err).__name__}: "
                                                           f"{err}")))
                await ws.close(1011, "policy could not start")
                return
            await ws.send(pack(self._hello(session)))
            while True:
                slot.last, slot.busy = time.monotonic(), False
                try:
                    async with asyncio.timeout(self.config.idle_timeout):
                        raw = await ws.recv()
                except TimeoutError:
                    await ws.close(1000, f"idle for {self.config.idle_timeout:g} s")
                    return
                slot.busy = True
                await ws.send(pack(await self._reply(session, raw, ws)))
        except ConnectionClosed:
            pass  # the client left (or sent a frame over the hard limit: 1009); the server carries on
        finally:
            self._slots.close(ws)

    async def _reply(self, session: _Session, raw: bytes | str, ws: ServerConnection) -> dict[str, Any]:
        """The reply to one message; every failure becomes an error reply, never a dropped connection."""
        start = time.perf_counter()
        limit = self.config.max_message_bytes
        if len(raw) > limit:
            return _error("too_large", f"message of {len(raw)} bytes exceeds the limit of {limit} bytes")
        msg_id = None
        try:
            msg = unpack(raw, limit)
            msg_id = _message_id(msg)
            kind = msg.get("type")
            if kind == "infer":
                return await self._infer(session, msg, msg_id, start, ws)
            if kind == "reset":
                await self._in_model_thread(ws, session.policy.reset)
                return {"type": "reset", "id": msg_id} if msg_id is not None else {"type": "reset"}
            raise WireError(f"unknown message type {kind!r:.40}; expected 'infer' or 'reset'")
        except WireError as err:
            return _error("bad_request", str(err), msg_id)
        except Exception as err:  # noqa: BLE001  (a policy bug must not take the connection down)
            log.exception("policy call failed")
            return _error("policy_failed", f"{type(err).__name__}: {err}", msg_id)

    async def _infer(self, session: _Session, msg: dict[str, Any], msg_id: int | None, start: float,
                     ws: ServerConnection) -> dict[str, Any]:
        obs = check_observation(msg.get("obs"), session.specs, self.config.allow_extra_keys)
        instruction = msg.get("instruction")
        if not isinstance(instruction, str):
            raise WireError(f"'instruction' must be a string, got {type(instruction).__name__}")
        if len(instruction) > self.config.max_instruction_chars:
            raise WireError(f"instruction of {len(instruction)} characters exceeds "
                            f"{self.config.max_instruction_chars}")
        out, model_ms = await self._in_model_thread(ws, session.policy.infer, obs, instruction)
        fields = check_result(out, int(session.meta["action_dim"]))
        server_ms = (time.perf_counter() - start) * 1e3
        return {"type": "result", "id": msg_id, **fields, "timing": {"server_ms": server_ms, "model_ms": model_ms}}


class ServerThread:
    """A PolicyServer on its own event loop in a background thread (tests, benchmarks, notebooks).

        with ServerThread(factory, ServerConfig(port=0)) as srv:
            client = PolicyClient("127.0.0.1", srv.port)
    """

    def __init__(self, policy_factory: PolicyFactory, config: ServerConfig | None = None):
        self.server = PolicyServer(policy_factory, config)
        self.port = 0
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="sigma-serve", daemon=True)

    def _main(self) -> None:
        async def body() -> None:
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            try:
                self.port = await self.server.start()
            except BaseException as err:  # noqa: BLE001  (re-raised in the starting thread)
                self._error = err
                self._ready.set()
                return
            self._ready.set()
            await self._stop.wait()
            await self.server.stop()

        asyncio.run(body())

    def start(self) -> ServerThread:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self

    def stop(self, timeout: float = 30.0) -> None:
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
