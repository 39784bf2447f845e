"""Language intent workspace heads (paper 3.2), everything after the MLLM backbone.

hidden_sequence_base (B, N, D) -> semantic factor head (K learnable queries) -> Z_sem, z_pool = mean_k Z_sem;
semantic workspace memory: u = GELU(W_u z_pool + b_u), lambda = sigmoid(W_l [m_{t-1}; z_pool] + b_l),
m_t = lambda * m_{t-1} + (1 - lambda) * u;
summary heads c_env, c_beh, c_text; intent head z_intent = f(m_t, c_env, c_beh);
telepathy projector tau = W_2 GELU(W_1 [m_t; z_intent; c_env; c_beh; z_pool; c_text] + b_1) + b_2;
language modulator: double-gated bias modulation of hidden_sequence_base by tau -> high_level_rep.

Shape legend (docs/architecture.md): B batch, N tokens, K semantic factors, D d_model, Dt tau dim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sigma_vla.models.config import SigmaConfig
from sigma_vla.models.layers import Attention, MLP


class SemanticFactorHead(nn.Module):
    """K learnable queries read K semantic factors from the hidden sequence: Z_sem = LN(Q + Attn(Q, H, H))."""

    def __init__(self, dim: int, num_factors: int, heads: int, inner: int):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(num_factors, dim) * 0.02)  # (K, D)
        self.attn = Attention(dim, heads, inner)
        self.ln = nn.LayerNorm(dim)

    def forward(self, hidden: Tensor, mask: Tensor) -> Tensor:
        q = self.queries.expand(hidden.shape[0], -1, -1)  # (B, K, D)
        return self.ln(q + self.attn(q, hidden, key_mask=mask))  # (B, K, D)


class SemanticMemory(nn.Module):
    """The gated recurrence of the semantic workspace memory, exactly paper 3.2:
    u = GELU(W_u z_pool + b_u); lambda = sigmoid(W_l [m_{t-1}; z_pool] + b_l); m_t = lambda m_{t-1} + (1 - lambda) u.
    lambda near 1 keeps the past (semantic continuity across steps), near 0 takes the new reading."""

    def __init__(self, dim: int):
        super().__init__()
        self.w_u = nn.Linear(dim, dim)
        self.w_l = nn.Linear(2 * dim, dim)

    def forward(self, z_pool: Tensor, m_prev: Tensor) -> Tensor:
        u = F.gelu(self.w_u(z_pool))  # (B, D)
        lam = torch.sigmoid(self.w_l(torch.cat([m_prev, z_pool], dim=-1)))  # (B, 2D) -> (B, D)
        return lam * m_prev + (1.0 - lam) * u  # (B, D)


class SummaryHead(nn.Module):
    """Attention pooling with a learned score vector over one region of the sequence, then an MLP. c_env reads the
    vision positions, c_beh the state positions, c_text the text positions (our reading of 'separate environmental
    clues, behavioural trends and linguistic context' with 'independent parameters', paper 3.2)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.score = nn.Linear(dim, 1, bias=False)  # a bias would cancel in the softmax
        self.mlp = MLP(dim, hidden, dim)

    def forward(self, hidden: Tensor, region: Tensor) -> Tensor:
        logits = self.score(hidden).squeeze(-1) / math.sqrt(hidden.shape[-1])  # (B, N)
        logits = logits.masked_fill(~region, float("-inf"))
        w = torch.softmax(logits, dim=-1).nan_to_num(0.0)  # (B, N); an empty region pools to 0
        pooled = torch.einsum("bn,bnd->bd", w, hidden)  # (B, D)
        return self.mlp(pooled)  # (B, D)


class LanguageModulator(nn.Module):
    """Double-gated bias modulation (paper 3.2 'language modulator'):
    high_level_rep = H + exp(theta_lm) * sigmoid(<LN(H) W_h, tau W_t> / sqrt(r)) * (tau W_b).
    Gate 1 is a learnable log-scale valve (like the vision modulator's mod_log_scale); gate 2 is per token: how much
    the token agrees with tau. The bias tau W_b has no constant term, so tau = 0 returns H exactly."""

    def __init__(self, dim: int, tau_dim: int, gate_dim: int, log_scale: float):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(float(log_scale)))
        self.ln = nn.LayerNorm(dim)
        self.w_h = nn.Linear(dim, gate_dim)
        self.w_t = nn.Linear(tau_dim, gate_dim, bias=False)
        self.w_b = nn.Linear(tau_dim, dim, bias=False)
        self.gate_dim = gate_dim

    def forward(self, hidden: Tensor, tau: Tensor) -> Tensor:
        agree = torch.einsum("bnr,br->bn", self.w_h(self.ln(hidden)), self.w_t(tau))  # (B, N)
        gate = torch.sigmoid(agree / math.sqrt(self.gate_dim)).unsqueeze(-1)  # (B, N, 1)
        bias = self.w_b(tau).unsqueeze(1)  # (B, 1, D)
        return hidden + torch.exp(self.log_scale) * gate * bias  # (B, N, D)


