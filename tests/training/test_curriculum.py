"""TSAC curriculum weights (paper 4.2.2) against Table 1's columns."""

from __future__ import annotations

import pytest

from sigma_vla.training.curriculum import PAPER_RAMP_STEPS, CurriculumConfig, LinearRamp, curriculum_weights

# Table 1 of the paper: step, w_sem, w_int, w_tau (rounded to 3 decimals there).
TABLE1 = [
    (0, 0.100, 0.100, 0.000), (10, 0.210, 0.185, 0.004), (20, 0.320, 0.271, 0.007), (30, 0.429, 0.356, 0.011),
    (40, 0.539, 0.441, 0.015), (50, 0.649, 0.527, 0.018), (60, 0.759, 0.612, 0.022), (70, 0.868, 0.698, 0.026),
    (80, 0.978, 0.783, 0.029), (90, 1.000, 0.800, 0.030), (130, 1.000, 0.800, 0.030),
]


@pytest.mark.parametrize("step,w_sem,w_int,w_tau", TABLE1)
def test_default_curriculum_reproduces_table1(step, w_sem, w_int, w_tau):
    w = curriculum_weights(CurriculumConfig(), step)
    assert round(w["w_sem"], 3) == w_sem and round(w["w_int"], 3) == w_int and round(w["w_tau"], 3) == w_tau


def test_linear_ramp_hand_values():
    ramp = LinearRamp(0.1, 1.0, 10)
    assert [ramp(s) for s in (-3, 0, 5, 10, 11)] == pytest.approx([0.1, 0.1, 0.55, 1.0, 1.0])
    assert LinearRamp(0.0, 0.5, 0)(0) == 0.5
    assert PAPER_RAMP_STEPS == 82


def test_bad_curriculum_is_rejected():
    with pytest.raises(ValueError, match="-1"):
        CurriculumConfig(ramp_steps=-1)
    with pytest.raises(ValueError, match="w_tau"):
        CurriculumConfig(w_tau=(0.0, -1.0))
