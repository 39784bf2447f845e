"""Path C of the action trajectory workspace (paper 3.3): a small trajectory DiT trained as a flow-matching policy.

D_traj(q, r_high, c_act) denoises a whole-horizon trajectory. Tokens are the T noisy actions; the condition vector
(adaLN-zero, as in DiT) is the flow time plus c_act plus the mean action query; every block cross-attends to the
context [action query tokens; high_level_rep]. Keys and values of the context are projected once per forward and
reused by every sampling step.

Flow matching (rectified flow): x_s = (1 - s) eps + s a, target velocity a - eps, s ~ U(0, 1). Sampling integrates
dx/ds = v(x, s) with Euler from s = 0 to 1. `sample` starts from the prior mean eps = 0 unless noise is given, so
evaluation is deterministic. How the output enters training: SigmaModel's forward returns this deterministic
`sample_steps`-step sample (differentiable through every step) as the baseline trajectory, which TRAF's MSE sees
like paths A and B; `flow_loss` is the generative objective that trains D_traj to denoise (a diffusion / flow head is
trained by velocity regression, not only by the MSE of one sample); the trainer adds both.

Shape legend (docs/architecture.md): B batch, T horizon, Da action dim, M context tokens, W action width, D d_model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sigma_vla.models.layers import Attention, MLP, sincos_1d


@dataclass
class TrajectoryCondition:
    """Everything D_traj conditions on, computed once per forward (also what `flow_loss` needs)."""

    cond: Tensor  # (B, W) c_act projection + mean action query (adaLN input; the time embedding is added per step)
    context_kv: list[tuple[Tensor, Tensor]]  # per block, keys and values of [queries; high_level_rep]
    context_mask: Tensor  # (B, M) bool


Modulation = tuple[Tensor, ...]  # adaLN (shift, 1 + scale, gate, ...) tensors, each (..., B, 1, W)


class DiTBlock(nn.Module):
    """adaLN-zero self-attention and FFN, plus cross-attention to the context."""

    def __init__(self, width: int, heads: int, mlp_hidden: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(width, elementwise_affine=False)
        self.attn = Attention(width, heads)
        self.ln_x = nn.LayerNorm(width)
        self.cross = Attention(width, heads)
        self.ln2 = nn.LayerNorm(width, elementwise_affine=False)
        self.mlp = MLP(width, mlp_hidden, width)
        self.ada = nn.Linear(width, 6 * width)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def modulation(self, c: Tensor) -> Modulation:
        """c (..., B, W) -> shift1, 1 + scale1, gate1, shift2, 1 + scale2, gate2, each (..., B, 1, W)."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(F.silu(c)).unsqueeze(-2).chunk(6, dim=-1)
        return shift1, 1 + scale1, gate1, shift2, 1 + scale2, gate2

    def forward(self, x: Tensor, mod: Modulation, kv: tuple[Tensor, Tensor], mask: Tensor) -> Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = mod  # (B, 1, W) each
        x = x + gate1 * self.attn(self.ln1(x) * scale1 + shift1)  # (B, T, W)
        x = x + self.cross(self.ln_x(x), key_mask=mask, kv=kv)  # (B, T, W)
        return x + gate2 * self.mlp(self.ln2(x) * scale2 + shift2)  # (B, T, W)