@dataclass
class Semantics:
    """What the semantic heads read from hidden_sequence_base at one step."""

    semantic_factors: Tensor  # (B, K, D)
    z_pool: Tensor  # (B, D)
    prev_memory: Tensor  # (B, D) m_{t-1}
    semantic_memory: Tensor  # (B, D) m_t
    env_context: Tensor  # (B, D) c_env
    behavior_summary: Tensor  # (B, D) c_beh
    text_summary: Tensor  # (B, D) c_text
    intent: Tensor  # (B, D) z_intent
    telepathy_factors: Tensor  # (B, Dt) tau


class LanguageWorkspace(nn.Module):
    """All heads of paper 3.2 that sit on the backbone's output."""

    def __init__(self, cfg: SigmaConfig):
        super().__init__()
        lc, d = cfg.language, cfg.d_model
        hid = lc.summary_hidden or d
        self.factor_head = SemanticFactorHead(d, lc.num_factors, lc.heads, cfg.language_attn_dim)
        self.memory = SemanticMemory(d)
        self.env_head = SummaryHead(d, hid)
        self.behavior_head = SummaryHead(d, hid)
        self.text_head = SummaryHead(d, hid)
        self.intent_head = MLP(3 * d, hid, d)  # z_intent = f([m_t; c_env; c_beh])
        self.telepathy_projector = MLP(6 * d, lc.telepathy_hidden, lc.tau_dim)
        self.modulator = LanguageModulator(d, lc.tau_dim, lc.gate_dim, lc.modulator_log_scale_init)

    def forward(self, hidden: Tensor, regions: dict[str, Tensor], prev_memory: Tensor) -> Semantics:
        """hidden (B, N, D); regions: bool (B, N) masks 'all', 'text', 'vision', 'state'; prev_memory (B, D)."""
        z_sem = self.factor_head(hidden, regions["all"])  # (B, K, D)
        z_pool = z_sem.mean(dim=1)  # (B, D)
        m_t = self.memory(z_pool, prev_memory)  # (B, D)
        c_env = self.env_head(hidden, regions["vision"])  # (B, D)
        c_beh = self.behavior_head(hidden, regions["state"])  # (B, D)
        c_text = self.text_head(hidden, regions["text"])  # (B, D)
        z_intent = self.intent_head(torch.cat([m_t, c_env, c_beh], dim=-1))  # (B, 3D) -> (B, D)
        x = torch.cat([m_t, z_intent, c_env, c_beh, z_pool, c_text], dim=-1)  # (B, 6D)
        tau = self.telepathy_projector(x)  # (B, Dt)
        return Semantics(z_sem, z_pool, prev_memory, m_t, c_env, c_beh, c_text, z_intent, tau)
