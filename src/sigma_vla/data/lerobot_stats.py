"""Feature statistics in LeRobot v3.0's layout (meta/stats.json and the episodes' stats/* columns).

Each feature gets min, max, mean, std, count and the quantiles q01, q10, q50, q90, q99. Vectors reduce over
frames (shape (D,)); scalars keep a length-1 axis; camera frames reduce per channel over a sample of
frames and all pixels, scaled to [0, 1], shape (3, 1, 1), count = the number of sampled frames (as LeRobot).

Image statistics are computed from per-channel 256-bin histograms of the uint8 pixels: exact, cheap, and
summable, so the dataset-wide image stats are exact too (LeRobot averages per-episode quantiles instead).
"""

from __future__ import annotations

from typing import Any

import numpy as np

QUANTILES: dict[str, float] = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
STAT_KEYS: tuple[str, ...] = ("min", "max", "mean", "std", "count", *QUANTILES)


def image_sample_indices(length: int, min_samples: int = 100, max_samples: int = 10_000,
                         power: float = 0.75) -> np.ndarray:
    """Evenly spaced frame indices for image stats: all frames up to 100, then length**0.75 (LeRobot's rule,
    so per-episode image counts match what LeRobot would write)."""
    n = max(min(length, min_samples), min(int(length ** power), max_samples))
    return np.round(np.linspace(0, length - 1, n)).astype(np.int64)


def numeric_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """Stats over the first axis of (N,) or (N, D) values. Integer features keep integer min and max."""
    x = np.asarray(values)
    if x.ndim == 1:
        x = x[:, None]  # scalars keep a length-1 axis: (N,) -> (N, 1)
    xf = x.astype(np.float64)
    out: dict[str, np.ndarray] = {
        "min": x.min(axis=0),
        "max": x.max(axis=0),
        "mean": xf.mean(axis=0),
        "std": xf.std(axis=0),
        "count": np.array([len(x)], dtype=np.int64),
    }
    qs = np.quantile(xf, list(QUANTILES.values()), axis=0)  # (5, D)
    for i, key in enumerate(QUANTILES):
        out[key] = qs[i]
    return out


def channel_histogram(frames: np.ndarray) -> np.ndarray:
    """(3, 256) pixel counts per channel of (n, H, W, 3) uint8 frames."""
    flat = frames.reshape(-1, frames.shape[-1])  # (n*H*W, 3)
    return np.stack([np.bincount(flat[:, c], minlength=256) for c in range(flat.shape[1])]).astype(np.int64)


def _histogram_quantile(cum: np.ndarray, total: int, q: float) -> float:
    """numpy's default ('linear') quantile of the multiset a histogram describes."""
    pos = q * (total - 1)
    lo, hi = int(np.floor(pos)), int(np.ceil(pos))
    v_lo = int(np.searchsorted(cum, lo, side="right"))  # value of the lo-th sorted element
    v_hi = int(np.searchsorted(cum, hi, side="right"))
    return v_lo + (v_hi - v_lo) * (pos - lo)


def image_stats_from_histogram(hist: np.ndarray, sampled_frames: int) -> dict[str, np.ndarray]:
    """Per-channel stats of pixels scaled to [0, 1], each shaped (3, 1, 1); count = sampled frames."""
    values = np.arange(hist.shape[1], dtype=np.float64)
    total = hist.sum(axis=1)  # (3,)
    mean = (hist * values).sum(axis=1) / total
    var = (hist * (values[None, :] - mean[:, None]) ** 2).sum(axis=1) / total
    nonzero = [np.flatnonzero(h) for h in hist]
    out = {
        "min": np.array([nz[0] for nz in nonzero], dtype=np.float64),
        "max": np.array([nz[-1] for nz in nonzero], dtype=np.float64),
        "mean": mean,
        "std": np.sqrt(var),
    }
    cums = np.cumsum(hist, axis=1)
    for key, q in QUANTILES.items():
        out[key] = np.array([_histogram_quantile(cums[c], int(total[c]), q) for c in range(hist.shape[0])])
    scaled = {k: (v / 255.0).reshape(-1, 1, 1) for k, v in out.items()}  # (3,) -> (3, 1, 1)
    scaled["count"] = np.array([sampled_frames], dtype=np.int64)
    return {k: scaled[k] for k in STAT_KEYS}


def episode_image_stats(frames: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray, int]:
    """Stats of one episode's (T, H, W, 3) frames over LeRobot's frame sample, plus the histogram and sample
    count so the dataset-wide stats can be summed exactly."""
    idx = image_sample_indices(len(frames))
    hist = channel_histogram(frames[idx])
    return image_stats_from_histogram(hist, len(idx)), hist, len(idx)


def to_jsonable(stats: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, Any]]:
    """numpy arrays -> nested lists with Python ints/floats, for meta/stats.json."""
    return {feat: {k: np.asarray(v).tolist() for k, v in s.items()} for feat, s in stats.items()}
