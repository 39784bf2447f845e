"""Cognitive vision workspace (paper 3.1).

camera frames (+ depth channel) -> PatchEmbed per camera, audio spectrogram -> AudioPatchEmbed -> vision_features
(N_f tokens) -> 2-layer MLP projector to d_model -> perceiver resampler with N_v learnable queries -> V_base.
robot_state -> MLP -> token_expander -> N_s state_tokens.
tau -> exp(tau_log_scale) tau -> MLP (GELU) -> FiLM gamma, beta -> V_film;
V_mod = V_base + exp(mod_log_scale) (V_film - V_base); modulated vision block (self-attention + FFN) -> vision_tokens.

V_base and the state tokens do not depend on tau, so SigmaModel computes them once and runs only the FiLM and the
block twice (paper 4.2: a vision pass without tau, then one with tau).

Shape legend (docs/architecture.md): B batch, V cameras, S image side, N_f feature tokens, N_v vision tokens, N_s state
tokens, D d_model, P patch features, Dt tau dim, Ds state dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from sigma_vla.models.config import SigmaConfig
from sigma_vla.models.layers import Attention, MLP, TransformerBlock, sincos_2d


class PatchEmbed(nn.Module):
    """Conv patchifier of one camera (paper 3.1 'PatchEmbed Conv'): (B, ch, S, S) -> (B, (S/p)^2, P), plus a fixed 2-D
    sinusoidal position so any image side the patch divides works."""

    def __init__(self, in_channels: int, patch: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch, stride=patch)

    def forward(self, x: Tensor) -> Tensor:
        x = self.proj(x)  # (B, P, S/p, S/p)
        h, w = x.shape[-2:]
        x = rearrange(x, "b c h w -> b (h w) c")  # (B, h*w, P)
        return x + sincos_2d(h, w, x.shape[-1], x.device).to(x.dtype)  # (B, h*w, P)


class AudioPatchEmbed(PatchEmbed):
    """Conv patchifier of a (mels, frames) log-spectrogram (paper 3.1 'AudioPatchEmbed'): (B, M, F) -> tokens."""

    def __init__(self, patch: int, dim: int):
        super().__init__(1, patch, dim)

    def forward(self, spec: Tensor) -> Tensor:
        return super().forward(spec.unsqueeze(1))  # (B, 1, M, F) -> (B, (M/p)*(F/p), P)


class PerceiverResampler(nn.Module):
    """N_v learnable queries read the variable-length features F (paper 3.1):
    A = softmax(Q W_Q (F W_K)^T / sqrt(d)), H = A (F W_V), V_base = FFN(LN(Q + H)), exactly the paper's form."""

    def __init__(self, dim: int, num_tokens: int, heads: int, inner: int, mlp_hidden: int):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(num_tokens, dim) * 0.02)  # (N_v, D)
        self.attn = Attention(dim, heads, inner)
        self.ln = nn.LayerNorm(dim)
        self.ffn = MLP(dim, mlp_hidden, dim)

    def forward(self, features: Tensor) -> Tensor:
        q = self.queries.expand(features.shape[0], -1, -1)  # (B, N_v, D)
        # State-only data (no camera, no audio) has N_f = 0: nothing to attend to, H = 0.
        h = self.attn(q, features) if features.shape[1] > 0 else torch.zeros_like(q)  # (B, N_v, D)
        return self.ffn(self.ln(q + h))  # (B, N_v, D)


class StateEncoder(nn.Module):
    """robot_state -> MLP -> token_expander -> N_s state_tokens in d_model (paper 3.1)."""

    def __init__(self, state_dim: int, hidden: int, dim: int, num_tokens: int):
        super().__init__()
        self.mlp = MLP(state_dim, hidden, hidden)
        self.token_expander = nn.Linear(hidden, num_tokens * dim)
        self.num_tokens = num_tokens

    def forward(self, state: Tensor) -> Tensor:
        h = F.gelu(self.mlp(state))  # (B, hidden)
        return rearrange(self.token_expander(h), "b (n d) -> b n d", n=self.num_tokens)  # (B, N_s, D)


class TauFiLM(nn.Module):
    """The vision modulator with its two log-scale gates, exactly the paper 3.1 equations:
    tau' = exp(theta_t) tau; h = GELU(tau' W_1 + b_1); [gamma, beta] = h W_2 + b_2;
    V_film = gamma * V_base + beta (channel-wise); V_mod = V_base + exp(theta_mod) (V_film - V_base).

    W_2 starts at zero and b_2 at (gamma = 1, beta = 0), so V_film = V_base until training moves it (the usual
    zero-init of FiLM / adaLN); theta_mod -> -inf closes the valve and returns V_base exactly.
    """

    def __init__(self, tau_dim: int, hidden: int, dim: int, tau_log_scale: float, mod_log_scale: float):
        super().__init__()
        self.tau_log_scale = nn.Parameter(torch.tensor(float(tau_log_scale)))  # theta_t
        self.mod_log_scale = nn.Parameter(torch.tensor(float(mod_log_scale)))  # theta_mod
        self.fc1 = nn.Linear(tau_dim, hidden)
        self.fc2 = nn.Linear(hidden, 2 * dim)
        nn.init.zeros_(self.fc2.weight)
        with torch.no_grad():
            self.fc2.bias.copy_(torch.cat([torch.ones(dim), torch.zeros(dim)]))

    def forward(self, v_base: Tensor, tau: Tensor) -> Tensor:
        tau_scaled = torch.exp(self.tau_log_scale) * tau  # (B, Dt)
        h = F.gelu(self.fc1(tau_scaled))  # (B, hidden)
        gamma, beta = self.fc2(h).unsqueeze(1).chunk(2, dim=-1)  # (B, 1, D) each
        v_film = gamma * v_base + beta  # (B, N_v, D)
        return v_base + torch.exp(self.mod_log_scale) * (v_film - v_base)  # (B, N_v, D)


