"""Sliding windows over one episode (paper 4.1): pure numpy functions, no copies until the caller gathers.

A window starting at frame s covers actions s .. s+T-1. Full windows need T real future actions, so an episode of
F frames gives F - T + 1 windows (none when F < T): the paper's protocol, which never trains on the last T - 1
states, where the robot puts the block down and lets go. With pad_end a window starts at every frame and the
actions past the episode's end repeat its last action (LeRobot pads chunks the same way): the expert's last action
holds still with the jaw open; `pad_steps` counts the repeated actions (0 for a full window).
"""

from __future__ import annotations

import numpy as np


def window_starts(num_frames: int, horizon: int, stride: int = 1, pad_end: bool = False) -> np.ndarray:
    """Start frames of every full window (pad_end: of every window, padded ones included): (W,) int64."""
    last = num_frames - 1 if pad_end else num_frames - horizon
    if last < 0:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, last + 1, stride, dtype=np.int64)


def gather_windows(actions: np.ndarray, starts: np.ndarray, horizon: int) -> np.ndarray:
    """(F, Da) actions -> (W, T, Da) windows at the given starts; steps past the end repeat the last action."""
    idx = np.minimum(starts[:, None] + np.arange(horizon)[None, :], len(actions) - 1)  # (W, T)
    return actions[idx]  # (W, T, Da)


def pad_steps(num_frames: int, starts: np.ndarray, horizon: int) -> np.ndarray:
    """(W,) int64: how many of each window's T actions are padding."""
    return np.maximum(starts + horizon - num_frames, 0).astype(np.int64)


def action_norms(windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and max L2 norm of each window's actions: (W, T, Da) -> (W,), (W,)."""
    norms = np.linalg.norm(windows.astype(np.float64), axis=-1)  # (W, T)
    return norms.mean(axis=1).astype(np.float32), norms.max(axis=1).astype(np.float32)


def episode_windows(actions: np.ndarray, horizon: int, min_action_norm: float, stride: int = 1,
                    pad_end: bool = False):
    """Starts, windows and norms of the windows kept after the near-static filter (mean norm >= threshold)."""
    starts = window_starts(len(actions), horizon, stride, pad_end)
    windows = gather_windows(actions, starts, horizon)  # (W, T, Da)
    avg, mx = action_norms(windows)
    keep = avg >= min_action_norm
    return starts[keep], windows[keep], avg[keep], mx[keep], int((~keep).sum())


def parse_split(spec: str) -> dict[str, float]:
    """'train:0.8,val:0.1,test:0.1' -> {'train': 0.8, ...}; fractions must be >= 0 and sum to 1."""
    from sigma_vla.data.schema import SPLIT_CODES
    from sigma_vla.errors import SigmaError

    out: dict[str, float] = {}
    for part in spec.split(","):
        name, _, frac = part.partition(":")
        name = name.strip()
        if name not in SPLIT_CODES:
            raise SigmaError(f"unknown split {name!r} (known: {', '.join(SPLIT_CODES)})", field="--split")
        try:
            out[name] = float(frac)
        except ValueError:
            raise SigmaError(f"bad fraction {frac!r} for split {name!r}", field="--split") from None
        if out[name] < 0:
            raise SigmaError(f"negative fraction for split {name!r}", field="--split")
    if abs(sum(out.values()) - 1.0) > 1e-6:
        raise SigmaError(f"fractions sum to {sum(out.values()):.3f}, not 1", field="--split")
    return out


def split_sizes(n: int, fractions: dict[str, float]) -> dict[str, int]:
    """Episodes per split: largest remainder, and every non-zero split gets at least one episode when n allows."""
    names = list(fractions)
    exact = np.array([fractions[k] * n for k in names])
    sizes = np.floor(exact).astype(int)
    nonzero = exact > 0
    if n >= nonzero.sum():
        sizes[nonzero & (sizes == 0)] = 1
    while sizes.sum() > n:  # the minimum-one rule overshot: take from the largest split
        sizes[np.argmax(sizes)] -= 1
    for i in np.argsort(-(exact - np.floor(exact)), kind="stable")[: max(0, n - sizes.sum())]:
        sizes[i] += 1
    return dict(zip(names, sizes.tolist()))


def assign_splits(episode_indices: list[int], fractions: dict[str, float], seed: int,
                  held_out: set[int] = frozenset()) -> dict[int, str]:
    """Split by episode, never by window: shuffle episodes with the seed, then cut by split sizes.

    Episodes in `held_out` (instructions from held-out templates) always go to the test split, so no held-out
    phrasing is ever trained or validated on (docs/architecture.md, "Honest evaluation"); the others are cut by the
    fractions."""
    rng = np.random.default_rng(seed)
    rest = [e for e in episode_indices if e not in held_out]
    order = [rest[i] for i in rng.permutation(len(rest))]
    out, start = {e: "test" for e in episode_indices if e in held_out}, 0
    for name, size in split_sizes(len(order), fractions).items():
        for ep in order[start:start + size]:
            out[ep] = name
        start += size
    return out
