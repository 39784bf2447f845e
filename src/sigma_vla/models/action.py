"""Action trajectory workspace (paper 3.3).

c_act = P_act(high_level_rep, tau); Q_1 = Attn(Q_0, S_proj, S_proj) + b(c_act), q = LN(Ref(Q_1));
baseline branch (tau = 0): a_vec = H_A(q_base) (action token head + action tokenizer), a_chunk = H_B(q_base)
(pooling + linear), a_traj = D_traj(q_base, r_high, c_act_base) (path C, trajectory.py);
[da_vec, da_chunk, da_traj] = g([tau_high; tau]); a^tau = a^base + da; u_t = phi(a_vec^tau, a_chunk^tau, a_traj^tau).

Two choices where the paper leaves room, both so that "telepathy off" is *exactly* the baseline branch:
- The baseline branch reads r_high at tau = 0. The language modulator is the identity at tau = 0, so that is
  hidden_sequence_base: the baseline is what Sigma does with no telepathy at all (paper 3.3: "first calculates the
  safe baseline behavior when tau is zero").
- The residual is what tau changes in g: da = g([tau_high; tau]) - g([tau_high; 0]), which is 0 when tau = 0.
  tau_high pools the tau-conditioned streams: the action queries q_tau built from c_act(high_level_rep, tau), the
  modulated high_level_rep, and the vision tokens of the vision pass with tau (paper 4.2's second vision pass).

Shape legend (docs/architecture.md): B batch, T horizon, C chunk, Da action dim, N tokens, Nq action queries, Ns state
tokens, D d_model, W action width, Dt tau dim.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor, nn

from sigma_vla.models.config import SigmaConfig
from sigma_vla.models.layers import Attention, MLP, TransformerBlock, masked_mean
from sigma_vla.models.trajectory import TrajectoryCondition, TrajectoryDiT


class ActionConditionProjector(nn.Module):
    """P_act: MLP over [pooled high_level_rep; tau] -> c_act (B, Dt). c_act lives in tau's space so L_tau can ask
    for cos(tau, c_act) (paper 4.2.2)."""

    def __init__(self, d_model: int, tau_dim: int, hidden: int):
        super().__init__()
        self.mlp = MLP(d_model + tau_dim, hidden, tau_dim)

    def forward(self, r_high: Tensor, mask: Tensor, tau: Tensor) -> Tensor:
        return self.mlp(torch.cat([masked_mean(r_high, mask), tau], dim=-1))  # (B, D + Dt) -> (B, Dt)


class ActionQueryGenerator(nn.Module):
    """Q(c_act, S_t): seeds Q_0 cross-attend to S_proj = S_t W_s, plus the bias b(c_act), refined by a transformer
    encoder, then LayerNorm. We keep Q_0 as a residual (Q_1 = Q_0 + Attn + b): without it the Nq queries would all be
    mixtures of the same Ns state values."""

    def __init__(self, d_model: int, width: int, num_queries: int, heads: int, layers: int, mlp_hidden: int,
                 tau_dim: int):
        super().__init__()
        self.seeds = nn.Parameter(torch.randn(num_queries, width) * 0.02)  # (Nq, W)
        self.state_proj = nn.Linear(d_model, width)  # W_s
        self.attn = Attention(width, heads)
        self.bias = nn.Linear(tau_dim, width)  # b(c_act)
        self.refine = nn.ModuleList(TransformerBlock(width, heads, mlp_hidden) for _ in range(layers))
        self.ln = nn.LayerNorm(width)

    def forward(self, c_act: Tensor, state_tokens: Tensor) -> Tensor:
        s_proj = self.state_proj(state_tokens)  # (B, Ns, W)
        q0 = self.seeds.expand(state_tokens.shape[0], -1, -1)  # (B, Nq, W)
        q = q0 + self.attn(q0, s_proj) + self.bias(c_act).unsqueeze(1)  # (B, Nq, W)
        for blk in self.refine:
            q = blk(q)  # (B, Nq, W)
        return self.ln(q)  # (B, Nq, W)


class ActionTokenizer(nn.Module):
    """Path A's action tokenizer: each action dimension is a token over `bins` uniform bins of the normalised range
    [-r, r]. `decode` is the expectation over bin centres (differentiable, so MSE trains it); `encode` gives the
    nearest bin (for a cross-entropy on action tokens, if a trainer wants one)."""

    def __init__(self, bins: int, bin_range: float):
        super().__init__()
        self.register_buffer("centers", torch.linspace(-bin_range, bin_range, bins), persistent=False)  # (bins,)

    def decode(self, logits: Tensor) -> Tensor:
        return (torch.softmax(logits, dim=-1) * self.centers).sum(dim=-1)  # (B, Da, bins) -> (B, Da)

    def encode(self, actions: Tensor) -> Tensor:
        return (actions.unsqueeze(-1) - self.centers).abs().argmin(dim=-1)  # (B, Da) -> (B, Da) int64


class TelepathyResidualHead(nn.Module):
    """g([tau_high; tau]) -> (da_vec, da_chunk, da_traj), taken as g(., tau) - g(., 0) so tau = 0 gives no residual."""

    def __init__(self, width: int, tau_dim: int, hidden: int, action_dim: int, chunk: int, horizon: int):
        super().__init__()
        # No output bias: it would cancel in g(., tau) - g(., 0).
        self.g = MLP(width + tau_dim, hidden, action_dim * (1 + chunk + horizon), bias_out=False)
        nn.init.zeros_(self.g.fc2.weight)  # Sigma starts as the base: see ActionWorkspace
        self.splits = (action_dim, chunk * action_dim, horizon * action_dim)
        self.chunk, self.horizon = chunk, horizon

    def forward(self, tau_high: Tensor, tau: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # Two calls of the same shape, not one batched call: with tau = 0 the inputs are then identical and so are
        # the outputs, bit for bit, and the residual is exactly 0.
        out_tau = self.g(torch.cat([tau_high, tau], dim=-1))  # (B, W + Dt) -> (B, Da (1 + C + T))
        out_zero = self.g(torch.cat([tau_high, torch.zeros_like(tau)], dim=-1))  # (B, Da (1 + C + T))
        vec, chunk, traj = (out_tau - out_zero).split(self.splits, dim=-1)
        chunk = rearrange(chunk, "b (c a) -> b c a", c=self.chunk)  # (B, C, Da)
        traj = rearrange(traj, "b (t a) -> b t a", t=self.horizon)  # (B, T, Da)
        return vec, chunk, traj


class ActionFusion(nn.Module):
    """phi: softmax-weighted blend of the three time scales at the current step -> u_t (B, Da), handed to the
    robot's low-level controller C_low (outside the model). Weights start equal."""

    # u_t goes to the controller and into no training loss: the trainer leaves these weights out by design
    # (training/trainer.py, expected_unreached), so it says nothing about them
    loss_free = True

    def __init__(self):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(3))

    def forward(self, vec: Tensor, chunk: Tensor, traj: Tensor) -> Tensor:
        w = torch.softmax(self.logits, dim=0)  # (3,)
        return w[0] * vec + w[1] * chunk[:, 0] + w[2] * traj[:, 0]  # (B, Da)


