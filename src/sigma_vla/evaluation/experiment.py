"""The statistics and the figure of `sigma experiment`: several training seeds, the same episodes for every policy.

A figure from one training run is one sample (docs/closed_loop.md, "Does Sigma help?"), so every rate here pools the
episodes of every seed, and its 95% interval comes from a two-level bootstrap: draw the seeds with replacement, then
each drawn seed's episodes with replacement. The interval therefore widens when the seeds disagree, not only when
there are few episodes. A difference between two policies is paired: both ran the same planned episodes (same
simulator seeds, zones and instructions), so each resample takes the same seeds and episodes for both.

Input: outcomes[policy][set] is a list over training seeds of {metric: (E,) bool} arrays, one entry per episode in
plan order (`episode_outcomes` of a rollouts.json). A policy trained once (the base) has the same arrays for every
seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

POLICIES = ("base", "control", "sigma", "sigma_tau0", "sigma_adapter")
SETS = ("held-out", "seen")
METRICS = ("placed_in_zone", "success", "lifted")
DIFFERENCES = {"sigma - control": ("sigma", "control"), "sigma - sigma_tau0": ("sigma", "sigma_tau0")}
BOOTSTRAP = 4000

Outcomes = dict[str, dict[str, list[dict[str, np.ndarray]]]]


def episode_outcomes(rollouts: dict[str, Any]) -> dict[str, np.ndarray]:
    """{metric: (E,) bool} in plan order from a rollouts.json summary (evaluation.rollout.run_rollouts)."""
    episodes = rollouts["episodes_detail"]
    return {m: np.array([bool(e[m]) for e in episodes], dtype=bool) for m in METRICS}


def _resample_indices(rng: np.random.Generator, seeds: int, episodes: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n two-level resamples: seed indices (n, S) and, per drawn seed, episode indices (n, S, E)."""
    return rng.integers(seeds, size=(n, seeds)), rng.integers(episodes, size=(n, seeds, episodes))


def _bootstrap_means(values: np.ndarray, idx: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """values (S, E) -> (n,) means of the resamples."""
    s_idx, e_idx = idx
    return values[s_idx[..., None], e_idx].mean(axis=(1, 2))


def _interval(samples: np.ndarray) -> list[float]:
    lo, hi = np.quantile(samples, [0.025, 0.975])
    return [float(lo), float(hi)]


def _stack(per_seed: list[dict[str, np.ndarray]], metric: str) -> np.ndarray:
    lengths = {len(o[metric]) for o in per_seed}
    if len(lengths) != 1:
        raise ValueError(f"seeds ran different numbers of episodes: {sorted(lengths)}")
    return np.stack([o[metric] for o in per_seed]).astype(float)  # (S, E)


def rate(per_seed: list[dict[str, np.ndarray]], metric: str, seed: int = 0, n: int = BOOTSTRAP) -> dict[str, Any]:
    """Pooled rate over seeds and episodes, its two-level bootstrap interval, and each seed's own rate."""
    values = _stack(per_seed, metric)
    idx = _resample_indices(np.random.default_rng(seed), *values.shape, n)
    return {"rate": float(values.mean()), "ci95": _interval(_bootstrap_means(values, idx)),
            "per_seed": [float(v) for v in values.mean(axis=1)], "episodes": int(values.size)}


def paired_difference(a: list[dict[str, np.ndarray]], b: list[dict[str, np.ndarray]], metric: str, seed: int = 0,
                      n: int = BOOTSTRAP) -> dict[str, Any]:
    """a - b on the same seeds and episodes: the pooled difference, its paired bootstrap interval, per seed."""
    diff = _stack(a, metric) - _stack(b, metric)  # (S, E) in {-1, 0, 1}
    idx = _resample_indices(np.random.default_rng(seed), *diff.shape, n)
    return {"diff": float(diff.mean()), "ci95": _interval(_bootstrap_means(diff, idx)),
            "per_seed": [float(v) for v in diff.mean(axis=1)]}


def summarize(outcomes: Outcomes) -> dict[str, Any]:
    """experiment.json's `policies` and `differences` (the module docstring's statistics)."""
    policies = {name: {s: {m: rate(outcomes[name][s], m) for m in METRICS} for s in SETS if s in outcomes[name]}
                for name in POLICIES if name in outcomes}
    differences = {}
    for label, (a, b) in DIFFERENCES.items():
        if a in outcomes and b in outcomes:
            differences[label] = {s: {m: paired_difference(outcomes[a][s], outcomes[b][s], m)
                                      for m in ("placed_in_zone", "success")}
                                  for s in SETS if s in outcomes[a] and s in outcomes[b]}
    return {"policies": policies, "differences": differences}


def format_table(summary: dict[str, Any]) -> str:
    """The experiment as a text table: per policy and set, pooled rate [interval] and the per-seed rates."""
    lines = [f"{'policy':14s} {'set':9s} " + "  ".join(f"{m.replace('_', ' '):>30s}" for m in METRICS)]
    for name, sets in summary["policies"].items():
        for s, metrics in sets.items():
            cells = []
            for m in METRICS:
                r = metrics[m]
                seeds = "/".join(f"{100 * v:.0f}" for v in r["per_seed"])
                cells.append(f"{_pct(r['rate'], r['ci95']):>17s} ({seeds})".rjust(30))
            lines.append(f"{name:14s} {s:9s} " + "  ".join(cells))
    for label, sets in summary["differences"].items():
        for s, metrics in sets.items():
            parts = [f"{m.replace('_', ' ')} {100 * d['diff']:+.0f} pts [{100 * d['ci95'][0]:+.0f}, "
                     f"{100 * d['ci95'][1]:+.0f}]" for m, d in metrics.items()]
            lines.append(f"{label:24s} {s:9s} " + ", ".join(parts))
    return "\n".join(lines)


def _pct(value: float, ci: list[float]) -> str:
    return f"{100 * value:.0f}% [{100 * ci[0]:.0f}-{100 * ci[1]:.0f}]"


def plot(summary: dict[str, Any], path: Path, title: str = "") -> Path:
    """experiment.png: for each set (rows) and for in-zone and success (columns), every policy's seeds as dots and
    its pooled rate with the 95% interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sigma_vla.outdir import atomic_write

    names = list(summary["policies"])
    sets = [s for s in SETS if any(s in summary["policies"][n] for n in names)]
    fig, axes = plt.subplots(len(sets), 2, figsize=(10, 3.4 * len(sets)), squeeze=False, sharey=True)
    for row, s in enumerate(sets):
        for col, metric in enumerate(("placed_in_zone", "success")):
            ax = axes[row][col]
            for x, name in enumerate(names):
                r = summary["policies"][name].get(s, {}).get(metric)
                if r is None:
                    continue
                lo, hi = r["ci95"]
                ax.errorbar([x], [100 * r["rate"]], yerr=[[100 * (r["rate"] - lo)], [100 * (hi - r["rate"])]],
                            fmt="s", color="black", capsize=6, markersize=7, zorder=3)
                jitter = np.linspace(-0.15, 0.15, len(r["per_seed"])) if len(r["per_seed"]) > 1 else [0.0]
                ax.scatter(x + np.asarray(jitter), [100 * v for v in r["per_seed"]], color="tab:orange", s=22,
                           zorder=4, label="one training seed" if x == 0 else None)
            ax.set_xticks(range(len(names)), [n.replace("_", "\n") for n in names])
            ax.set_ylim(-2, 102)
            ax.set_ylabel("% of episodes")
            ax.set_title(f"{metric.replace('_', ' ')}, {s} templates", fontsize=10)
            ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(loc="upper left", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return path
