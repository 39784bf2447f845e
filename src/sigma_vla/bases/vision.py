"""Camera encoders of the embedded base (TinyBasePolicy) and its training-time image augmentation.

Closed loop needs the block's position to about a centimetre: in the 96 px front camera a pixel is about 5 mm
across the table. Three encoders, measured in docs/closed_loop.md:
- `FlatEncoder` (default): GridEncoder's cells read by one linear layer into N tokens, so where the block is
  becomes which weights see it (a probe reads the block position from these features to 4-5 mm).
- `KeypointEncoder`: a conv stack kept at 1/4 resolution, then a spatial softmax (Levine et al. 2016, "deep
  spatial autoencoders"): each of K feature maps becomes the expected (x, y) image coordinate of its activation.
  Each keypoint is one token.
- `GridEncoder`: four stride-2 convs average-pooled to grid x grid tokens, one per cell (the first base's).

`random_shift` is DrQ's augmentation (Kostrikov et al. 2020): pad by `pad` pixels (edge replicated) and crop back
at a random offset per sample, so the policy must read the block relative to the gripper, not to the frame.

Shape legend (docs/architecture.md): B batch, S image side, K keypoints, N tokens, W width, g grid side.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


class GridEncoder(nn.Module):
    """Four stride-2 convs and an adaptive average pool: (B, 3, S, S) -> (B, grid^2, W)."""

    def __init__(self, width: int, grid: int):
        super().__init__()
        chans = [3, 16, 32, 64, width]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(chans[:-1], chans[1:]))
        self.pool = nn.AdaptiveAvgPool2d(grid)

    def forward(self, x: Tensor) -> Tensor:
        for conv in self.convs:
            x = F.gelu(conv(x))  # (B, c, S/2^i, S/2^i)
        return rearrange(self.pool(x), "b c h w -> b (h w) c")  # (B, grid^2, W)


class FlatEncoder(nn.Module):
    """GridEncoder's cells flattened and read by one linear layer into `tokens` tokens: (B, 3, S, S) -> (B, N, W).
    Each cell has its own weights, so where something is becomes *which* weights see it: a linear readout of
    position that the attention over grid tokens has to discover (docs/closed_loop.md)."""

    def __init__(self, width: int, grid: int, tokens: int):
        super().__init__()
        self.grid = GridEncoder(width, grid)
        self.readout = nn.Linear(grid * grid * width, tokens * width)
        self.tokens = tokens

    def forward(self, x: Tensor) -> Tensor:
        cells = rearrange(self.grid(x), "b n w -> b (n w)")  # (B, g^2 W)
        return rearrange(self.readout(cells), "b (n w) -> b n w", n=self.tokens)  # (B, N, W)


def spatial_softmax(features: Tensor, temperature: Tensor) -> Tensor:
    """(B, K, H, W) feature maps -> (B, K, 2) expected (x, y) in [-1, 1] under a softmax over each map."""
    b, k, h, w = features.shape
    attn = torch.softmax(rearrange(features, "b k h w -> b k (h w)") / temperature, dim=-1)  # (B, K, H*W)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h, device=features.device),
                            torch.linspace(-1, 1, w, device=features.device), indexing="ij")
    grid = torch.stack([xs.flatten(), ys.flatten()], dim=-1).to(features.dtype)  # (H*W, 2)
    return attn @ grid  # (B, K, 2)


class KeypointEncoder(nn.Module):
    """Three convs down to 1/4 resolution, K keypoints by spatial softmax, one token per keypoint:
    (B, 3, S, S) -> (B, K, W)."""

    def __init__(self, width: int, keypoints: int, channels: int = 32):
        super().__init__()
        c = channels
        self.convs = nn.ModuleList([
            nn.Conv2d(3, c // 2, 5, stride=2, padding=2),  # S/2
            nn.Conv2d(c // 2, c, 3, stride=2, padding=1),  # S/4
            nn.Conv2d(c, c, 3, padding=1),
        ])
        self.to_maps = nn.Conv2d(c, keypoints, 1)
        self.log_temperature = nn.Parameter(torch.zeros(()))
        self.coord_proj = nn.Linear(2, width)
        self.keypoint_embed = nn.Parameter(torch.randn(keypoints, width) * 0.02)  # (K, W) which keypoint

    def forward(self, x: Tensor) -> Tensor:
        for conv in self.convs:
            x = F.gelu(conv(x))  # (B, c, S/2^i, S/2^i)
        points = spatial_softmax(self.to_maps(x), self.log_temperature.exp())  # (B, K, 2)
        return self.coord_proj(points) + self.keypoint_embed  # (B, K, W)


def random_shift(frames: Tensor, pad: int) -> Tensor:
    """(B, 3, S, S) float -> the same, each sample shifted by an integer offset in [-pad, pad] (edges replicated)."""
    if pad <= 0:
        return frames
    b, _, h, w = frames.shape
    padded = F.pad(frames, (pad, pad, pad, pad), mode="replicate")  # (B, 3, S+2p, S+2p)
    dx, dy = torch.randint(0, 2 * pad + 1, (2, b), device=frames.device)
    rows = (torch.arange(h, device=frames.device)[None] + dy[:, None])  # (B, S)
    cols = (torch.arange(w, device=frames.device)[None] + dx[:, None])  # (B, S)
    bi = torch.arange(b, device=frames.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]]  # (B, S, S, 3)
    return out.permute(0, 3, 1, 2).contiguous()  # (B, 3, S, S)
