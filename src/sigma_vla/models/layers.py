"""Small building blocks shared by the three workspaces: attention with a narrow inner width, MLPs, pre-LN
transformer blocks, masked pooling and sinusoidal embeddings.

Shape legend (docs/architecture.md): B batch, N tokens, M context tokens, D width, H heads, E head width.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


class MLP(nn.Module):
    """Linear -> GELU -> Linear, the paper's 'MLP' and 'FFN' everywhere."""

    def __init__(self, dim_in: int, hidden: int, dim_out: int, bias_out: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(dim_in, hidden)
        self.fc2 = nn.Linear(hidden, dim_out, bias=bias_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head (cross-)attention, softmax(Q W_Q (F W_K)^T / sqrt(e)) F W_V (paper 3.1), projected back to `dim`.

    `inner` may be narrower than `dim`: at d_model 2048 the heads attend in 512 dims so they cost a few percent of
    the backbone. Keys and values can be projected once (`project_kv`) and reused, as the trajectory DiT does across
    its sampling steps.
    """

    def __init__(self, dim: int, heads: int, inner: int | None = None, context_dim: int | None = None):
        super().__init__()
        inner = inner or dim
        if inner % heads:
            raise ValueError(f"attention width {inner} is not divisible by heads {heads}")
        self.heads = heads
        self.q = nn.Linear(dim, inner)
        self.kv = nn.Linear(context_dim or dim, 2 * inner)
        self.out = nn.Linear(inner, dim)

    def project_kv(self, context: Tensor) -> tuple[Tensor, Tensor]:
        k, v = self.kv(context).chunk(2, dim=-1)  # (B, M, inner) each
        k = rearrange(k, "b m (h e) -> b h m e", h=self.heads)  # (B, H, M, E)
        v = rearrange(v, "b m (h e) -> b h m e", h=self.heads)  # (B, H, M, E)
        return k, v

    def forward(self, x: Tensor, context: Tensor | None = None, key_mask: Tensor | None = None,
                kv: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """x (B, N, D); context (B, M, Dc) or None for self-attention; key_mask (B, M) bool, True = attend."""
        k, v = kv if kv is not None else self.project_kv(x if context is None else context)
        q = rearrange(self.q(x), "b n (h e) -> b h n e", h=self.heads)  # (B, H, N, E)
        mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, M)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, N, E)
        return self.out(rearrange(o, "b h n e -> b n (h e)"))  # (B, N, D)


class TransformerBlock(nn.Module):
    """Pre-LN self-attention + FFN with residuals: the modulated vision block and the query refiner Ref(.)."""

    def __init__(self, dim: int, heads: int, mlp_hidden: int, inner: int | None = None):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, inner)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_hidden, dim)

    def forward(self, x: Tensor, key_mask: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.ln1(x), key_mask=key_mask)  # (B, N, D)
        return x + self.mlp(self.ln2(x))  # (B, N, D)


def masked_mean(x: Tensor, mask: Tensor | None) -> Tensor:
    """Mean over tokens of x (B, N, D) counting only mask (B, N) True entries -> (B, D); padded tokens never count."""
    if mask is None:
        return x.mean(dim=1)  # (B, D)
    w = mask.to(x.dtype).unsqueeze(-1)  # (B, N, 1)
    return (x * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)  # (B, D)


def sincos_1d(positions: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of positions (N,) -> (N, dim) (Transformer / DiT timestep embedding)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=positions.device) / half)
    angles = positions.float()[:, None] * freqs[None, :]  # (N, dim/2)
    emb = torch.cat([angles.sin(), angles.cos()], dim=-1)  # (N, 2 * (dim/2))
    return F.pad(emb, (0, dim - emb.shape[-1]))  # (N, dim)


@lru_cache(maxsize=16)
def sincos_2d(height: int, width: int, dim: int, device: torch.device | None = None) -> Tensor:
    """Fixed 2-D sinusoidal position embedding of a (height, width) patch grid -> (height * width, dim); computed for
    any grid so PatchEmbed accepts any image side that the patch size divides. Cached: it is a constant per grid."""
    with torch.inference_mode(False), torch.no_grad():  # a plain constant, usable in and out of inference mode
        ys, xs = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
        half = dim // 2
        return torch.cat([sincos_1d(ys.flatten(), half), sincos_1d(xs.flatten(), dim - half)], dim=-1)  # (h*w, dim)
