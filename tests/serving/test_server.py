"""Server behaviour through the real client: metadata, per-connection episode state, concurrency, /healthz,
reconnects, a policy that breaks its contract, timeouts."""

from __future__ import annotations

import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from sigma_vla.serving import ServedPolicy, ServerConfig, ServerThread
from sigma_vla.serving.standin import StandInPolicy, standin_factory
from sigma_vla_client import (PolicyClient, PolicyClientError, PolicyConnectionError, PolicyServerError,
                              PolicyTimeoutError)
from sigma_vla_client.wire import PROTOCOL_VERSION
from tests.serving.helpers import DS, IMAGE_SIZE, INSTRUCTION, RawConnection, infer_message, make_obs, server_config


def _healthz(port: int, timeout: float = 5.0) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=timeout) as resp:
        return resp.status, resp.read().decode()


def test_standin_satisfies_the_served_policy_protocol():
    assert isinstance(StandInPolicy(), ServedPolicy)


def test_metadata_first(server):
    with PolicyClient("127.0.0.1", server.port) as client:
        meta = client.metadata
    assert meta["action_dim"] == 4 and meta["chunk"] == 8 and meta["cameras"] == ["front"]
    assert meta["image_size"] == IMAGE_SIZE and meta["state_dim"] == DS and meta["fps"] == 10.0
    assert meta["inputs"] == {"observation.state": {"dtype": "float32", "shape": [DS]},
                              "observation.images.front": {"dtype": "uint8", "shape": [64, 64, 3]}}
    assert meta["versions"]["protocol"] == PROTOCOL_VERSION and meta["versions"]["sigma_vla"]
    assert meta["limits"]["max_message_bytes"] == 64 * 1024 and meta["limits"]["max_connections"] == 32


def test_result_fields(server):
    with PolicyClient("127.0.0.1", server.port) as client:
        out = client.infer(make_obs(state0=0.25, image_value=10), INSTRUCTION)
    assert out["actions"].dtype == np.float32 and out["actions"].shape == (8, 4)
    assert out["adapter_scale"] == 1.0 and out["tau_norm"] == 0.0
    assert out["risk"] == {"calls": 1.0, "state0": 0.25, "image_mean": 10.0,
                           "instruction_chars": float(len(INSTRUCTION))}
    timing = out["timing"]
    assert 0 <= timing["model_ms"] <= timing["server_ms"] <= timing["roundtrip_ms"]


def test_reset_clears_one_clients_state_only(server):
    with PolicyClient("127.0.0.1", server.port) as a, PolicyClient("127.0.0.1", server.port) as b:
        for _ in range(3):
            a.infer(make_obs(), "x")
            b.infer(make_obs(), "x")
        a.reset()
        assert a.infer(make_obs(), "x")["risk"]["calls"] == 1.0
        assert b.infer(make_obs(), "x")["risk"]["calls"] == 4.0


def _drive(port: int, client_id: int, requests: int) -> int:
    """One robot: every reply must carry its own counter and its own echo, in order."""
    with PolicyClient("127.0.0.1", port, timeout=30.0) as client:
        for k in range(1, requests + 1):
            out = client.infer(make_obs(state0=float(client_id), image_value=client_id), f"robot {client_id}")
            assert out["risk"]["calls"] == k, (client_id, k, out["risk"])
            assert out["risk"]["state0"] == client_id and out["risk"]["image_mean"] == client_id
            np.testing.assert_allclose(out["actions"][:, 0], k * 1e-3, rtol=1e-6)
    return requests


def test_eight_concurrent_clients_no_failure_no_cross_talk(server):
    start = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        done = list(pool.map(lambda i: _drive(server.port, i, 200), range(1, 9)))
    elapsed = time.perf_counter() - start
    assert done == [200] * 8
    assert elapsed < 60.0, f"8 x 200 requests took {elapsed:.1f} s"


def test_healthz(server):
    assert _healthz(server.port) == (200, "ok\n")


def test_healthz_answers_while_the_model_is_busy():
    factory = standin_factory(image_size=IMAGE_SIZE, model_seconds=1.5)
    with ServerThread(factory, server_config()) as srv, PolicyClient("127.0.0.1", srv.port) as client:
        worker = threading.Thread(target=client.infer, args=(make_obs(), "x"))
        worker.start()
        time.sleep(0.2)  # the infer is now inside the model thread
        start = time.perf_counter()
        assert _healthz(srv.port)[0] == 200
        assert time.perf_counter() - start < 0.5
        worker.join()


def test_client_reconnects_after_server_restart():
    first = ServerThread(standin_factory(image_size=IMAGE_SIZE), server_config()).start()
    port = first.port
    client = PolicyClient("127.0.0.1", port, retries=8, backoff=0.05)
    assert client.infer(make_obs(), "x")["risk"]["calls"] == 1.0
    first.stop()
    second = ServerThread(standin_factory(image_size=IMAGE_SIZE), server_config(port=port)).start()
    try:
        out = client.infer(make_obs(), "x")
        assert out["risk"]["calls"] == 1.0  # a new connection is a fresh episode
        assert client.reconnects == 1
    finally:
        client.close()
        second.stop()


