"""The client's temporal ensembling: the way rollouts execute a policy, available to a robot without torch."""

from __future__ import annotations

import numpy as np
import pytest
from sigma_vla_client import TemporalEnsemble
from sigma_vla_client.ensemble import ensemble_action


def test_ensemble_weights_older_chunks_more_and_k_zero_limit_is_the_mean():
    old, new = np.array([[1.0, 0.0], [9.0, 9.0]]), np.array([[3.0, 2.0]])  # rows 0: this step's actions
    np.testing.assert_allclose(ensemble_action([old, new], 1e-9), [2.0, 1.0])
    w = np.exp(-1.0)  # k = 1: the newer chunk weighs e^-1 of the older
    np.testing.assert_allclose(ensemble_action([old, new], 1.0), [(1 + 3 * w) / (1 + w), 2 * w / (1 + w)], rtol=1e-6)


def test_each_step_blends_every_plan_that_covers_it_and_reset_forgets_them():
    ens = TemporalEnsemble(k=0.5)
    plans = [np.arange(6, dtype=np.float32).reshape(3, 2) + 10 * t for t in range(4)]  # (3, 2) each
    assert np.allclose(ens(plans[0]), plans[0][0])  # one plan: its own first action
    w = np.exp(-0.5 * np.arange(3))
    ens(plans[1])
    blended = ens(plans[2])  # step 2: row 2 of plan 0, row 1 of plan 1, row 0 of plan 2
    expected = (w[0] * plans[0][2] + w[1] * plans[1][1] + w[2] * plans[2][0]) / w.sum()
    np.testing.assert_allclose(blended, expected, rtol=1e-6)
    assert len(ens.chunks) == 2  # plan 0 is spent after 3 steps
    ens.reset()
    assert np.allclose(ens(plans[3]), plans[3][0])


def test_bad_plans_and_weights_are_refused_in_one_line():
    with pytest.raises(ValueError, match="k must be >= 0"):
        TemporalEnsemble(k=-1.0)
    ens = TemporalEnsemble()
    with pytest.raises(ValueError, match=r"got shape \(4,\)"):
        ens(np.zeros(4))
    ens(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="action dim 2 after plans of 3"):
        ens(np.zeros((2, 2)))