@dataclass(kw_only=True)
class ActionResult:
    """What the action workspace returns; keyword-only, so two chunk-shaped tensors cannot swap by position."""

    baseline_vector: Tensor  # (B, Da)
    baseline_chunk: Tensor  # (B, C, Da)
    baseline_trajectory: Tensor  # (B, T, Da)
    residual_vector: Tensor  # (B, Da)
    residual_chunk: Tensor  # (B, C, Da)
    residual_trajectory: Tensor  # (B, T, Da)
    action_vector: Tensor  # (B, Da)
    action_chunk: Tensor  # (B, C, Da)
    action_trajectory: Tensor  # (B, T, Da)
    fused_action: Tensor  # (B, Da) u_t
    action_conditions: Tensor  # (B, Dt) c_act(high_level_rep, tau)
    baseline_conditions: Tensor  # (B, Dt) c_act at tau = 0
    action_query_tokens: Tensor  # (B, Nq, W) q_tau
    vector_logits: Tensor  # (B, Da, bins) path A action-token logits of the baseline branch
    trajectory_condition: TrajectoryCondition | None  # None when path C was skipped


class ActionWorkspace(nn.Module):
    def __init__(self, cfg: SigmaConfig):
        super().__init__()
        ac, d, dt = cfg.action, cfg.d_model, cfg.language.tau_dim
        w, da = ac.width, cfg.action_dim
        mlp_hidden = max(1, int(ac.mlp_ratio * w))
        self.cond_projector = ActionConditionProjector(d, dt, ac.cond_hidden)
        self.query_generator = ActionQueryGenerator(d, w, ac.num_queries, ac.heads, ac.refine_layers, mlp_hidden, dt)
        self.token_head = nn.Linear(w, da * ac.vector_bins)  # H_A: queries -> action tokens
        self.tokenizer = ActionTokenizer(ac.vector_bins, ac.bin_range)
        self.chunk_head = nn.Linear(w, cfg.chunk * da)  # H_B: pooling + linear
        self.trajectory = TrajectoryDiT(d, w, ac.heads, ac.dit_layers, mlp_hidden, cfg.horizon, da, dt)  # D_traj
        self.tau_high = nn.Linear(w + 2 * d, w)  # pools of [q_tau; high_level_rep; vision tokens with tau]
        self.residual_head = TelepathyResidualHead(w, dt, ac.residual_hidden, da, cfg.chunk, cfg.horizon)
        self.fusion = ActionFusion()
        # Every action output starts at exactly 0 (path C's DiT already zero-inits its output layer): under TRAF the
        # executed action is base + output, so an untrained Sigma is the base itself rather than the base plus
        # random-head noise (std about 0.6 in normalised units) that the first hundreds of steps must first unlearn.
        # Measured in closed loop: docs/closed_loop.md.
        for head in (self.token_head, self.chunk_head):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        self.sample_steps, self.bins, self.chunk = ac.sample_steps, ac.vector_bins, cfg.chunk

    def forward(self, hidden: Tensor, high_level_rep: Tensor, mask: Tensor, state_tokens: Tensor,
                vision_tokens: Tensor, tau: Tensor, noise: Tensor | None = None,
                trajectory: bool = True) -> ActionResult:
        """hidden = hidden_sequence_base (B, N, D), high_level_rep (B, N, D), mask (B, N), state_tokens (B, Ns, D),
        vision_tokens (B, N_v, D) from the vision pass with tau, tau (B, Dt); noise (B, T, Da) for path C or None.
        trajectory=False skips path C's sampler (its baseline trajectory is zeros, trajectory_condition None): a
        caller that executes only the chunk needs nothing from it, and the other outputs are unchanged."""
        # Both branches share P_act and Q; run them as one (2B) batch: rows [:B] are the baseline branch, tau = 0
        # (r_high at tau = 0 is hidden_sequence_base), rows [B:] the telepathy branch (high_level_rep, tau).
        b = tau.shape[0]
        r_both = torch.cat([hidden, high_level_rep], dim=0)  # (2B, N, D)
        tau_both = torch.cat([torch.zeros_like(tau), tau], dim=0)  # (2B, Dt)
        c_both = self.cond_projector(r_both, mask.repeat(2, 1), tau_both)  # (2B, Dt)
        q_both = self.query_generator(c_both, state_tokens.repeat(2, 1, 1))  # (2B, Nq, W)
        c_base, c_act, q_base, q_tau = c_both[:b], c_both[b:], q_both[:b], q_both[b:]
        pooled = q_base.mean(dim=1)  # (B, W)
        logits = rearrange(self.token_head(pooled), "b (a k) -> b a k", k=self.bins)  # (B, Da, bins)
        vec = self.tokenizer.decode(logits)  # (B, Da) path A
        chunk = rearrange(self.chunk_head(pooled), "b (c a) -> b c a", c=self.chunk)  # (B, C, Da) path B
        if trajectory:
            traj_cond = self.trajectory.condition(q_base, hidden, mask, c_base)
            traj = self.trajectory.sample(traj_cond, self.sample_steps, noise)  # (B, T, Da) path C
        else:
            traj_cond, traj = None, chunk.new_zeros(b, self.trajectory.horizon, self.trajectory.action_dim)
        # Telepathy residuals from the tau-conditioned streams.
        streams = torch.cat([q_tau.mean(1), masked_mean(high_level_rep, mask), vision_tokens.mean(1)], -1)  # (B,W+2D)
        d_vec, d_chunk, d_traj = self.residual_head(self.tau_high(streams), tau)  # (B, Da), (B, C, Da), (B, T, Da)
        a_vec, a_chunk, a_traj = vec + d_vec, chunk + d_chunk, traj + d_traj
        return ActionResult(
            baseline_vector=vec, baseline_chunk=chunk, baseline_trajectory=traj,
            residual_vector=d_vec, residual_chunk=d_chunk, residual_trajectory=d_traj,
            action_vector=a_vec, action_chunk=a_chunk, action_trajectory=a_traj,
            fused_action=self.fusion(a_vec, a_chunk, a_traj), action_conditions=c_act, baseline_conditions=c_base,
            action_query_tokens=q_tau, vector_logits=logits, trajectory_condition=traj_cond)
