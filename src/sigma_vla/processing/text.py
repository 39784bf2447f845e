"""Instruction text -> `text_input_ids` / `text_attention_mask` with the backbone's own tokenizer (paper 3.1: "text
commands are converted to text_tokens externally by the tokenizer"; 5.3: the tokenizer must match the backbone's
embedding table). The embedded backbone and the tiny test BERT share MiniLM's WordPiece vocabulary (30522).

Shards store a task_index per sample and the task strings once in meta.json, so `TaskTokens` tokenizes every task
once and gathers rows per batch.

Shape legend (docs/architecture.md): B batch, L text length.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from torch import Tensor

from sigma_vla.interop import lerobot as lerobot_refs
from sigma_vla.interop.hf import minilm_path, quiet_transformers


@lru_cache(maxsize=4)
def _load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    with quiet_transformers():
        return AutoTokenizer.from_pretrained(path, local_files_only=True)


class TextTokenizer:
    """Pads or truncates to a fixed max_len L so every batch has the same backbone sequence length."""

    def __init__(self, max_len: int, path: str | None = None):
        if max_len < 2:
            raise ValueError(f"max_len must be >= 2 (room for [CLS] and [SEP]), got {max_len}")
        self.max_len = max_len
        self.tokenizer = _load_tokenizer(path or minilm_path())

    def __call__(self, texts: Sequence[str]) -> dict[str, Tensor]:
        if isinstance(texts, str):
            texts = [texts]
        enc = self.tokenizer(list(texts), padding="max_length", truncation=True, max_length=self.max_len,
                             return_tensors="pt")
        return {"text_input_ids": enc["input_ids"].long(),  # (B, L)
                "text_attention_mask": enc["attention_mask"].long()}  # (B, L)


class TaskTokens:
    """Tokenize a dataset's task strings once; `tokens(task_index)` returns the batch's text keys."""

    def __init__(self, tasks: Sequence[str], max_len: int, path: str | None = None):
        enc = TextTokenizer(max_len, path)(list(tasks))
        self.ids = enc["text_input_ids"]  # (num_tasks, L)
        self.mask = enc["text_attention_mask"]  # (num_tasks, L)

    def __call__(self, task_index: Tensor) -> dict[str, Tensor]:
        idx = task_index.long().cpu()  # (B,)
        if idx.numel() and (idx.min() < 0 or idx.max() >= len(self.ids)):
            raise IndexError(f"task_index out of range [0, {len(self.ids)}): {idx.tolist()}")
        return {"text_input_ids": self.ids[idx], "text_attention_mask": self.mask[idx]}  # (B, L) each


def tokenize(texts: Sequence[str], max_len: int) -> dict[str, Tensor]:
    """One-shot helper: task strings -> {'text_input_ids', 'text_attention_mask'} with the MiniLM tokenizer."""
    return TextTokenizer(max_len)(texts)


def tokenizer_path(backbone: Any) -> str | None:
    """A backbone config's own tokenizer directory (paper 5.3: tokenizer and embedding table must match); None is
    MiniLM's WordPiece vocabulary, which the 'minilm' and 'bert' kinds share."""
    if backbone.kind != "lerobot":
        return None
    return lerobot_refs.tokenizer_path(str(backbone.ref), "backbone.ref")
