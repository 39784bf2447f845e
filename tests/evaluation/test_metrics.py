"""Replay metrics on hand values: hard-sample rule, bootstrap over episodes, CHECK A."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sigma_vla.evaluation.metrics import HardThresholds, check_a, group_summary, relative_change


def test_group_summary_hand_values():
    mse = {"vector": np.array([0.05, 0.3]), "chunk": np.array([0.1, 0.1]), "traj": np.array([0.1, 0.5])}
    s = group_summary(mse, mse, np.array([1.0, 3.0]), np.array([0.1, 0.3]), 1, HardThresholds())
    assert s["avg_mse_vector"] == pytest.approx(0.175)
    assert s["total_hard_samples"] == 1 and s["hard_sample_fraction"] == 0.5  # only the 2nd passes a threshold
    assert s["avg_hard_mse_traj"] == pytest.approx(0.5)
    assert s["avg_tau_l2"] == 2.0 and s["avg_semantic_text_alignment"] == pytest.approx(0.2)


def test_relative_change_pools_windows_and_resamples_episodes():
    episodes = np.array([0, 0, 1, 1, 2, 2])
    ref = np.array([1.0, 1.0, 2.0, 2.0, 3.0, 3.0])
    r = relative_change(0.7 * ref, ref, episodes, n_boot=200)
    assert r["change"] == pytest.approx(-0.3)
    assert r["ci95_low"] == pytest.approx(-0.3) and r["ci95_high"] == pytest.approx(-0.3)  # same ratio everywhere
    noisy = relative_change(ref * np.array([0.5, 0.5, 1.0, 1.0, 1.2, 1.2]), ref, episodes, n_boot=500)
    assert noisy["ci95_low"] < noisy["change"] < noisy["ci95_high"] and noisy["episodes"] == 3


def test_check_a_statistics():
    stats = check_a({"a": torch.tensor([1.0, -1.0]), "b": torch.tensor([[3.0, -3.0]])})
    assert stats["heads_tensors"] == 2 and stats["mean"] == 0.0
    assert stats["rms"] == pytest.approx(np.sqrt(5.0))
