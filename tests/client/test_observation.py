"""What a robot hands `PolicyClient.infer`: numpy's default float64 state goes through (cast to the declared
float32), and a frame in another layout or dtype is refused before it is sent, saying what a frame must be."""

from __future__ import annotations

import numpy as np
import pytest

from sigma_vla.serving import ServerThread
from sigma_vla.serving.standin import standin_factory
from sigma_vla_client import PolicyClient, PolicyClientError
from sigma_vla_client.client import conform
from sigma_vla_client.wire import parse_inputs
from tests.serving.helpers import DS, IMAGE_SIZE, make_obs, server_config

FRAME = "observation.images.front"
SPECS = parse_inputs({"observation.state": {"dtype": "float32", "shape": [DS]},
                      FRAME: {"dtype": "uint8", "shape": [IMAGE_SIZE, IMAGE_SIZE, 3]}})


def test_a_float64_state_is_cast_to_float32_and_keeps_its_values():
    obs = make_obs()
    obs["observation.state"] = np.linspace(-1, 1, DS)  # float64, as numpy makes it
    out = conform(obs, SPECS)
    assert out["observation.state"].dtype == np.float32
    np.testing.assert_allclose(out["observation.state"], np.linspace(-1, 1, DS), rtol=1e-6)
    assert out[FRAME] is obs[FRAME]


@pytest.mark.parametrize(("frame", "hint"), [
    (np.zeros((3, IMAGE_SIZE, IMAGE_SIZE), np.uint8), "channels first"),
    (np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), np.float32), "float image"),
    (np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), np.float64), "float image"),
])
def test_a_channels_first_or_float_frame_says_what_a_frame_must_be(frame, hint):
    with pytest.raises(PolicyClientError) as err:
        conform({**make_obs(), FRAME: frame}, SPECS)
    message = str(err.value)
    assert message.startswith(f"{FRAME}: a frame must be HWC uint8, H x W x 3 = {IMAGE_SIZE} x {IMAGE_SIZE} x 3")
    assert hint in message and "\n" not in message


def test_through_the_server_float64_state_is_served_and_a_chw_frame_never_leaves():
    with ServerThread(standin_factory(image_size=IMAGE_SIZE), server_config()) as server, \
            PolicyClient("127.0.0.1", server.port) as client:
        obs = make_obs(state0=0.25)
        obs["observation.state"] = obs["observation.state"].astype(np.float64)
        assert client.infer(obs, "x")["risk"]["state0"] == 0.25
        with pytest.raises(PolicyClientError, match="HWC uint8"):
            client.infer({**make_obs(), FRAME: np.zeros((3, IMAGE_SIZE, IMAGE_SIZE), np.uint8)}, "x")
        assert client.infer(make_obs(), "x")["risk"]["calls"] == 2.0  # the refused frame was never sent
