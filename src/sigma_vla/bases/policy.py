"""The base-policy seam: the frozen VLA that Sigma corrects with residuals (paper 4.2.1, TRAF).

A base is anything that maps an observation batch to an action chunk (B, T, Da) in the shards' normalised units and
declares its action dim and horizon. `sigma base-actions` runs it once over every shard (bases/actions.py),
so training never runs it; `ActionTriple.from_chunk` cuts its chunk into TRAF's three time scales. How to add a base:
docs/architecture.md.
- `TinyBasePolicy`: the embedded default, a small ACT-like VLA (conv vision, MiniLM text embedding, state, a small
  transformer, a chunk head), trained by `sigma train-base` on episodes disjoint from Sigma's splits and with a
  generic instruction, then frozen.
- `LeRobotPolicyBase` (lerobot_base.py): any LeRobot policy object with `predict_action_chunk`.

Shape legend (docs/architecture.md): B batch, T horizon, C chunk, Da action dim, Ds state dim, V cameras, S image side,
L text length, N tokens, W width.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sigma_vla.bases.vision import FlatEncoder, GridEncoder, KeypointEncoder, random_shift
from sigma_vla.errors import SigmaError
from sigma_vla.interop.fingerprint import model_dir
from sigma_vla.interop.hf import load_minilm
from sigma_vla.models.checkpoint import CONFIG_FILE, load_state_checked, read_model_dir, save_model_dir
from sigma_vla.models.config import ConfigError
from sigma_vla.models.layers import masked_mean
from sigma_vla.processing.text import TextTokenizer

TINY_BASE_KIND = "sigma-vla/TinyBasePolicy"
VISION_ENCODERS = ("flat", "keypoints", "grid")


class BasePolicy(ABC):
    """An observation batch (the batch contract's observation keys) -> action chunk (B, horizon, action_dim)."""

    action_dim: int
    horizon: int

    @abstractmethod
    def predict_chunk(self, batch: dict[str, Any]) -> Tensor:
        """(B, horizon, action_dim) float32 in the shards' normalised action units, without gradients."""

    def reset(self) -> None:
        """Clear any per-episode state (LeRobot policies keep action queues)."""


@dataclass
class TinyBaseConfig:
    """The embedded base. Dims must match the shards' meta.json (`sigma train-base` copies them)."""

    state_dim: int = 14
    action_dim: int = 4
    horizon: int = 16
    num_cameras: int = 1
    # Camera encoder (bases/vision.py; docs/closed_loop.md measures them): "flat" (grid cells read by one
    # linear layer into vision_tokens tokens), "keypoints" (spatial softmax, vision_tokens keypoints) or "grid"
    # (one token per cell, the first base's).
    vision: str = "flat"
    vision_tokens: int = 8
    grid: int = 6  # conv features pooled to grid x grid cells per camera, whatever the image side
    augment_shift: int = 0  # random-shift augmentation in training, pixels (0: off)
    width: int = 128
    layers: int = 2
    heads: int = 4
    dropout: float = 0.0  # docs/closed_loop.md, "What made the base pick"
    text_max_len: int = 24
    pretrained_text: bool = True  # MiniLM's word-embedding table (frozen); False: a random table (tests)
    vocab_size: int = 30522
    text_dim: int = 384
    # The one instruction the base always reads, whatever the batch says (docs/architecture.md, "Language that
    # matters": the default base is trained with a generic instruction that names no zone, as an untuned base does
    # not know the user's unspoken intent).
    # None: read the batch's own text_input_ids.
    instruction: str | None = None

    def __post_init__(self) -> None:
        for name in ("state_dim", "action_dim", "horizon", "vision_tokens", "grid", "width", "layers", "heads", "text_max_len",
                     "vocab_size", "text_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"must be >= 1, got {getattr(self, name)}", field=f"base.{name}")
        if self.vision not in VISION_ENCODERS:
            raise ConfigError(f"must be one of {', '.join(VISION_ENCODERS)}, got {self.vision!r}", field="base.vision")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"must be in [0, 1), got {self.dropout}", field="base.dropout")
        if self.augment_shift < 0:
            raise ConfigError(f"must be >= 0, got {self.augment_shift}", field="base.augment_shift")
        if self.num_cameras < 0:
            raise ConfigError(f"must be >= 0, got {self.num_cameras}", field="base.num_cameras")
        if self.width % self.heads:
            raise ConfigError(f"width {self.width} is not divisible by heads {self.heads}", field="base.heads")
        if self.pretrained_text and (self.vocab_size, self.text_dim) != (30522, 384):
            raise ConfigError("the pretrained MiniLM table is 30522 x 384, got "
                              f"{self.vocab_size} x {self.text_dim}", field="base.pretrained_text")

    @classmethod
    def tiny(cls, **kw: Any) -> TinyBaseConfig:
        base = dict(state_dim=6, action_dim=4, horizon=6, num_cameras=2, vision_tokens=4, grid=2, width=16, layers=1, heads=2,
                    text_max_len=8, pretrained_text=False, vocab_size=30522, text_dim=16)
        return cls(**{**base, **kw})


class TinyBasePolicy(nn.Module, BasePolicy):
    """A small VLA: camera tokens + one text token + one state token + T action queries -> transformer -> chunk."""

    def __init__(self, config: TinyBaseConfig | None = None):
        super().__init__()
        self.config = cfg = config or TinyBaseConfig()
        w = cfg.width
        self.cameras = nn.ModuleList(_camera_encoder(cfg) for _ in range(cfg.num_cameras))
        n_tokens = cfg.grid**2 if cfg.vision == "grid" else cfg.vision_tokens
        self.camera_pos = nn.Parameter(torch.randn(max(cfg.num_cameras, 1), n_tokens, w) * 0.02)  # (V, N, W)
        self.text_table = nn.Embedding(cfg.vocab_size, cfg.text_dim, padding_idx=0)
        if cfg.pretrained_text:
            with torch.no_grad():
                self.text_table.weight.copy_(load_minilm().get_input_embeddings().weight)
        self.text_table.weight.requires_grad_(False)  # frozen MiniLM word embeddings
        self.text_proj = nn.Linear(cfg.text_dim, w)
        self.state_proj = nn.Linear(cfg.state_dim, w)
        self.queries = nn.Parameter(torch.randn(cfg.horizon, w) * 0.02)  # (T, W)
        layer = nn.TransformerEncoderLayer(w, cfg.heads, 2 * w, cfg.dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.ln = nn.LayerNorm(w)
        self.head = nn.Linear(w, cfg.action_dim)
        self._instruction_cache: tuple[str, Tensor, Tensor] | None = None

    @property
    def action_dim(self) -> int:  # type: ignore[override]
        return self.config.action_dim

    @property
    def horizon(self) -> int:  # type: ignore[override]
        return self.config.horizon

    def forward(self, batch: dict[str, Any]) -> Tensor:
        """-> (B, T, Da), with gradients (training: training.tasks.BaseFinetuneTask.loss); `predict_chunk` is the
        frozen inference call."""
        tokens = [self._text_token(batch), self.state_proj(batch["robot_state"].float()).unsqueeze(1)]  # (B, 1, W)
        if self.config.num_cameras:
            frames = batch["vision_inputs"]  # (B, V, 3, S, S) uint8
            frames = frames.float() / 255.0 * 2 - 1 if frames.dtype == torch.uint8 else frames.float() * 2 - 1
            for i, enc in enumerate(self.cameras):
                view = random_shift(frames[:, i], self.config.augment_shift) if self.training else frames[:, i]
                tokens.append(enc(view) + self.camera_pos[i])  # (B, N, W)
        b = tokens[0].shape[0]
        tokens.append(self.queries.expand(b, -1, -1))  # (B, T, W)
        x = self.encoder(torch.cat(tokens, dim=1))  # (B, N, W)
        return self.head(self.ln(x[:, -self.config.horizon:]))  # (B, T, Da)

    def _text_token(self, batch: dict[str, Any]) -> Tensor:
        if self.config.instruction is not None:
            ids, mask = self._instruction_tokens(batch["robot_state"])  # (B, L) each
        else:
            ids, mask = batch["text_input_ids"], batch.get("text_attention_mask")  # (B, L)
        emb = self.text_table(ids)  # (B, L, text_dim)
        return self.text_proj(masked_mean(emb, None if mask is None else mask.bool())).unsqueeze(1)  # (B, 1, W)

    def _instruction_tokens(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """config.instruction tokenized once (MiniLM tokenizer), repeated over the batch."""
        text = self.config.instruction
        if self._instruction_cache is None or self._instruction_cache[0] != text:
            enc = TextTokenizer(self.config.text_max_len)([text])
            self._instruction_cache = (text, enc["text_input_ids"], enc["text_attention_mask"])
        _, ids, mask = self._instruction_cache
        b = like.shape[0]
        return ids.to(like.device).expand(b, -1), mask.to(like.device).expand(b, -1)  # (B, L) each

    @torch.no_grad()
    def predict_chunk(self, batch: dict[str, Any]) -> Tensor:
        was = self.training
        self.eval()
        try:
            return self(batch)  # (B, T, Da)
        finally:
            self.train(was)

    def save_pretrained(self, directory: str | Path) -> Path:
        skip = ["text_table.weight"] if self.config.pretrained_text else []
        return save_model_dir(directory, self, asdict(self.config), TINY_BASE_KIND, skip)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> TinyBasePolicy:
        config, state, skipped = read_model_dir(directory, TINY_BASE_KIND)
        config = {"vision": "grid", "dropout": 0.1, **config}  # bases saved before these options existed
        model = cls(TinyBaseConfig(**config))
        load_state_checked(model, state, skipped, directory)
        return model


def _camera_encoder(cfg: TinyBaseConfig) -> nn.Module:
    if cfg.vision == "keypoints":
        return KeypointEncoder(cfg.width, cfg.vision_tokens)
    if cfg.vision == "flat":
        return FlatEncoder(cfg.width, cfg.grid, cfg.vision_tokens)
    return GridEncoder(cfg.width, cfg.grid)


def load_base_policy(directory: str | Path) -> BasePolicy:
    """A frozen base from a model directory written by `sigma train-base` (TinyBasePolicy). A LeRobot base is built
    in Python instead: LeRobotPolicyBase(your_policy, ...)."""
    directory = model_dir(directory)  # a training run directory: its final model
    if not (directory / CONFIG_FILE).is_file():
        raise SigmaError("missing: not a base-policy directory (run `sigma train-base` first)",
                         file=directory / CONFIG_FILE)
    base = TinyBasePolicy.from_pretrained(directory)
    base.requires_grad_(False)
    return base.eval()
