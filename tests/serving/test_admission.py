"""The server stays open to its real clients: idle connections
time out and give their slot to a new client when the server is full, clients that send back-to-back do not make
a light client wait behind them, and the token is accepted only when presented exactly once, exactly."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time

import pytest
from websockets.exceptions import ConnectionClosed

from sigma_vla.serving import ServerThread
from sigma_vla.serving.fair import FairModelThread
from sigma_vla.serving.standin import standin_factory
from sigma_vla_client import PolicyClient, PolicyConnectionError
from tests.serving.helpers import IMAGE_SIZE, TOKEN, RawConnection, handshake_status, make_obs, server_config

BEARER = f"Authorization: Bearer {TOKEN}"


@pytest.mark.parametrize("path, headers, status", [
    ("/", f"{BEARER}\r\n", 101),
    (f"/?token={TOKEN}", "", 101),
    ("/", f"{BEARER} \r\n", 401),  # a trailing space is not the token
    ("/", f"{BEARER}\t\r\n", 401),
    (f"/?token={TOKEN}%20", "", 401),
    (f"/?token=wrong&token={TOKEN}", "", 401),  # one wrong and one right: not exactly one token
    (f"/?token={TOKEN}&token={TOKEN}", "", 401),
    ("/?token=wrong", f"{BEARER}\r\n", 401),
    ("/", f"Authorization: Bearer wrong\r\n{BEARER}\r\n", 401),  # two headers (was HTTP 500)
    ("/", f"Authorization: bearer {TOKEN}\r\n", 401),
])
def test_exactly_one_token_exactly(token_server, path, headers, status):
    assert handshake_status(token_server.port, path, headers) == status
    assert handshake_status(token_server.port, "/", f"{BEARER}\r\n") == 101  # and the server stays up


def test_limits_are_stated_in_the_metadata(server):
    limits = RawConnection(server.port).metadata["limits"]
    assert limits["max_connections"] == 32 and limits["idle_timeout_s"] == 60.0
    assert limits["evict_idle_after_s"] == 5.0 and "least model time" in limits["fairness"]
    assert "exactly one" in limits["token"]


def test_an_idle_connection_is_closed_and_the_client_reconnects_transparently():
    with ServerThread(standin_factory(image_size=IMAGE_SIZE), server_config(idle_timeout=0.4)) as srv:
        raw = RawConnection(srv.port)
        with pytest.raises(ConnectionClosed) as info:
            raw.ws.recv(timeout=5)
        assert info.value.rcvd.code == 1000 and "idle" in info.value.rcvd.reason
        with PolicyClient("127.0.0.1", srv.port) as client:
            assert client.infer(make_obs(), "x")["risk"]["calls"] == 1.0
            time.sleep(0.8)
            assert client.infer(make_obs(), "x")["risk"]["calls"] == 1.0  # a fresh episode on a new connection
            assert client.reconnects == 1


def test_a_full_server_gives_the_longest_idle_slot_to_a_new_client():
    cfg = server_config(max_connections=3, evict_idle_after=1.0)
    with ServerThread(standin_factory(image_size=IMAGE_SIZE), cfg) as srv:
        idle = [RawConnection(srv.port) for _ in range(2)]  # hold their slots and never ask anything
        stop, robot = threading.Event(), PolicyClient("127.0.0.1", srv.port)

        def control_loop() -> None:  # a robot asks a few times a second: never idle long enough to be evicted
            while not stop.is_set():
                robot.infer(make_obs(), "x")
                time.sleep(0.1)

        loop = threading.Thread(target=control_loop)
        loop.start()
        try:
            time.sleep(1.3)
            newcomers = [PolicyClient("127.0.0.1", srv.port, retries=0) for _ in range(2)]  # each takes an idle slot
            for conn in idle:
                with pytest.raises(ConnectionClosed):
                    conn.ws.recv(timeout=5)
            with pytest.raises(PolicyConnectionError):  # full, and nobody idle for a second: 503
                PolicyClient("127.0.0.1", srv.port, retries=0)
            assert all(c.infer(make_obs(), "x")["risk"]["calls"] == 1.0 for c in newcomers)
        finally:
            stop.set()
            loop.join()
        assert robot.reconnects == 0
        robot.close()


def test_the_light_client_is_served_next_by_the_model_thread():
    """The scheduling rule itself, counted rather than timed: while six clients keep a call waiting at all times,
    a light client's call starts next (a FIFO starts every waiting call first)."""
    started: list[str] = []

    async def scenario() -> list[int]:
        model = FairModelThread(half_life=2.0)
        stop = asyncio.Event()

        async def busy(name: str) -> None:
            while not stop.is_set():
                await model.run(name, lambda n=name: (started.append(n), time.sleep(0.02)))

        flooders = [asyncio.create_task(busy(f"busy{i}")) for i in range(6)]
        await asyncio.sleep(0.3)
        overtaken = []
        for _ in range(5):
            before = len(started)
            await model.run("light", lambda: started.append("light"))
            overtaken.append(started[before:].index("light"))  # calls started between asking and being served
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.gather(*flooders)
        model.shutdown()
        return overtaken

    overtaken = asyncio.run(scenario())
    assert max(overtaken) <= 1, overtaken  # at most the call that was already starting; FIFO: 6


def test_back_to_back_clients_do_not_make_a_light_client_wait():
    """Six clients sending back-to-back to a 0.1 s model, through the server: the light client's answers come much
    sooner than theirs (timed relative to them, so a busy machine slows both alike)."""
    factory = standin_factory(image_size=IMAGE_SIZE, model_seconds=0.1)
    with ServerThread(factory, server_config()) as srv:
        stop, flood_waits = threading.Event(), []

        def flood() -> None:
            with PolicyClient("127.0.0.1", srv.port, timeout=60) as client:
                while not stop.is_set():
                    flood_waits.append(client.infer(make_obs(), "flood")["timing"]["roundtrip_ms"] / 1e3)

        threads = [threading.Thread(target=flood) for _ in range(6)]
        for t in threads:
            t.start()
        try:
            time.sleep(1.0)  # the flood is under way
            waits = []
            with PolicyClient("127.0.0.1", srv.port, timeout=60) as robot:
                for _ in range(6):
                    waits.append(robot.infer(make_obs(), "robot")["timing"]["roundtrip_ms"] / 1e3)
                    time.sleep(0.3)  # a robot asks a few times a second
        finally:
            stop.set()
            for t in threads:
                t.join()
    robot_median, flood_median = statistics.median(waits), statistics.median(flood_waits[6:])
    assert robot_median < 0.5 * flood_median, (waits, flood_median)  # FIFO: about equal
