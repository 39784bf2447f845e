"""Offline replay metrics (paper 5-6), as pure functions over per-sample arrays.

The paper reports, per group, the mean MSE at three time scales, the hard-sample statistics under fixed
thresholds, CHECK A (telepathy-head weight statistics) and CHECK B (a per-batch table). We add what an honest
comparison needs: relative change against the untuned base with a bootstrap 95% interval over *episodes* (windows of
one episode are not independent), and the same numbers split by instruction kind.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sigma_vla.processing.action_triple import SCALES

# The report's name of each time scale of processing.action_triple.SCALES: sigma_eval_report.json says "traj" (its keys
# `avg_mse_traj`, ... stay comparable with earlier reports).
REPORT_SCALES = tuple("traj" if s == "trajectory" else s for s in SCALES)


@dataclass(frozen=True)
class HardThresholds:
    """Paper 6: a window is hard when its MSE exceeds the threshold at any time scale."""

    vector: float = 0.1
    chunk: float = 0.2
    traj: float = 0.2

    def as_dict(self) -> dict[str, float]:
        return {"vec": self.vector, "chunk": self.chunk, "traj": self.traj}


def hard_mask(mse: dict[str, np.ndarray], th: HardThresholds) -> np.ndarray:
    """(N,) bool: the window's MSE is over the threshold at one or more scales."""
    return (mse["vector"] > th.vector) | (mse["chunk"] > th.chunk) | (mse["traj"] > th.traj)


def group_summary(mse: dict[str, np.ndarray], mse_norm: dict[str, np.ndarray], tau_l2: np.ndarray,
                  sem_align: np.ndarray, num_batches: int, th: HardThresholds) -> dict:
    """The paper's per-group fields of sigma_eval_report.json (raw units, plus our normalized-unit MSEs)."""
    hard = hard_mask(mse, th)
    out = {"num_samples": int(len(tau_l2)), "num_batches": int(num_batches)}
    for s in REPORT_SCALES:
        out[f"avg_mse_{s}"] = float(mse[s].mean()) if len(mse[s]) else float("nan")
    for s in REPORT_SCALES:
        out[f"avg_mse_{s}_normalized"] = float(mse_norm[s].mean()) if len(mse_norm[s]) else float("nan")
    out.update(
        avg_tau_l2=float(tau_l2.mean()) if len(tau_l2) else float("nan"),
        avg_semantic_text_alignment=float(sem_align.mean()) if len(sem_align) else float("nan"),
        hard_thresholds=th.as_dict(),
        hard_sample_fraction=float(hard.mean()) if len(hard) else 0.0,
        total_hard_samples=int(hard.sum()),
    )
    for s in REPORT_SCALES:
        out[f"avg_hard_mse_{s}"] = float(mse[s][hard].mean()) if hard.any() else float("nan")
    return out


