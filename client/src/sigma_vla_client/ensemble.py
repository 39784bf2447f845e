"""ACT's temporal ensembling of overlapping action chunks: how `sigma rollout` executes a policy by default (k = 0.01).

    from sigma_vla_client import PolicyClient, TemporalEnsemble

    ensemble = TemporalEnsemble()                       # k = 0.01
    policy.reset(); ensemble.reset()                    # a new episode
    while running:
        out = policy.infer(observation, instruction)    # a new plan every step
        robot.send(ensemble(out["actions"]))            # this step's action, blended over the queued plans

Every plan is queued; this step's action is the mean of every queued plan's action for this step, weighted
exp(-k i) with i = 0 the oldest plan. At small k the older plans count about as much as the newest: in the
SO-101 simulator the plans made just after the jaw was told to close all say "hold", and blending them keeps
the arm from rising before the jaw holds the block (90% of held-out blocks lifted against 68% executing each
plan's first action; docs/closed_loop.md in the sigma-vla repository, "Temporal ensembling").

Shapes: C plan length, Da action dim, n queued plans.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Sequence

import numpy as np

DEFAULT_K = 0.01  # ACT's value, and the rollouts' default


def ensemble_action(chunks: Sequence[np.ndarray], k: float) -> np.ndarray:
    """Plans oldest first, each (C_i, Da) with row 0 this step's action -> (Da,) float32."""
    w = np.exp(-k * np.arange(len(chunks)))  # (n,)
    rows = np.stack([c[0] for c in chunks])  # (n, Da)
    return ((w[:, None] * rows).sum(axis=0) / w.sum()).astype(np.float32)


class TemporalEnsemble:
    """Feed it the plan made at every step; it returns the action to execute now. reset() at each episode start."""

    def __init__(self, k: float = DEFAULT_K):
        if not (k >= 0 and math.isfinite(k)):
            raise ValueError(f"temporal ensembling weight k must be >= 0 and finite, got {k}")
        self.k = k
        self.chunks: deque[np.ndarray] = deque()  # each queued plan's rows from this step on

    def reset(self) -> None:
        self.chunks.clear()

    def __call__(self, chunk: np.ndarray) -> np.ndarray:
        """This step's plan (C, Da) -> this step's action (Da,) float32."""
        chunk = np.asarray(chunk, dtype=np.float32)
        if chunk.ndim != 2 or chunk.shape[0] < 1:
            raise ValueError(f"a plan is (steps, action dim) with at least one step, got shape {chunk.shape}")
        if self.chunks and chunk.shape[1] != self.chunks[0].shape[1]:
            raise ValueError(f"a plan of action dim {chunk.shape[1]} after plans of {self.chunks[0].shape[1]}; "
                             "call reset() between policies")
        self.chunks.append(chunk)
        action = ensemble_action(self.chunks, self.k)
        self.chunks = deque(c[1:] for c in self.chunks if len(c) > 1)  # one step on; spent plans leave
        return action
