"""A zero-cost `ServedPolicy` with per-connection state: for tests, the serving benchmark and robot bring-up.

Why it lives in the package rather than in tests/: the benchmark measures serialization and transport with it
(its model time is ~0), and a robot integrator can check the wiring of a control loop without loading a model.
It is numpy-only and deterministic: the actions fold in a counter of calls since reset, so replies that leak
between connections, or a reset that clears the wrong connection, are visible in the numbers.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

STATE_KEY = "observation.state"


def image_key(camera: str) -> str:
    return f"observation.images.{camera}"


class StandInPolicy:
    """SO-101-shaped by default (the 16 values of sim.so101.STATE_NAMES, actions [dx, dy, dz, grasp], front
    camera), like `SO101Sim`.

    actions[:, 0] = calls since reset x 1e-3 (small, so a simulator can execute it), actions[:, 2] = +0.5 (lift),
    actions[:, 3] = 1 (jaw open). `risk` echoes the request (calls, state[0], mean image value) so a test can
    match every reply to its own request. `model_seconds` simulates a slow model.
    """

    def __init__(self, image_size: int = 64, state_dim: int = 16, action_dim: int = 4, chunk: int = 8,
                 cameras: tuple[str, ...] = ("front",), fps: float = 10.0, horizon: int = 16,
                 model_seconds: float = 0.0):
        self.image_size, self.state_dim, self.action_dim = image_size, state_dim, action_dim
        self.chunk, self.cameras, self.fps, self.horizon = chunk, tuple(cameras), fps, horizon
        self.model_seconds = model_seconds
        self.calls = 0

    def metadata(self) -> dict[str, Any]:
        inputs = {STATE_KEY: {"dtype": "float32", "shape": [self.state_dim]}}
        for cam in self.cameras:
            inputs[image_key(cam)] = {"dtype": "uint8", "shape": [self.image_size, self.image_size, 3]}
        return {"action_dim": self.action_dim, "horizon": self.horizon, "chunk": self.chunk, "fps": self.fps,
                "cameras": list(self.cameras), "image_size": self.image_size, "state_dim": self.state_dim,
                "inputs": inputs, "policy": "stand-in"}

    def reset(self) -> None:
        self.calls = 0

    def infer(self, obs: dict[str, np.ndarray], instruction: str) -> dict[str, Any]:
        self.calls += 1
        if self.model_seconds:
            time.sleep(self.model_seconds)
        actions = np.zeros((self.chunk, self.action_dim), np.float32)  # (C, Da)
        actions[:, 0] = self.calls * 1e-3
        if self.action_dim >= 3:
            actions[:, 2] = 0.5
        if self.action_dim >= 4:
            actions[:, 3] = 1.0
        image_mean = float(np.mean([obs[image_key(c)].mean() for c in self.cameras])) if self.cameras else 0.0
        risk = {"calls": float(self.calls), "state0": float(obs[STATE_KEY][0]), "image_mean": image_mean,
                "instruction_chars": float(len(instruction))}
        return {"actions": actions, "adapter_scale": 1.0, "risk": risk, "tau_norm": 0.0}


def standin_factory(**kwargs: Any) -> Callable[[], StandInPolicy]:
    """A policy factory (one fresh StandInPolicy per connection) with the given constructor arguments."""
    return lambda: StandInPolicy(**kwargs)
