"""One rule for every command that writes a directory (sigma_vla.outdir, docs/reliability.md): a directory
holding files that are not ours is refused in one line naming a file, exit 2, and every file is kept; a path that
cannot be written is one line too."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

from sigma_vla.errors import SigmaError
from sigma_vla.outdir import MARKER, atomic_write_text, check_dir, claim_dir
from tests.conftest import run_cli
from tests.models.test_base_cli import _shards as base_shards

TRAIN = ["--config", "tiny", "--steps", "1", "--batch-size", "4", "--no-progress"]


def _plant(root: Path, files: dict[str, str]) -> dict[Path, str]:
    planted = {}
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        planted[path] = text
    return planted


def _error_lines(err: str) -> list[str]:
    """stderr without progress bars (tqdm redraws with carriage returns)."""
    return [ln for ln in re.split(r"[\r\n]", err) if ln.strip() and not re.search(r"\|.*\[", ln)]


def _assert_refused_and_kept(code: int, err: str, out_dir: Path, planted: dict[Path, str]) -> None:
    lines = _error_lines(err)
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "not ours" in lines[0] and any(str(p) in lines[0] for p in planted), lines[0]
    for path, text in planted.items():
        assert path.read_text() == text
    assert sorted(p for p in out_dir.rglob("*") if p.is_file()) == sorted(planted)  # nothing added


@pytest.mark.parametrize("name", ["summary.json", "train_log.csv", "model/model.safetensors"])
def test_train_refuses_a_directory_of_user_files(name, tiny_run, tmp_path, capsys):
    shards, _ = tiny_run
    planted = _plant(tmp_path / "R", {name: "the user's own bytes"})
    code, _, err = run_cli(["train", shards, "--out", tmp_path / "R", *TRAIN], capsys)
    _assert_refused_and_kept(code, err, tmp_path / "R", planted)


def test_train_base_refuses_a_directory_of_user_files(tmp_path, capsys):
    shards = base_shards(tmp_path / "shards")
    planted = _plant(tmp_path / "B", {"config.json": "{\"mine\": 1}", "model.safetensors": "my weights"})
    code, _, err = run_cli(["train-base", shards, "--out", tmp_path / "B", "--steps", "1", "--batch-size", "4",
                            "--no-progress"], capsys)
    _assert_refused_and_kept(code, err, tmp_path / "B", planted)


def test_prep_keeps_a_user_file_named_like_a_temp_file(real_v30, tmp_path, capsys):
    planted = _plant(tmp_path / "S", {"meta.json.tmp": "my notes"})
    code, _, err = run_cli(["prep", real_v30, "--out", tmp_path / "S", "--state-only"], capsys)
    _assert_refused_and_kept(code, err, tmp_path / "S", planted)


def test_eval_refuses_a_directory_of_user_files(tiny_run, tmp_path, capsys):
    shards, run = tiny_run
    planted = _plant(tmp_path / "E", {"sigma_eval_report.json": "{}"})
    code, _, err = run_cli(["eval", run, shards, "--out", tmp_path / "E", "--split", "val", "--bootstrap", "5"],
                           capsys)
    _assert_refused_and_kept(code, err, tmp_path / "E", planted)


def test_a_user_file_in_our_directory_is_refused_too(tmp_path):
    out = tmp_path / "S"
    claim_dir(out, "shards")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SigmaError, match="notes.txt: not ours"):
        check_dir(out, "shards")


def test_kinds_do_not_mix(tmp_path):
    claim_dir(tmp_path / "R", "run")
    (tmp_path / "R" / "run.json").write_text("{}")
    with pytest.raises(SigmaError, match="holds a sigma-vla 'run' directory, not a 'shards' one"):
        check_dir(tmp_path / "R", "shards")


def test_our_names_without_our_marker_or_tag_are_not_ours(tmp_path):
    out = tmp_path / "S"
    _plant(out, {"meta.json": json.dumps({"format": "someone-elses"}), "shard_00000.safetensors": "x"})
    with pytest.raises(SigmaError, match="not ours"):
        check_dir(out, "shards")
    (out / "meta.json").write_text(json.dumps({"format": "sigma-vla-shards/1"}))  # a prep from before the marker
    assert claim_dir(out, "shards") is False and (out / MARKER).is_file()


def test_atomic_write_never_uses_a_name_a_user_may_own(tmp_path):
    _plant(tmp_path, {"meta.json.tmp": "mine"})
    atomic_write_text(tmp_path / "meta.json", "{}")
    assert (tmp_path / "meta.json.tmp").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta.json", "meta.json.tmp"]


def test_our_leftover_temp_files_are_cleaned_and_never_block(tmp_path):
    out = tmp_path / "S"
    claim_dir(out, "shards")
    leftover = out / ".meta.json.0badc0de.sigma-tmp"  # a kill between write and rename
    leftover.write_text("partial")
    assert check_dir(out, "shards") == "ours"
    claim_dir(out, "shards")
    assert not leftover.exists()


@contextmanager
def _read_only(path: Path):
    """A directory this process cannot write. Root writes through permission bits, so as root the directory is
    made immutable instead (chattr +i, ext4 and most local filesystems)."""
    path.mkdir()
    path.chmod(0o555)
    immutable = False
    try:
        if os.geteuid() == 0:
            chattr = shutil.which("chattr")
            immutable = chattr is not None and subprocess.run([chattr, "+i", str(path)],
                                                              capture_output=True).returncode == 0
            if not immutable:
                pytest.skip("running as root on a filesystem without chattr +i: cannot make a read-only directory")
        yield path
    finally:
        if immutable:
            subprocess.run([shutil.which("chattr"), "-i", str(path)], check=True)
        path.chmod(0o755)


@pytest.mark.parametrize("command", ["prep", "train"])
def test_unwritable_output_is_one_line(command, real_v30, tiny_run, tmp_path, capsys):
    shards, _ = tiny_run
    args = {"prep": ["prep", real_v30, "--state-only"], "train": ["train", shards, *TRAIN]}[command]
    (tmp_path / "a_file").write_text("x")
    code, _, err = run_cli([*args, "--out", tmp_path / "a_file" / "out"], capsys)
    assert code == 2 and len(_error_lines(err)) == 1 and "a_file" in err and "Traceback" not in err, err
    with _read_only(tmp_path / "ro") as ro:
        code, _, err = run_cli([*args, "--out", ro / "sub"], capsys)
        assert code == 2 and len(_error_lines(err)) == 1 and str(ro) in err and "Traceback" not in err, err
        code, _, err = run_cli([*args, "--out", ro], capsys)
        assert code == 2 and len(_error_lines(err)) == 1 and str(ro) in err and "Traceback" not in err, err
        assert not any(ro.iterdir())
