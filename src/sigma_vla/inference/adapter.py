"""The risk-gated inference adapter (paper 4.3): at inference, never changing weights, decide per sample how much
of Sigma's telepathy residual to apply on top of the base policy's actions.

    delta = predicted - base                       (per time scale: vector, chunk, trajectory)
    risk  = w_ratio * relu(ratio / ratio_max - 1)  (ratio = ||delta|| / ||base||, the largest over the scales)
          + w_tau   * (relu(|tau| / tau_max - 1) + relu(1 - |tau| / tau_min))
          + w_align * (1 - cos(tau, c_act)) / 2
    scale = min_scale + (max_scale - min_scale) * exp(-risk)      (the exponential map into [min, max])
    out   = base + scale * delta

A moderate residual with tau in range and aligned with c_act has risk ~0 and is scaled up to max_scale; an
abnormal residual or tau out of range drives the scale to min_scale (about 0: back to the base). A sample with a
NaN or Inf anywhere gets exactly the base action and a flag: a controller must never receive a non-finite command.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sigma_vla.errors import ConfigError
from sigma_vla.processing.action_triple import ActionTriple


@dataclass(frozen=True)
class AdapterConfig:
    min_scale: float = 0.0  # paper: "the gate converges to near zero" for risky residuals
    max_scale: float = 1.25  # paper: "strengthens the telepathy residual" when safe; our value
    ratio_max: float = 0.5  # residual norm up to half the base's norm counts as moderate (our choice)
    tau_min: float = 0.0  # ||tau|| range considered in distribution; 0 disables the lower bound
    tau_max: float = 100.0  # set from training statistics (SigmaPolicy calibrates it on the train split)
    w_ratio: float = 4.0
    w_tau: float = 4.0
    w_align: float = 1.0
    eps: float = 1e-6

    def __post_init__(self):
        if not 0.0 <= self.min_scale <= self.max_scale:
            raise ConfigError(f"need 0 <= min_scale <= max_scale, got {self.min_scale}, {self.max_scale}",
                              field="adapter.max_scale")
        if self.ratio_max <= 0 or self.tau_max <= 0 or self.tau_min < 0 or self.tau_min >= self.tau_max:
            raise ConfigError(f"bad ranges: ratio_max={self.ratio_max}, tau=[{self.tau_min}, {self.tau_max}]",
                              field="adapter.tau_max")
        if min(self.w_ratio, self.w_tau, self.w_align) < 0:
            raise ConfigError("risk weights must be >= 0", field="adapter.w_ratio")


@dataclass(kw_only=True)
class AdapterOutput:
    actions: ActionTriple  # (B, Da), (B, C, Da), (B, T, Da): base + scale * delta
    scale: torch.Tensor  # (B,)
    risk: torch.Tensor  # (B,)
    terms: dict[str, torch.Tensor]  # each (B,): ratio, tau_norm, cos_tau_cact, risk_ratio, risk_tau, risk_align
    nonfinite: torch.Tensor  # (B,) bool: the sample fell back to the base action


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)  # (B, ...) -> (B, F)


def _finite_rows(*xs: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.isfinite(_flat(x)).all(dim=1) for x in xs]).all(dim=0)  # (B,)


def risk_terms(preds: ActionTriple, bases: ActionTriple, tau: torch.Tensor, c_act: torch.Tensor,
               cfg: AdapterConfig) -> dict[str, torch.Tensor]:
    """Every term of the risk score, per sample, from Sigma's final actions and the base's."""
    ratios = [_flat(p - b).norm(dim=1) / (_flat(b).norm(dim=1) + cfg.eps) for p, b in zip(preds, bases)]
    ratio = torch.stack(ratios).amax(dim=0)  # (B,) the most abnormal time scale decides
    tau_norm = tau.norm(dim=1)  # (B,)
    cos = F.cosine_similarity(tau, c_act, dim=1, eps=cfg.eps)  # (B,)
    risk_tau = F.relu(tau_norm / cfg.tau_max - 1)
    if cfg.tau_min > 0:
        risk_tau = risk_tau + F.relu(1 - tau_norm / cfg.tau_min)
    return {
        "ratio": ratio,
        "tau_norm": tau_norm,
        "cos_tau_cact": cos,
        "risk_ratio": cfg.w_ratio * F.relu(ratio / cfg.ratio_max - 1),
        "risk_tau": cfg.w_tau * risk_tau,
        "risk_align": cfg.w_align * (1 - cos) / 2,
    }


@torch.no_grad()
def adapt(pred: ActionTriple, base: ActionTriple, tau: torch.Tensor, c_act: torch.Tensor,
          cfg: AdapterConfig = AdapterConfig()) -> AdapterOutput:
    """Gate Sigma's residual over the base (paper 4.3): pred = Sigma's final actions (base + residual), base = the
    base's; tau and c_act: (B, Dt), the same width."""
    if tau.shape != c_act.shape:
        raise ValueError(f"tau {tuple(tau.shape)} and c_act {tuple(c_act.shape)} must have the same shape")
    ok = _finite_rows(*pred, *base, tau, c_act)  # (B,)
    clean = [torch.where(_bcast(ok, x), x, torch.zeros_like(x)) for x in (*pred, *base, tau, c_act)]
    pred_c, base_c = ActionTriple(*clean[:3]), ActionTriple(*clean[3:6])
    terms = risk_terms(pred_c, base_c, clean[6], clean[7], cfg)
    risk = terms["risk_ratio"] + terms["risk_tau"] + terms["risk_align"]  # (B,)
    scale = cfg.min_scale + (cfg.max_scale - cfg.min_scale) * torch.exp(-risk)  # (B,)
    scale = torch.where(ok, scale, torch.zeros_like(scale))
    outs = []
    for p, b_clean, b in zip(pred_c, base_c, base):
        s = scale.view(-1, *([1] * (b.dim() - 1)))  # (B, 1, ...)
        outs.append(torch.where(_bcast(ok, b), b_clean + s * (p - b_clean), b))  # non-finite: exactly the base
    return AdapterOutput(actions=ActionTriple(*outs), scale=scale,
                         risk=torch.where(ok, risk, torch.full_like(risk, float("inf"))), terms=terms, nonfinite=~ok)

def _bcast(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, *([1] * (like.dim() - 1))).expand_as(like)
