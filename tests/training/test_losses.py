"""TRAF and TSAC losses (paper 4.2.1, 4.2.2) on hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sigma_vla.training.losses import (
    ActionTriple,
    hard_set,
    hard_set_size,
    info_nce,
    l_intent,
    l_sem,
    l_tau,
    l_time,
    per_sample_mse,
    residual_weights,
    tau_rms,
    traf_loss,
)


def _triple(vec, chunk, traj) -> ActionTriple:
    return ActionTriple(torch.tensor(vec), torch.tensor(chunk), torch.tensor(traj))


def test_per_sample_mse_hand_values_and_mask():
    pred = torch.tensor([[1.0, 2.0], [0.0, 0.0]])  # (B=2, Da=2)
    gt = torch.tensor([[0.0, 0.0], [3.0, float("nan")]])  # NaN is padding, masked below
    mask = torch.tensor([[True, True], [True, False]])
    assert per_sample_mse(pred, gt, mask).tolist() == [2.5, 9.0]  # (1 + 4) / 2, 9 / 1


def test_prefix_mask_broadcasts_over_trailing_dims():
    pred = torch.zeros(1, 3, 2)  # (B, T, Da)
    gt = torch.tensor([[[1.0, 1.0], [2.0, 2.0], [100.0, 100.0]]])
    step_mask = torch.tensor([[True, True, False]])  # (B, T): the last step is padding
    assert per_sample_mse(pred, gt, step_mask).item() == pytest.approx(2.5)  # (1 + 1 + 4 + 4) / 4


def test_hard_set_size_rounding():
    assert [hard_set_size(0.3, n) for n in (1, 3, 8, 10, 20, 32)] == [1, 1, 3, 3, 6, 10]
    assert hard_set_size(0.0, 10) == 0 and hard_set_size(1.0, 7) == 7 and hard_set_size(0.3, 0) == 0
    with pytest.raises(ValueError, match="rho"):
        hard_set_size(1.5, 4)


def test_hard_set_picks_hardest_and_breaks_ties_by_index():
    h = torch.tensor([0.5, 3.0, 1.0, 3.0, 0.1, 2.0, 0.0, 0.2, 0.3, 0.4])  # B = 10 -> |H| = 3
    assert hard_set(h, 0.3).tolist() == [1, 3, 5]
    valid = torch.ones(10, dtype=torch.bool)
    valid[1] = False  # a padded sample never enters H, however large its score
    assert hard_set(h, 0.3, valid).tolist() == [3, 5, 2]


def _batch():
    # B = 4, Da = 1, C = 2, T = 2; prediction zero, so per-sample MSE is the mean of gt^2:
    # per-sample: vec [1, 4, 0, 9], chunk [1, 0, 4, 2], traj [0, 4, 0, 1] -> h = [2, 8, 4, 12]
    gt = _triple([[1.0], [2.0], [0.0], [3.0]],
                 [[[1.0], [1.0]], [[0.0], [0.0]], [[2.0], [2.0]], [[0.0], [2.0]]],
                 [[[0.0], [0.0]], [[2.0], [2.0]], [[0.0], [0.0]], [[1.0], [1.0]]])
    out = ActionTriple(torch.zeros(4, 1), torch.zeros(4, 2, 1), torch.zeros(4, 2, 1))
    return out, gt


def test_traf_hand_values():
    out, gt = _batch()
    total, m = traf_loss(out, gt, alphas=(1.0, 0.5, 2.0), rho=0.5, lambda_hard=0.25)
    # means: vec 14/4 = 3.5, chunk 7/4 = 1.75, traj 5/4 = 1.25 -> L_act = 3.5 + 0.875 + 2.5 = 6.875
    assert m["L_act"].item() == pytest.approx(6.875)
    assert m["hard_indices"].tolist() == [3, 1]  # h = [2, 8, 4, 12], ceil(0.5 * 4) = 2
    # H = {3, 1}: vec (9 + 4)/2 = 6.5, chunk (2 + 0)/2 = 1, traj (1 + 4)/2 = 2.5 -> 6.5 + 0.5 + 5 = 12
    assert m["L_act_hard"].item() == pytest.approx(12.0)
    assert total.item() == pytest.approx(6.875 + 0.25 * 12.0)
    assert m["hard_ratio"].item() == pytest.approx(0.5)
    assert m["difficulty"].tolist() == [2.0, 8.0, 4.0, 12.0]


def test_traf_residual_on_base_actions():
    out, gt = _batch()
    base = ActionTriple(*(g.clone() for g in gt))  # base already perfect -> zero residual gives zero loss
    total, m = traf_loss(out, gt, base=base)
    assert total.item() == 0.0 and m["L_act_hard"].item() == 0.0
    delta = ActionTriple(*(torch.ones_like(g) for g in gt))  # residual of 1 everywhere -> every MSE is 1
    total, m = traf_loss(delta, gt, base=base, lambda_hard=1.0)
    assert m["L_act"].item() == pytest.approx(3.0) and total.item() == pytest.approx(6.0)


def test_residual_floor_weighs_a_window_by_the_correction_it_asks_for():
    """residual_floor c: w_i = c / (r_i + c). Sample 0 needs no correction (base = gt) and gets an error of 1 from
    the output; sample 1 needs a correction of 3 that the output misses. Plain MSE: the miss dominates (1 + 9) / 2;
    weighted, the added error counts fully: (1 * 1 + 0.1 * 9) / 1.1 per scale, with r_1 = 3 scales x 9 = 27."""
    gt = ActionTriple(torch.zeros(2, 1), torch.zeros(2, 1, 1), torch.zeros(2, 1, 1))
    base = ActionTriple(*(torch.tensor([0.0, 3.0]).view(-1, *([1] * (g.dim() - 1))).expand_as(g) for g in gt))
    out = ActionTriple(*(torch.tensor([1.0, 0.0]).view(-1, *([1] * (g.dim() - 1))).expand_as(g) for g in gt))
    _, plain = traf_loss(out, gt, base=base, rho=0.0)
    assert plain["L_act"].item() == pytest.approx(3 * 10 / 2)
    c = 3.0
    w = torch.tensor([1.0, c / (27 + c)])  # [1, 0.1]
    _, weighted = traf_loss(out, gt, base=base, rho=0.5, residual_floor=c)
    assert weighted["L_act"].item() == pytest.approx(3 * (w[0] * 1 + w[1] * 9).item() / w.sum().item())
    assert weighted["mse_chunk"].item() == pytest.approx(5.0)  # the logged MSEs stay plain
    assert weighted["hard_indices"].tolist() == [0]  # ranked by w_i h_i: 1 * 3 > 0.1 * 27
    assert residual_weights(None, gt, (None,) * 3, c).tolist() == [1.0, 1.0]  # no base: plain MSE


def test_traf_masked_sample_never_enters():
    out, gt = _batch()
    poisoned = ActionTriple(*(g.clone() for g in gt))
    for g in poisoned:
        g[3] = float("nan")  # sample 3 is padding
    sample_mask = torch.tensor([True, True, True, False])  # (B,)
    total, m = traf_loss(out, poisoned, rho=0.5, masks=(sample_mask,) * 3)
    # remaining h = [2, 8, 4]: ceil(1.5) = 2 -> H = {1, 2}; L_act = (5/3) + (5/3) + (4/3)
    assert m["hard_indices"].tolist() == [1, 2]
    assert m["L_act"].item() == pytest.approx(14 / 3)
    assert math.isfinite(total.item()) and m["hard_ratio"].item() == pytest.approx(2 / 3)


def test_traf_gradient_flows_through_hard_samples():
    out, gt = _batch()
    out = ActionTriple(*(o.requires_grad_() for o in out))
    total, _ = traf_loss(out, gt, rho=0.25, lambda_hard=1.0)
    total.backward()
    # d/d pred of mean((pred - gt)^2) over 4 samples = -2 gt / 4; sample 3 (the hard one) gets the hard term too
    assert out.vector.grad[:, 0].tolist() == pytest.approx([-0.5, -1.0, 0.0, -1.5 - 6.0])


def test_l_time_skips_empty_memory():
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    m_prev = torch.tensor([[2.0, 0.0], [0.0, 0.0], [1.0, 0.0]])  # sample 1: no memory yet
    assert l_time(z, m_prev).item() == pytest.approx((0.0 + 1.0) / 2)


def test_info_nce_hand_value_and_mask():
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    ctx = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # logits = I / 0.5: each row's cross-entropy is -log(e^2 / (e^2 + e^0)) = log(1 + e^-2) = 0.126928
    assert info_nce(z, ctx, temperature=0.5).item() == pytest.approx(0.126928, abs=1e-6)
    assert info_nce(z, ctx, mask=torch.tensor([True, False])).item() == 0.0  # no negatives left


def test_l_sem_combines_terms():
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    m_prev = torch.tensor([[0.0, 1.0], [0.0, 1.0]])  # cos = 0, 1 -> L_time 0.5
    total, parts = l_sem(z, m_prev, z.clone(), beta_mi=0.5, temperature=0.5)
    assert parts["L_time"].item() == pytest.approx(0.5)
    assert total.item() == pytest.approx(0.5 + 0.5 * 0.126928, abs=1e-6)  # L_mi as in test_info_nce_hand_value


def test_l_intent_is_negative_cosine():
    zi = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    m = torch.tensor([[3.0, 0.0], [-1.0, -1.0]])
    assert l_intent(zi, m).item() == pytest.approx((-1.0 + 1.0) / 2, abs=1e-6)
    assert l_intent(zi, m, torch.tensor([True, False])).item() == pytest.approx(-1.0)


def test_l_tau_three_terms():
    tau = torch.tensor([[0.6, 0.0], [3.0, 4.0]])  # norms 0.6 and 5
    c_act = torch.tensor([[0.0, 1.0], [3.0, 4.0]])  # cos 0 and 1
    total, parts = l_tau(tau, c_act, tau_0=1.0, lambda_collapse=2.0, eta_var=0.5)
    # by hand: sample 0 = 0.0036 (size) + 0.32 (collapse: 2 x 0.4^2) + 0.5 (direction); sample 1 = 0.25 (size only)
    assert total.item() == pytest.approx(0.5368)  # (0.8236 + 0.25) / 2
    assert parts["tau_rms"].item() == pytest.approx(3.5609, abs=1e-4)  # sqrt((0.36 + 25) / 2) = sqrt(12.68)
    with pytest.raises(ValueError, match="width"):
        l_tau(tau, torch.zeros(2, 3))


def test_tau_rms_matches_table1_scale():
    tau = torch.full((4, 32), 5.653 / math.sqrt(32))  # every sample norm 5.653 (Table 1, step 130)
    assert tau_rms(tau).item() == pytest.approx(5.653, rel=1e-5)
    assert 0.01 * tau_rms(tau).item() ** 2 == pytest.approx(0.3196, abs=1e-3)


def test_cos_of_zero_vectors_has_finite_gradient():
    tau = torch.zeros(2, 3, requires_grad=True)
    total, _ = l_tau(tau, torch.ones(2, 3))
    total.backward()
    assert torch.isfinite(tau.grad).all() and F.cosine_similarity(tau, torch.ones(2, 3)).abs().sum() == 0
