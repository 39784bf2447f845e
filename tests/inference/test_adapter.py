"""The risk-gated adapter (paper 4.3): scale up safe residuals, fall back to the base on risky or broken ones."""

from __future__ import annotations

import math

import pytest
import torch

from sigma_vla.inference.adapter import AdapterConfig
from sigma_vla.inference.adapter import adapt as adapt_triples
from sigma_vla.processing.action_triple import ActionTriple

B, C, T, DA, DT = 3, 4, 8, 2, 5


def _inputs(residual: float = 0.1, tau_norm: float = 3.0, aligned: bool = True):
    g = torch.Generator().manual_seed(0)
    base_v = torch.randn(B, DA, generator=g) + 2
    base_c = torch.randn(B, C, DA, generator=g) + 2
    base_t = torch.randn(B, T, DA, generator=g) + 2
    preds = [b * (1 + residual) for b in (base_v, base_c, base_t)]  # residual = `residual` x base
    tau = torch.nn.functional.normalize(torch.randn(B, DT, generator=g), dim=1) * tau_norm
    c_act = tau.clone() if aligned else -tau
    return (*preds, base_v, base_c, base_t, tau, c_act)


def adapt(pred_v, pred_c, pred_t, base_v, base_c, base_t, tau, c_act, cfg: AdapterConfig):
    """The flat inputs of _inputs as the adapter's triples (Sigma's final actions, the base's)."""
    return adapt_triples(ActionTriple(pred_v, pred_c, pred_t), ActionTriple(base_v, base_c, base_t), tau, c_act, cfg)


def test_moderate_aligned_residual_is_scaled_up():
    cfg = AdapterConfig(max_scale=1.25, tau_max=10.0)
    out = adapt(*_inputs(residual=0.1), cfg=cfg)
    assert torch.allclose(out.scale, torch.full((B,), 1.25))
    base_v, pred_v = _inputs(0.1)[3], _inputs(0.1)[0]
    torch.testing.assert_close(out.actions.vector, base_v + 1.25 * (pred_v - base_v))
    assert not out.nonfinite.any()


def test_abnormal_residual_drives_scale_to_zero():
    out = adapt(*_inputs(residual=5.0), cfg=AdapterConfig(tau_max=10.0))
    assert (out.scale < 1e-6).all()
    torch.testing.assert_close(out.actions.chunk, _inputs(5.0)[4], atol=1e-4, rtol=0)
    assert (out.terms["ratio"] > 4.9).all()


def test_tau_out_of_range_drives_scale_to_zero():
    out = adapt(*_inputs(tau_norm=80.0), cfg=AdapterConfig(tau_max=10.0))
    assert (out.scale < 1e-6).all() and (out.terms["risk_tau"] > 10).all()
    low = adapt(*_inputs(tau_norm=0.01), cfg=AdapterConfig(tau_min=1.0, tau_max=10.0))
    assert (low.scale < 0.1).all()


def test_misaligned_tau_lowers_the_scale():
    cfg = AdapterConfig(tau_max=10.0)
    aligned, opposed = adapt(*_inputs(), cfg=cfg), adapt(*_inputs(aligned=False), cfg=cfg)
    assert (opposed.scale < aligned.scale).all()
    assert opposed.scale[0].item() == pytest.approx(1.25 * math.exp(-1.0), rel=1e-4)


@pytest.mark.parametrize("where", range(8))
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_anywhere_gives_exactly_the_base(where, bad):
    inputs = list(_inputs())
    inputs[where] = inputs[where].clone()
    inputs[where].view(B, -1)[1, 0] = bad  # sample 1 is broken, samples 0 and 2 are fine
    out = adapt(*inputs, cfg=AdapterConfig(tau_max=10.0))
    assert out.nonfinite.tolist() == [False, True, False]
    for adapted, base in zip(out.actions, inputs[3:6]):
        assert torch.equal(adapted[1], base[1]) or where in (3, 4, 5)  # a broken base is returned as is
        assert torch.isfinite(adapted[[0, 2]]).all()
    assert out.scale[1] == 0


def test_config_validation_names_the_value():
    with pytest.raises(ValueError, match="min_scale"):
        AdapterConfig(min_scale=2.0, max_scale=1.0)
