"""Training-time paraphrases (processing/paraphrase.py): the table is read as untrusted, each step draws one
wording per sample from (seed, step) alone, and only training batches read them."""

from __future__ import annotations

import json

import pytest
import torch

from sigma_vla.errors import SigmaError
from sigma_vla.processing.paraphrase import Paraphrases, read_paraphrases
from sigma_vla.processing.text import TaskTokens
from sigma_vla.processing.transforms import BatchTransform, Normalizer

TASKS = ["place the block far left", "put it near the right", "the bin is close to you, in the centre"]
WORDINGS = ["set the block down back left", "move it to the far-left part of the table"]


def _table(tmp_path, lines) -> str:
    path = tmp_path / "table.jsonl"
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return str(path)


@pytest.mark.parametrize("line, message", [
    ("{not json", "table.jsonl:2: not a JSON object"),
    ('["a", "b"]', "table.jsonl:2: expected an object"),
    ({"task": TASKS[0]}, "table.jsonl:2: field 'text': must be a non-empty string"),
    ({"task": TASKS[0], "text": "   "}, "field 'text': must be a non-empty string"),
    ({"task": TASKS[0], "text": "x" * 2001}, "at most 2000 characters"),
])
def test_a_bad_line_is_named_by_file_line_and_field(tmp_path, line, message):
    path = _table(tmp_path, [{"task": TASKS[0], "text": WORDINGS[0]}, line])
    with pytest.raises(SigmaError) as err:
        read_paraphrases(path, TASKS)
    assert message in err.value.one_line()


def test_other_tasks_are_skipped_and_a_table_for_none_of_them_is_refused(tmp_path):
    path = _table(tmp_path, [{"task": "stack the cups", "text": "pile the cups"},
                             {"task": TASKS[0], "text": WORDINGS[0]}, {"task": TASKS[0], "text": TASKS[0]}])
    assert read_paraphrases(path, TASKS) == {0: [WORDINGS[0]]}
    with pytest.raises(SigmaError, match="none|no line's task is one of the dataset's 3 tasks"):
        read_paraphrases(_table(tmp_path, [{"task": "stack the cups", "text": "pile the cups"}]), TASKS)


def _decoded(tokens):
    text = TaskTokens(TASKS + WORDINGS, 16)
    rows = {tuple(r.tolist()): s for r, s in zip(text.ids, TASKS + WORDINGS)}
    return [rows[tuple(r.tolist())] for r in tokens["text_input_ids"]]


def test_each_step_draws_the_same_wordings_whenever_it_runs_and_others_keep_their_task():
    para = Paraphrases(TASKS, {0: WORDINGS}, 16, None, seed=3)
    idx = torch.tensor([0] * 32 + [1, 2])
    first = _decoded(para.tokens(idx, step=7))
    assert first == _decoded(Paraphrases(TASKS, {0: WORDINGS}, 16, None, seed=3).tokens(idx, step=7))
    assert first[-2:] == TASKS[1:]  # no wordings: the recorded task
    assert set(first[:32]) == {TASKS[0], *WORDINGS}  # the task's own string is one of the choices
    assert first != _decoded(para.tokens(idx, step=8))
    assert first != _decoded(Paraphrases(TASKS, {0: WORDINGS}, 16, None, seed=4).tokens(idx, step=7))
    with pytest.raises(IndexError):
        para.tokens(torch.tensor([3]), step=0)


def test_only_a_training_step_reads_a_paraphrase():
    transform = BatchTransform(Normalizer.identity(1, 1), TaskTokens(TASKS, 16))
    transform.paraphrases = Paraphrases(TASKS, {0: WORDINGS}, 16, None, seed=0)
    batch = {"robot_state": torch.zeros(64, 1), "task_index": torch.zeros(64, dtype=torch.long),
             "gt_action_vector": torch.zeros(64, 1), "gt_action_chunk": torch.zeros(64, 2, 1),
             "gt_action_trajectory": torch.zeros(64, 3, 1)}
    assert set(_decoded(transform(batch))) == {TASKS[0]}  # validation, evaluation
    assert set(_decoded(transform(batch, paraphrase_step=0))) > {TASKS[0]}
