"""Training losses of paper section 4.2 as small pure functions of shaped tensors.

TRAF (4.2.1, Telepathic Residual Action Focusing): action regression at three time scales plus an extra term on the
hardest rho fraction of the batch. TSAC (4.2.2, Telepathic Semantic Alignment Curriculum): the semantic, intent and
telepathy-factor terms whose weights `curriculum.py` ramps up.

Shape legend (docs/architecture.md): B batch, T horizon, C chunk, Da action dim, D width, K semantic factors.

The action triple and the masked per-sample MSE live in processing/action_triple.py (evaluation reports the same MSE).

Masks: every function takes an optional mask where True (or 1) marks a real element. A mask may cover a prefix of
the tensor's dims ((B,), (B, T), (B, T, Da)) and is broadcast over the trailing dims. A masked element never enters
a sum or a count, so padding (even NaN padding) cannot change a loss; a sample with no real element leaves every
mean and the hard-set ranking.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from sigma_vla.processing.action_triple import ActionTriple, SCALES, per_sample_mse, per_sample_sse

__all__ = ["SCALES", "ActionTriple", "final_actions", "hard_set", "hard_set_size", "info_nce", "l_intent", "l_sem",
           "l_tau", "l_time", "per_sample_mse", "per_sample_sse", "pooled_mse", "residual_weights", "tau_rms",
           "traf_loss"]


def pooled_mse(sse: Tensor, count: Tensor, select: Tensor | None = None) -> Tensor:
    """MSE over a set of samples, pooled over their real elements: sum(sse_i) / sum(n_i) for i in select (B,) bool.

    Pooling equals the plain element mean when nothing is masked (F.mse_loss), and weighs a partly masked sample by
    how many real elements it has. An empty set gives 0 (with a graph, so backward still works)."""
    if select is not None:
        sse, count = sse[select], count[select]
    return sse.sum() / count.sum().clamp_min(1.0)


# ----------------------------------------------------------------------------------------------------------- TRAF
def hard_set_size(rho: float, n_valid: int) -> int:
    """|H| = ceil(rho * n) for rho > 0 (at least one sample, at most n); 0 for rho = 0.

    Rounding up keeps the hard fraction >= rho for every batch size (rho = 0.3: B = 10 -> 3, B = 8 -> 3, B = 1 -> 1).
    A 1e-9 slack absorbs float error (0.3 * 10 = 3.0000000000000004 must give 3, not 4)."""
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"rho must be in [0, 1], got {rho}")
    if rho == 0.0 or n_valid == 0:
        return 0
    return min(n_valid, max(1, math.ceil(rho * n_valid - 1e-9)))


def hard_set(difficulty: Tensor, rho: float, valid: Tensor | None = None) -> Tensor:
    """Indices of the top-rho hardest valid samples, hardest first: (B,) -> (k,) int64.

    Ties go to the lower index (stable sort), so the choice is deterministic."""
    valid = torch.ones_like(difficulty, dtype=torch.bool) if valid is None else valid.bool()
    k = hard_set_size(rho, int(valid.sum()))
    score = torch.where(valid, difficulty.detach().float(), torch.full_like(difficulty, -math.inf, dtype=torch.float))
    order = torch.sort(score, descending=True, stable=True).indices  # (B,)
    return order[:k]  # (k,)


def final_actions(output: ActionTriple, base: ActionTriple | None) -> ActionTriple:
    """Paper 4.2.1: a = a_base + delta_a when the shards carry the base's offline actions, else a = delta_a."""
    return output if base is None else output.plus(base)


def residual_weights(base: ActionTriple | None, target: ActionTriple,
                     masks: tuple[Tensor | None, Tensor | None, Tensor | None], floor: float | None) -> Tensor:
    """w_i = floor / (r_i + floor), r_i = sum_s MSE_i,s(base, target): (B,); all ones when floor is None or there
    is no base (see `traf_loss`)."""
    b = target.vector.shape[0]
    if floor is None or base is None:
        return torch.ones(b, device=target.vector.device)
    r = sum(per_sample_mse(a.detach(), t, m) for a, t, m in zip(base, target, masks))  # (B,)
    return floor / (r + floor)  # (B,)


