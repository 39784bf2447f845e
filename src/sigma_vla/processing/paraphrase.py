"""Training-time paraphrases: each training sample reads its task in one of several wordings (`sigma train
--paraphrases FILE`, docs/closed_loop.md, "A richer training grammar").

A recording names each task in a handful of phrasings; a table of other wordings lets the language workspace learn
the meaning rather than the strings, without re-recording. The table is JSON lines {"task": a task string of the
dataset, "text": another wording}. Every step draws, per sample, uniformly among the task's own string and its
wordings, from a generator seeded by (run seed, step): a resumed run draws what the uninterrupted one would have.
Validation and evaluation always read the recorded task.

Shape legend (docs/architecture.md): B batch, L text length, M wordings of all tasks together.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from sigma_vla.errors import SigmaError
from sigma_vla.processing.text import TextTokenizer

TABLE_CAP = 8 * 2**20  # bytes: thousands of wordings are a few hundred KB
MAX_TEXT_CHARS = 2000  # as an instruction `sigma serve` accepts


def read_table(path: str | Path) -> list[tuple[str, str]]:
    """(task, text) pairs of a paraphrase table, every line validated; an error names the file, line and field."""
    from sigma_vla.outdir import read_capped

    pairs = []
    for number, line in enumerate(read_capped(path, TABLE_CAP).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            item = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            raise SigmaError("not a JSON object", file=where) from None
        if not isinstance(item, dict):
            raise SigmaError('expected an object {"task": ..., "text": ...}', file=where)
        for key in ("task", "text"):
            value = item.get(key)
            if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT_CHARS:
                raise SigmaError(f"must be a non-empty string of at most {MAX_TEXT_CHARS} characters", file=where,
                                 field=key)
        pairs.append((item["task"], item["text"]))
    return pairs


def read_paraphrases(path: str | Path, tasks: Sequence[str]) -> dict[int, list[str]]:
    """task index -> its other wordings. Lines whose task the dataset lacks are skipped (one table can serve several
    recordings of one task family); a table that matches none of the tasks is an error."""
    index = {t: i for i, t in enumerate(tasks)}
    table: dict[int, list[str]] = {}
    for task, text in read_table(path):
        if task in index and text != task:
            table.setdefault(index[task], []).append(text)
    if not table:
        raise SigmaError(f"no line's task is one of the dataset's {len(tasks)} tasks (meta.json's 'tasks')",
                         file=path, field="task")
    return table


class Paraphrases:
    """Every task's wordings tokenized once; `tokens(task_index, step)` draws one per sample."""

    def __init__(self, tasks: Sequence[str], table: dict[int, list[str]], max_len: int, tokenizer: str | None,
                 seed: int):
        wordings = [[t, *table.get(i, [])] for i, t in enumerate(tasks)]
        enc = TextTokenizer(max_len, tokenizer)([w for ws in wordings for w in ws])
        self.ids, self.mask = enc["text_input_ids"], enc["text_attention_mask"]  # (M, L) each
        self.count = torch.tensor([len(ws) for ws in wordings])  # (num_tasks,)
        self.start = torch.cumsum(self.count, 0) - self.count  # (num_tasks,) first row of each task
        self.seed = seed

    def tokens(self, task_index: Tensor, step: int) -> dict[str, Tensor]:
        idx = task_index.long().cpu()  # (B,)
        if idx.numel() and (idx.min() < 0 or idx.max() >= len(self.count)):
            raise IndexError(f"task_index out of range [0, {len(self.count)}): {idx.tolist()}")
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        u = torch.rand(idx.shape, generator=g)  # (B,)
        row = self.start[idx] + (u * self.count[idx]).long().clamp_max(self.count[idx] - 1)  # (B,)
        return {"text_input_ids": self.ids[row], "text_attention_mask": self.mask[row]}  # (B, L) each


def load_paraphrases(path: str | Path, tasks: Sequence[str], max_len: int | None, tokenizer: str | None,
                     seed: int) -> Paraphrases:
    """The table at `path` for a model that reads `max_len` tokens of its task (None: it reads no words)."""
    if max_len is None:
        raise SigmaError("this model reads no task tokens of ours (command ids, a fixed instruction, or a LeRobot "
                         "base that tokenizes its task itself), so there is nothing to paraphrase",
                         field="--paraphrases")
    return Paraphrases(tasks, read_paraphrases(path, tasks), max_len, tokenizer, seed)