def episode_means(values: np.ndarray, episodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-episode sums and counts (the bootstrap resamples episodes, then pools their windows)."""
    ids, inverse = np.unique(episodes, return_inverse=True)
    sums = np.bincount(inverse, weights=values, minlength=len(ids))
    counts = np.bincount(inverse, minlength=len(ids)).astype(np.float64)
    return sums, counts


def relative_change(group: np.ndarray, reference: np.ndarray, episodes: np.ndarray, n_boot: int = 1000,
                    seed: int = 0) -> dict[str, float]:
    """mean(group) / mean(reference) - 1 over the same windows, with a 95% bootstrap interval over episodes."""
    g_sum, counts = episode_means(group, episodes)
    r_sum, _ = episode_means(reference, episodes)
    point = g_sum.sum() / max(r_sum.sum(), 1e-12) - 1.0
    if len(counts) < 2:
        return {"change": float(point), "ci95_low": float("nan"), "ci95_high": float("nan"), "episodes": len(counts)}
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(counts), size=(n_boot, len(counts)))  # (n_boot, E) episodes with replacement
    boot = g_sum[picks].sum(1) / np.maximum(r_sum[picks].sum(1), 1e-12) - 1.0
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"change": float(point), "ci95_low": float(lo), "ci95_high": float(hi), "episodes": int(len(counts))}


def check_a(tensors: dict[str, torch.Tensor]) -> dict[str, float]:
    """CHECK A: count, mean, std and rms of the telepathy-head weights (must be identical across groups)."""
    if not tensors:
        return {"heads_tensors": 0, "mean": 0.0, "std": 0.0, "rms": 0.0}
    flat = torch.cat([t.detach().float().reshape(-1) for t in tensors.values()]).double()
    return {"heads_tensors": len(tensors), "mean": float(flat.mean()), "std": float(flat.std()),
            "rms": float(flat.pow(2).mean().sqrt())}


def check_b_rows(batch_rows: list[dict], every: int = 20) -> list[dict]:
    """CHECK B: the per-batch table at every `every`-th batch (paper tables 2 and 3)."""
    return [row for row in batch_rows if row["batch"] % every == 0]


def instruction_subsets(episodes: np.ndarray, episode_info: dict[str, dict]) -> dict[str, np.ndarray]:
    """Masks (N,) of windows by instruction kind (explicit / implicit) and template (seen / held-out), from the
    recorder's per-episode columns copied into meta.json; empty when the dataset has none (a real recording)."""
    if not episode_info:
        return {}
    kind = np.array([episode_info.get(str(e), {}).get("sigma/instruction_kind", "") for e in episodes])
    held = np.array([bool(episode_info.get(str(e), {}).get("sigma/held_out", False)) for e in episodes])
    return {"explicit": kind == "explicit", "implicit": kind == "implicit", "seen_templates": ~held,
            "held_out_templates": held}


def build_report(res: dict, meta: dict, heads: dict[str, float], th: HardThresholds, n_boot: int = 1000,
                 reference: str = "base_untuned") -> dict:
    """sigma_eval_report.json: the paper's per-group fields, CHECK A/B, and our relative changes with intervals,
    overall and per instruction subset."""
    episodes = res["episode_index"]
    groups = {}
    for g in res["mse"]:
        groups[g] = group_summary(res["mse"][g], res["mse_norm"][g], res["tau_l2"], res["sem_align"],
                                  res["num_batches"], th)
        groups[g]["check_a"] = heads
        groups[g]["check_b"] = check_b_rows(res["rows"][g])
        if g != reference:
            groups[g]["relative_to_" + reference] = {
                s: relative_change(res["mse"][g][s], res["mse"][reference][s], episodes, n_boot) for s in REPORT_SCALES}
    subsets = {}
    for name, mask in instruction_subsets(episodes, meta.get("episode_info") or {}).items():
        if not mask.any():
            continue
        subsets[name] = {"num_samples": int(mask.sum()), "episodes": int(len(np.unique(episodes[mask])))}
        for g in res["mse"]:
            entry = {f"avg_mse_{s}": float(res["mse"][g][s][mask].mean()) for s in REPORT_SCALES}
            if g != reference:
                entry["relative_to_" + reference] = {
                    s: relative_change(res["mse"][g][s][mask], res["mse"][reference][s][mask], episodes[mask],
                                       n_boot) for s in REPORT_SCALES}
            subsets[name][g] = entry
    return {"groups": groups, "by_instruction": subsets, "hard_thresholds": th.as_dict(),
            "episodes": int(len(np.unique(episodes))),
            "examples": res.get("examples", []),
            "adapter_scale_mean": float(res["adapter_scale"].mean()) if len(res["adapter_scale"]) else None}


def replay_episodes(report: dict) -> int | None:
    """How many episodes the report's intervals resample (older reports: read from a relative change)."""
    if isinstance(report.get("episodes"), int):
        return report["episodes"]
    rel = next((s["relative_to_base_untuned"] for s in report.get("groups", {}).values()
                if s.get("relative_to_base_untuned")), None)
    return next(iter(rel.values())).get("episodes") if rel else None
