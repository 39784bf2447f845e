"""Truncated shards and models, out-of-range values in shards and options: train, eval, serve and base-actions
stop with one line naming the file (and field), exit 2, no traceback, no partial run."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from sigma_vla.bases.policy import TinyBaseConfig, TinyBasePolicy
from tests.conftest import run_cli
from tests.models.test_base_cli import _shards as base_shards

TRAIN = ["--config", "tiny", "--steps", "1", "--batch-size", "4", "--no-progress"]


def _error_line(err: str) -> str:
    lines = [ln for ln in re.split(r"[\r\n]", err) if ln.strip() and not re.search(r"\|.*\[", ln)]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.fixture
def copies(tiny_run, tmp_path) -> tuple[Path, Path]:
    """Writable copies of the tiny shards and run; run.json points at the copied shards."""
    shards, run = (tmp_path / "shards", tmp_path / "run")
    shutil.copytree(tiny_run[0], shards)
    shutil.copytree(tiny_run[1], run)
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "shards": str(shards.resolve())}))
    return shards, run


def test_truncated_shard_to_train_and_eval(copies, tmp_path, capsys):
    shards, run = copies
    _truncate(shards / "shard_00000.safetensors")
    code, _, err = run_cli(["train", shards, "--out", tmp_path / "new", *TRAIN], capsys)
    assert code == 2 and "shard_00000.safetensors: unreadable shard" in _error_line(err)
    assert not (tmp_path / "new").exists()
    code, _, err = run_cli(["eval", run, shards, "--out", tmp_path / "e", "--split", "val"], capsys)
    assert code == 2 and "shard_00000.safetensors: unreadable shard" in _error_line(err)
    assert not (tmp_path / "e").exists()


def test_truncated_model_to_eval(copies, tmp_path, capsys):
    shards, run = copies
    _truncate(run / "model/model.safetensors")
    code, _, err = run_cli(["eval", run, shards, "--out", tmp_path / "e", "--split", "val"], capsys)
    assert code == 2 and "model/model.safetensors: unreadable weights" in _error_line(err)


@pytest.mark.parametrize("damaged", ["run/model/model.safetensors", "base/model.safetensors", "base/config.json"])
@pytest.mark.parametrize("portable", [True, False])
def test_damaged_model_to_serve(damaged, portable, copies, tmp_path, capsys):
    shards, run = copies
    from sigma_vla.interop.fingerprint import fingerprint

    if portable:  # the base copied into the run, named by RUN/policy.json with its fingerprint
        damaged = damaged.replace("base/", "run/base/")
        TinyBasePolicy(TinyBaseConfig.tiny()).save_pretrained(run / "base")
        spec = json.loads((run / "policy.json").read_text())
        record = {"path": "base", "fingerprint": fingerprint(run / "base")}
        (run / "policy.json").write_text(json.dumps({**spec, "base": record}))
    else:  # a run from before policy.json: its base is the one its shards name, with the shards' fingerprint
        (run / "policy.json").unlink()
        TinyBasePolicy(TinyBaseConfig.tiny()).save_pretrained(tmp_path / "base")
        meta = json.loads((shards / "meta.json").read_text())
        record = {"base": str(tmp_path / "base"), "fingerprint": fingerprint(tmp_path / "base")}
        (shards / "meta.json").write_text(json.dumps({**meta, "base_actions": record}))
    _truncate(tmp_path / damaged)
    code, out, err = run_cli(["serve", run, "--port", "0"], capsys)
    line = _error_line(err)
    # a damaged model is named; a damaged base no longer has the fingerprint the run recorded
    assert code == 2 and "serving" not in out
    if damaged.startswith("run/model/"):
        assert damaged in line, line
    else:
        assert "field 'base.fingerprint'" in line and "has fingerprint" in line, line


def test_negative_seed_is_one_line(copies, tmp_path, capsys):
    shards, _ = copies
    for command in (["train", shards, *TRAIN], ["train-base", base_shards(tmp_path / "b"), "--no-progress"]):
        code, _, err = run_cli([*command, "--out", tmp_path / "r", "--seed", "-1"], capsys)
        assert code == 2 and "seed must be >= 0" in _error_line(err)
        assert not (tmp_path / "r").exists()


def test_task_index_outside_the_table_stops_train_before_the_run(copies, tmp_path, capsys):
    shards, _ = copies
    path = shards / "shard_00000.safetensors"
    tensors = load_file(str(path))
    tensors["task_index"] = np.full_like(tensors["task_index"], 9)
    save_file(tensors, str(path))
    code, _, err = run_cli(["train", shards, "--out", tmp_path / "r", *TRAIN], capsys)
    assert code == 2 and "field 'task_index': task_index 9 is outside the tasks table" in _error_line(err)
    assert not (tmp_path / "r").exists()  # no partial run left behind


def test_base_actions_verify_the_shards_they_call_done(tmp_path, capsys):
    shards = base_shards(tmp_path / "shards")
    TinyBasePolicy(TinyBaseConfig.tiny(num_cameras=1)).save_pretrained(tmp_path / "base")
    args = ["base-actions", shards, "--base", tmp_path / "base", "--no-progress"]
    assert run_cli(args, capsys)[0] == 0
    fresh = base_shards(tmp_path / "fresh")  # a shard as prep wrote it, without base actions
    shutil.copy(fresh / "shard_00001.safetensors", shards / "shard_00001.safetensors")
    code, out, err = run_cli(args, capsys)
    assert code == 0 and "1 written, 1 already done" in out, err
    _truncate(shards / "shard_00001.safetensors")
    code, out, err = run_cli(args, capsys)
    assert code == 2 and "shard_00001.safetensors: unreadable shard" in _error_line(err)