def test_client_gives_up_after_bounded_retries():
    with ServerThread(standin_factory(), server_config()) as srv:
        port = srv.port
    start = time.perf_counter()
    with pytest.raises(PolicyConnectionError, match="after 3 attempt"):
        PolicyClient("127.0.0.1", port, retries=2, backoff=0.05)
    assert time.perf_counter() - start < 5.0


def test_client_raises_on_error_reply_and_keeps_serving(server):
    with PolicyClient("127.0.0.1", server.port) as client:
        bad = make_obs()
        bad["observation.state"] = np.zeros(DS + 1, np.float32)  # the client casts a float64 state, not this
        with pytest.raises(PolicyServerError, match=rf"shape \[{DS + 1}\], expected \[{DS}\]") as info:
            client.infer(bad, "x")
        assert info.value.code == "bad_request"
        assert client.infer(make_obs(), "x")["risk"]["calls"] == 1.0
        assert client.reconnects == 0


def test_client_refuses_a_message_over_the_servers_limit(server):
    with PolicyClient("127.0.0.1", server.port) as client:
        obs = make_obs()
        obs["observation.state"] = np.zeros(32 * 1024, np.float32)  # 128 KB (a wrong-sized frame is refused first)
        with pytest.raises(PolicyClientError, match="exceeds the server's limit"):
            client.infer(obs, "x")
        assert client.infer(make_obs(), "x")["risk"]["calls"] == 1.0


def test_timeout_then_late_reply_is_discarded():
    factory = standin_factory(image_size=IMAGE_SIZE, model_seconds=0.6)
    with ServerThread(factory, server_config()) as srv, PolicyClient("127.0.0.1", srv.port, timeout=0.2) as c:
        with pytest.raises(PolicyTimeoutError):
            c.infer(make_obs(), "x")
        c.timeout = 5.0
        assert c.infer(make_obs(), "x")["risk"]["calls"] == 2.0  # same connection, same episode


class _BrokenPolicy(StandInPolicy):
    def infer(self, obs: dict[str, np.ndarray], instruction: str) -> dict[str, Any]:
        if instruction == "nan":
            return {**super().infer(obs, instruction), "actions": np.full((8, 4), np.nan, np.float32)}
        if instruction == "shape":
            return {**super().infer(obs, instruction), "actions": np.zeros((8, 3), np.float32)}
        if instruction == "raise":
            raise RuntimeError("boom\nsecond line")
        return super().infer(obs, instruction)


@pytest.mark.parametrize("instruction,fragment", [("nan", "non-finite actions"), ("shape", "[8, 3]"),
                                                  ("raise", "RuntimeError: boom")])
def test_policy_contract_violations_become_error_replies(instruction, fragment):
    with ServerThread(lambda: _BrokenPolicy(image_size=IMAGE_SIZE), server_config()) as srv:
        conn = RawConnection(srv.port)
        reply = conn.send(infer_message(instruction=instruction))
        assert reply["type"] == "error" and reply["code"] == "policy_failed" and fragment in reply["error"]
        assert "second line" not in reply["error"]
        assert conn.send(infer_message(instruction="fine"))["type"] == "result"
        conn.close()


def test_failing_factory_is_reported_and_server_stays_up():
    calls = []

    def factory() -> StandInPolicy:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("weights missing")
        return StandInPolicy(image_size=IMAGE_SIZE)

    with ServerThread(factory, server_config()) as srv:
        with pytest.raises(PolicyServerError, match="weights missing"):
            PolicyClient("127.0.0.1", srv.port)
        with PolicyClient("127.0.0.1", srv.port) as client:
            assert client.infer(make_obs(), "x")["risk"]["calls"] == 1.0


def test_connection_limit_answers_503():
    with ServerThread(standin_factory(image_size=IMAGE_SIZE), server_config(max_connections=1)) as srv:
        with PolicyClient("127.0.0.1", srv.port) as first:
            with pytest.raises(PolicyConnectionError):
                PolicyClient("127.0.0.1", srv.port, retries=1, backoff=0.05)
            assert first.infer(make_obs(), "x")["risk"]["calls"] == 1.0


def test_allow_extra_keys_drops_them_before_the_policy():
    seen: list[set[str]] = []

    class Spy(StandInPolicy):
        def infer(self, obs, instruction):
            seen.append(set(obs))
            return super().infer(obs, instruction)

    with ServerThread(lambda: Spy(image_size=IMAGE_SIZE), server_config(allow_extra_keys=True)) as srv:
        with PolicyClient("127.0.0.1", srv.port) as client:
            client.infer({**make_obs(), "observation.images.wrist": np.zeros(3, np.uint8)}, "x")
    assert seen == [{"observation.state", "observation.images.front"}]


@pytest.mark.parametrize("kwargs", [{"port": 70000}, {"token": " "}, {"max_message_bytes": 10},
                                    {"hard_limit_factor": 0.5}, {"max_connections": 0}, {"max_queue": 0}])
def test_config_validation(kwargs):
    with pytest.raises(ValueError):
        ServerConfig(**kwargs)
