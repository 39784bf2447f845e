"""One batch recipe for a model: which text it reads and with which tokenizer, so training, offline evaluation, base
actions, the adapter's calibration and live observations build the same batch (docs/architecture.md, "The batch
contract")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sigma_vla.processing.text import TextTokenizer, tokenizer_path
from sigma_vla.processing.transforms import BatchTransform


@dataclass(frozen=True)
class TextSettings:
    max_len: int | None  # None: no text tokens (command ids, a fixed instruction, or a base that tokenizes itself)
    tokenizer: str | None = None  # a tokenizer directory; None: MiniLM's WordPiece


def sigma_text(config: Any) -> TextSettings:
    """What a SigmaConfig reads: its backbone's tokens in text mode 'tokens', nothing for command ids."""
    lang = config.language
    if lang.text_mode != "tokens":
        return TextSettings(None)
    return TextSettings(lang.text_max_len, tokenizer_path(config.backbone))


def base_text(base: Any) -> TextSettings:
    """What a base reads: an embedded base the task's tokens unless it keeps one fixed instruction; a LeRobot base
    (no `config` of ours) tokenizes the task words itself."""
    cfg = getattr(base, "config", None)
    if cfg is None or not hasattr(cfg, "text_max_len") or getattr(cfg, "instruction", None) is not None:
        return TextSettings(None)
    return TextSettings(cfg.text_max_len)


def shard_transform(meta: dict[str, Any], text: TextSettings, paraphrases: str | None = None,
                    seed: int = 0) -> BatchTransform:
    """Shard batch -> model batch with the shards' statistics (meta.json) and the model's text settings; with a
    paraphrase table (processing/paraphrase.py), training batches draw their task's wording from it."""
    transform = BatchTransform.from_meta(meta, text.max_len, text.tokenizer)
    if paraphrases is not None:
        from sigma_vla.processing.paraphrase import load_paraphrases

        tasks = meta.get("tasks") or [""]
        transform.paraphrases = load_paraphrases(paraphrases, tasks, text.max_len, text.tokenizer, seed)
    return transform


def live_tokenizer(text: TextSettings) -> TextTokenizer | None:
    """The tokenizer a live observation's instruction goes through (inference.SigmaPolicy), or None."""
    return TextTokenizer(text.max_len, text.tokenizer) if text.max_len is not None else None