def traf_loss(
    output: ActionTriple,
    target: ActionTriple,
    base: ActionTriple | None = None,
    alphas: tuple[float, float, float] = (1.0, 1.0, 1.0),
    rho: float = 0.3,
    lambda_hard: float = 1.0,
    masks: tuple[Tensor | None, Tensor | None, Tensor | None] | None = None,
    residual_floor: float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """L_act_total = L_act + lambda_hard * L_act^hard (paper 4.2.1).

    L_act = sum_s alpha_s MSE_s over the batch; h_i = sum_s MSE_i,s (unweighted, as the paper writes it) ranks the
    samples; L_act^hard is L_act restricted to the top-rho set H (see `hard_set_size` for the rounding). H is chosen
    per call (per process under data parallelism) and without gradient; the loss then flows through H's samples.

    residual_floor c (our addition, None = the paper's plain MSE; needs `base`): each window's errors are weighted
    by w_i = c / (r_i + c), r_i = sum_s MSE_i,s(base, target), the size of the correction it asks for, and every
    mean becomes a w-weighted mean. A window the base already gets right (r_i << c) then counts as much as one that
    needs a large correction: errors Sigma adds where none is needed (before the grasp, mm matter) are not drowned
    out by the large carry corrections (docs/closed_loop.md, "Paired twins").

    Returns the scalar L_act_total and detached metrics: L_act, L_act_hard, L_act_total, mse_vector, mse_chunk,
    mse_trajectory (plain, unweighted), hard_ratio (|H| / valid samples), hard_indices (k,), difficulty (B,).
    """
    masks = masks or (None, None, None)
    final = final_actions(output, base)
    plain = [per_sample_sse(a, t, m) for a, t, m in zip(final, target, masks)]  # 3 x ((B,), (B,))
    w = residual_weights(base, target, masks, residual_floor)  # (B,)
    sse_n = [(sse * w, n * w) for sse, n in plain]
    valid = torch.stack([n for _, n in plain]).sum(0) > 0  # (B,) samples with any real element
    difficulty = w * sum(sse / n.clamp_min(1.0) for sse, n in plain)  # (B,) h_i (times w_i when weighted)
    hard = hard_set(difficulty, rho, valid)  # (k,)
    select = torch.zeros_like(valid).index_fill_(0, hard, True)  # (B,) bool
    mse = [pooled_mse(sse, n, valid) for sse, n in sse_n]
    mse_hard = [pooled_mse(sse, n, select) for sse, n in sse_n]
    l_act = sum(a * m for a, m in zip(alphas, mse))
    l_hard = sum(a * m for a, m in zip(alphas, mse_hard))
    total = l_act + lambda_hard * l_hard
    n_valid = int(valid.sum())
    metrics = {
        "L_act": l_act.detach(),
        "L_act_hard": l_hard.detach(),
        "L_act_total": total.detach(),
        **{f"mse_{s}": pooled_mse(sse, n, valid).detach() for s, (sse, n) in zip(SCALES, plain)},
        "hard_ratio": torch.tensor(hard.numel() / max(n_valid, 1)),
        "hard_indices": hard,
        "difficulty": difficulty.detach(),
    }
    return total, metrics


# ----------------------------------------------------------------------------------------------------------- TSAC
def _masked_mean(x: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of (B,) values over mask (B,); 0 (with a graph) when nothing is real."""
    if mask is None:
        return x.mean()
    mask = mask.bool()
    return torch.where(mask, x, torch.zeros_like(x)).sum() / mask.sum().clamp_min(1)


def l_time(z_pool: Tensor, m_prev: Tensor, mask: Tensor | None = None, eps: float = 1e-6) -> Tensor:
    """L_time (paper 4.2.2): 1 - cos(z_pool, m_prev), (B, D), (B, D) -> ().

    Our choice of measure (the paper names L_time without a formula): a cosine keeps the pooled semantic factors
    pointing where the memory already points without pulling their norm to the memory's. A sample whose m_prev is
    (near) zero - the first step of an episode, before anything was remembered - has no direction to agree with and
    is left out, rather than adding a constant 1."""
    has_memory = m_prev.detach().norm(dim=-1) > eps  # (B,)
    mask = has_memory if mask is None else has_memory & mask.bool()
    return _masked_mean(1.0 - F.cosine_similarity(z_pool, m_prev, dim=-1), mask)


def info_nce(z: Tensor, context: Tensor, temperature: float = 0.1, mask: Tensor | None = None) -> Tensor:
    """L_mi (paper 4.2.2): a symmetric InfoNCE bound, (B, D), (B, D) -> ().

    Sample i's z and context are the positive pair, the other samples' the negatives; I(z; context) >= log B - L.
    Symmetric (z -> context and context -> z, averaged) as in CLIP. Masked samples are dropped from both sides, so
    they are neither positives nor negatives. With fewer than 2 samples there are no negatives: returns 0."""
    if z.shape != context.shape:
        raise ValueError(f"InfoNCE needs equal shapes, got {tuple(z.shape)} and {tuple(context.shape)}")
    if mask is not None:
        z, context = z[mask.bool()], context[mask.bool()]  # (B', D)
    if z.shape[0] < 2:
        return z.sum() * 0.0
    logits = F.normalize(z.float(), dim=-1) @ F.normalize(context.float(), dim=-1).T / temperature  # (B', B')
    labels = torch.arange(z.shape[0], device=z.device)  # (B',)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def l_sem(
    z_pool: Tensor,
    m_prev: Tensor,
    context: Tensor,
    beta_mi: float = 0.1,
    temperature: float = 0.1,
    mask: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """L_sem = L_time(z_pool, m_prev) + beta_mi * L_mi(z_pool, text+vision pooled) (paper 4.2.2); (B, D) each."""
    lt = l_time(z_pool, m_prev, mask)
    lmi = info_nce(z_pool, context, temperature, mask)
    return lt + beta_mi * lmi, {"L_time": lt.detach(), "L_mi": lmi.detach()}


def l_intent(z_intent: Tensor, m_t: Tensor, mask: Tensor | None = None) -> Tensor:
    """L_intent = -cos(z_intent, m_t), batch mean, (B, D) -> () (paper 4.2.2; Table 1: falls to about -0.7)."""
    return _masked_mean(-F.cosine_similarity(z_intent, m_t, dim=-1), mask)


def l_tau(
    tau: Tensor,
    c_act: Tensor,
    tau_0: float = 1.0,
    lambda_collapse: float = 0.1,
    eta_var: float = 0.1,
    mask: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """L_tau = 0.01 ||tau||^2 + lambda_collapse max(0, tau_0 - ||tau||)^2 + eta_var (1 - cos(tau, c_act)) (4.2.2).

    tau (B, D_tau) and c_act (B, D_tau): the cosine needs one width; the model supplies c_act projected to tau's
    width (see trainer.tsac_inputs). Norms are per sample; the batch mean is taken last."""
    if tau.shape != c_act.shape:
        raise ValueError(f"tau {tuple(tau.shape)} and c_act {tuple(c_act.shape)} must share a width for the cosine")
    norm = tau.float().norm(dim=-1)  # (B,)
    size = 0.01 * norm**2  # (B,)
    collapse = lambda_collapse * torch.clamp(tau_0 - norm, min=0.0) ** 2  # (B,)
    direction = eta_var * (1.0 - F.cosine_similarity(tau.float(), c_act.float(), dim=-1))  # (B,)
    total = _masked_mean(size + collapse + direction, mask)
    return total, {"tau_rms": tau_rms(tau, mask)}


def tau_rms(tau: Tensor, mask: Tensor | None = None) -> Tensor:
    """Table 1's tau_rms: sqrt(mean_i ||tau_i||^2), (B, D) -> ().

    The per-sample norm (not the per-element RMS) is what fits Table 1: at step 130, 0.01 * 5.653^2 = 0.32 against
    L_tau = 0.337, where the size term dominates."""
    return _masked_mean(tau.detach().float().pow(2).sum(-1), mask).sqrt()
