"""`lerobot:` references in an environment without lerobot (the default one): one line naming what to install,
exit 2, before anything is written. The real LeRobot paths are tested by `make test-lerobot` (tests/lerobot)."""

from __future__ import annotations

import sys

import pytest

from tests.conftest import run_cli
from tests.training.fake_shards import write_fake_shards


@pytest.fixture
def no_lerobot(monkeypatch):
    monkeypatch.setitem(sys.modules, "lerobot", None)  # `import lerobot` raises ImportError, as when not installed


@pytest.mark.parametrize("command", [["base-actions", "{shards}", "--base", "lerobot:{tmp}"],
                                     ["train", "{shards}", "--out", "{tmp}/run", "--backbone", "lerobot:{tmp}"],
                                     ["train", "{shards}", "--out", "{tmp}/run", "--finetune-base", "lerobot:{tmp}"]])
def test_a_lerobot_reference_without_lerobot_is_one_line(command, tmp_path, capsys, no_lerobot):
    shards = write_fake_shards(tmp_path / "shards", n_train=4, n_val=0)
    args = [a.format(shards=shards, tmp=tmp_path) for a in command]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "needs lerobot (pip install 'lerobot[pi,smolvla,diffusion]==0.6.1' on Python 3.12)" in err
    assert "base_actions" not in (shards / "meta.json").read_text() and not (tmp_path / "run").exists()


def test_backbone_takes_only_lerobot_references(tmp_path, capsys):
    shards = write_fake_shards(tmp_path / "shards", n_train=4, n_val=0)
    code, _, err = run_cli(["train", shards, "--out", tmp_path / "run", "--backbone", "gemma"], capsys)
    assert code == 2 and "--backbone" in err and "lerobot:PATH_OR_ID" in err, err