class TrajectoryDiT(nn.Module):
    """D_traj: velocity field v(x_s, s | q, r_high, c_act) over (B, T, Da) trajectories."""

    def __init__(self, d_model: int, width: int, heads: int, layers: int, mlp_hidden: int, horizon: int,
                 action_dim: int, tau_dim: int):
        super().__init__()
        self.in_proj = nn.Linear(action_dim, width)
        self.pos = nn.Parameter(torch.randn(horizon, width) * 0.02)  # (T, W)
        self.time_mlp = MLP(width, width, width)
        self.cond_proj = nn.Linear(tau_dim, width)
        self.context_proj = nn.Linear(d_model, width)
        self.blocks = nn.ModuleList(DiTBlock(width, heads, mlp_hidden) for _ in range(layers))
        self.ln_out = nn.LayerNorm(width, elementwise_affine=False)
        self.ada_out = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, action_dim)
        for lin in (self.ada_out, self.out):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
        self.horizon, self.action_dim, self.width = horizon, action_dim, width

    def condition(self, queries: Tensor, high_level_rep: Tensor, mask: Tensor, c_act: Tensor) -> TrajectoryCondition:
        """queries (B, Nq, W), high_level_rep (B, N, D) with mask (B, N), c_act (B, Dt)."""
        context = torch.cat([queries, self.context_proj(high_level_rep)], dim=1)  # (B, Nq + N, W)
        q_mask = torch.ones(queries.shape[:2], dtype=torch.bool, device=mask.device)  # (B, Nq)
        context_mask = torch.cat([q_mask, mask.bool()], dim=1)  # (B, M)
        kv = [blk.cross.project_kv(context) for blk in self.blocks]
        cond = self.cond_proj(c_act) + queries.mean(dim=1)  # (B, W)
        return TrajectoryCondition(cond, kv, context_mask)

    def modulations(self, cond: TrajectoryCondition, s: Tensor) -> tuple[list[Modulation], Modulation]:
        """adaLN inputs for flow times s (..., B): c = cond + time embedding (DiT's sinusoidal embedding + MLP), then
        every block's and the output layer's modulation, (..., B, 1, W) each. The sampler computes them for all
        steps in one call, since the times are known in advance."""
        t_emb = self.time_mlp(sincos_1d(s.reshape(-1) * 1000.0, self.width).to(self.pos.dtype))  # (n, W)
        c = cond.cond + t_emb.view(*s.shape, self.width)  # (..., B, W)
        shift, scale = self.ada_out(F.silu(c)).unsqueeze(-2).chunk(2, dim=-1)  # (..., B, 1, W) each
        return [blk.modulation(c) for blk in self.blocks], (shift, 1 + scale)

    def velocity(self, x: Tensor, cond: TrajectoryCondition, mods: list[Modulation], out_mod: Modulation) -> Tensor:
        """x (B, T, Da) under one step's modulations -> v (B, T, Da)."""
        h = self.in_proj(x) + self.pos  # (B, T, W)
        for blk, mod, kv in zip(self.blocks, mods, cond.context_kv):
            h = blk(h, mod, kv, cond.context_mask)  # (B, T, W)
        shift, scale = out_mod
        return self.out(self.ln_out(h) * scale + shift)  # (B, T, Da)

    def sample(self, cond: TrajectoryCondition, steps: int, noise: Tensor | None = None) -> Tensor:
        """Euler integration of the flow from s = 0 (noise; the prior mean 0 when not given) to s = 1 -> (B, T, Da)."""
        b = cond.cond.shape[0]
        x = noise if noise is not None else cond.cond.new_zeros(b, self.horizon, self.action_dim)  # (B, T, Da)
        dt = 1.0 / steps
        times = (torch.arange(steps, device=x.device, dtype=x.dtype) * dt)[:, None].expand(steps, b)  # (steps, B)
        mods, out_mod = self.modulations(cond, times)  # (steps, B, 1, W) each, for all steps at once
        for k in range(steps):
            step_mods = [tuple(m[k] for m in mod) for mod in mods]
            x = x + dt * self.velocity(x, cond, step_mods, tuple(m[k] for m in out_mod))  # (B, T, Da)
        return x

    def flow_loss(self, cond: TrajectoryCondition, target: Tensor, noise: Tensor | None = None,
                  time: Tensor | None = None) -> Tensor:
        """Per-sample flow-matching loss (B,): mean over (T, Da) of (v(x_s, s) - (a - eps))^2, x_s = (1-s) eps + s a.
        s ~ U(0, 1) (pi0 uses a Beta favouring noisy times; uniform is the plain rectified-flow choice)."""
        b = target.shape[0]
        eps = torch.randn_like(target) if noise is None else noise  # (B, T, Da)
        s = torch.rand(b, device=target.device, dtype=target.dtype) if time is None else time  # (B,)
        s_ = s.view(b, 1, 1)
        x_s = (1.0 - s_) * eps + s_ * target  # (B, T, Da)
        mods, out_mod = self.modulations(cond, s)
        err = self.velocity(x_s, cond, mods, out_mod) - (target - eps)  # (B, T, Da)
        return err.pow(2).mean(dim=(1, 2))  # (B,)
