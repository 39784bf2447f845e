"""A closed loop over loopback: the client drives the SO-101 simulator through the server, the way a robot's
control loop drives the real arm (query a chunk, execute its first actions, query again)."""

from __future__ import annotations

import numpy as np
import pytest

from sigma_vla.serving.standin import STATE_KEY, image_key
from sigma_vla.sim.instructions import sample_instruction
from sigma_vla.sim.so101 import SO101Sim
from sigma_vla_client import PolicyClient

EXECUTE = 4  # actions executed from each chunk before asking again (receding horizon)


@pytest.fixture(scope="module")
def sim():
    env = SO101Sim(image_size=64, seed=0)
    yield env
    env.close()


def _wire_obs(obs, camera: str) -> dict[str, np.ndarray]:
    """The simulator's observation under the keys the policy declared."""
    return {STATE_KEY: obs.state, image_key(camera): obs.image}


def test_client_drives_the_simulator_through_the_server(server, sim):
    with PolicyClient("127.0.0.1", server.port) as policy:
        meta = policy.metadata
        camera = meta["cameras"][0]
        instruction = sample_instruction(np.random.default_rng(0), "far_left").text
        obs = sim.reset(seed=3, zone="far_left")
        policy.reset()
        z0, queries, steps = float(obs.state[13]), 0, 0
        for _ in range(3):
            out = policy.infer(_wire_obs(obs, camera), instruction)
            queries += 1
            assert out["risk"]["calls"] == queries
            assert out["risk"]["image_mean"] == pytest.approx(float(obs.image.mean()), rel=1e-6)
            assert out["risk"]["instruction_chars"] == len(instruction)
            for action in out["actions"][:EXECUTE]:  # (Da,) = [dx, dy, dz, grasp]
                result = sim.step(action)
                obs, steps = result.obs, steps + 1
                assert not result.truncated
        assert steps == 3 * EXECUTE == sim.steps
        assert float(obs.state[13]) > z0 + 0.02  # the stand-in's dz = +0.5 lifted the gripper


def test_client_drives_the_simulator_through_a_real_sigma_policy(sim):
    """The same loop with base + Sigma + adapter (tiny weights) behind the server instead of the stand-in."""
    from sigma_vla.inference.policy import SigmaPolicy
    from sigma_vla.serving.server import ServerThread
    from tests.inference.test_policy import make_policy
    from tests.serving.helpers import server_config

    shared = make_policy(n_action_steps=EXECUTE)

    def factory() -> SigmaPolicy:
        return SigmaPolicy(shared.model, shared.base, shared.norm, shared.tokenizer, shared.config, shared.info)

    with ServerThread(factory, server_config()) as srv, PolicyClient("127.0.0.1", srv.port) as policy:
        meta = policy.metadata
        assert meta["image_size"] == 64 and meta["mode"] == "sigma+adapter"
        obs = sim.reset(seed=4, zone="near_right")
        policy.reset()
        for _ in range(2):
            out = policy.infer({"observation.state": obs.state, "observation.images.front": obs.image},
                               "the bin is on your right, close to you")
            assert out["actions"].shape == (4, 4) and np.isfinite(out["actions"]).all()
            assert 0.0 <= out["adapter_scale"] <= 1.25 and out["tau_norm"] >= 0.0
            for action in out["actions"][:EXECUTE]:
                obs = sim.step(action).obs
        assert sim.steps == 2 * EXECUTE