class VisionWorkspace(nn.Module):
    """Encoders + projector + resampler + state tokens (tau-free, once per step) and FiLM + block (per tau)."""

    def __init__(self, cfg: SigmaConfig):
        super().__init__()
        vc, d = cfg.vision, cfg.d_model
        in_ch = 4 if vc.use_depth else 3
        self.cameras = nn.ModuleList(PatchEmbed(in_ch, vc.patch_size, vc.patch_dim) for _ in range(vc.num_cameras))
        self.audio = AudioPatchEmbed(vc.audio_patch, vc.patch_dim) if vc.use_audio else None
        n_sources = vc.num_cameras + int(vc.use_audio)
        self.source_embed = nn.Parameter(torch.zeros(max(n_sources, 1), vc.patch_dim))  # which camera / audio
        self.projector = MLP(vc.patch_dim, vc.projector_hidden or d, d)  # 2-layer MLP projector to d_model
        mlp_hidden = max(1, int(vc.mlp_ratio * d))
        self.resampler = PerceiverResampler(d, vc.num_tokens, vc.heads, cfg.vision_attn_dim, mlp_hidden)
        self.state_encoder = StateEncoder(cfg.state_dim, vc.state_hidden, d, vc.state_tokens)
        self.film = TauFiLM(cfg.language.tau_dim, vc.film_hidden, d, vc.tau_log_scale_init, vc.mod_log_scale_init)
        self.block = nn.ModuleList(TransformerBlock(d, vc.heads, mlp_hidden, cfg.vision_attn_dim)
                                   for _ in range(vc.block_layers))
        self.cfg = vc

    def features(self, batch: dict[str, Tensor]) -> Tensor:
        """vision_features: camera (+depth) patches and audio patches, concatenated -> (B, N_f, P)."""
        parts = []
        if self.cfg.num_cameras:
            frames = _frames(batch, self.cfg.num_cameras, self.cfg.use_depth)  # (B, V, ch, S, S)
            for i, embed in enumerate(self.cameras):
                parts.append(embed(frames[:, i]) + self.source_embed[i])  # (B, (S/p)^2, P)
        if self.audio is not None:
            if "audio" not in batch:
                raise KeyError("config.vision.use_audio is set but the batch has no 'audio' (B, mels, frames)")
            parts.append(self.audio(batch["audio"].float()) + self.source_embed[-1])  # (B, N_audio, P)
        if not parts:  # state-only: an empty feature sequence
            b = batch["robot_state"].shape[0]
            return batch["robot_state"].new_zeros(b, 0, self.source_embed.shape[-1])  # (B, 0, P)
        return torch.cat(parts, dim=1)  # (B, N_f, P)

    def encode(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """-> (V_base (B, N_v, D), state_tokens (B, N_s, D)); neither depends on tau."""
        feats = self.projector(self.features(batch))  # (B, N_f, D)
        v_base = self.resampler(feats)  # (B, N_v, D)
        state_tokens = self.state_encoder(batch["robot_state"].float())  # (B, N_s, D)
        return v_base, state_tokens

    def modulate(self, v_base: Tensor, tau: Tensor | None) -> Tensor:
        """The vision pass without tau (tau=None: V_mod = V_base) or with tau (FiLM + valve), then the block."""
        x = v_base if tau is None else self.film(v_base, tau)  # (B, N_v, D)
        for layer in self.block:
            x = layer(x)  # (B, N_v, D)
        return x


def _frames(batch: dict[str, Tensor], num_cameras: int, use_depth: bool) -> Tensor:
    """Frames (B, V, 3, S, S), uint8 or float in [0, 1] -> float in [-1, 1], with depth (B, V, 1, S, S) appended as
    a 4th channel."""
    x = batch["vision_inputs"]
    if x.shape[1] != num_cameras:
        raise ValueError(f"vision_inputs has {x.shape[1]} cameras, the config expects {num_cameras}")
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()  # (B, V, 3, S, S) in [0, 1]
    x = x * 2.0 - 1.0
    if use_depth:
        if "depth" not in batch:
            raise KeyError("config.vision.use_depth is set but the batch has no 'depth' (B, V, 1, S, S)")
        x = torch.cat([x, batch["depth"].float()], dim=2)  # (B, V, 4, S, S)
    return x
