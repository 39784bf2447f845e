"""Usage errors print the usage line and the message and exit 2, for every command (docs/reliability.md): typer
carries its own copy of click, whose exceptions the CLI must still recognise."""

from __future__ import annotations

import pytest
import typer

from sigma_vla.cli.main import app
from tests.conftest import run_cli

COMMANDS = typer.main.get_command(app).commands  # walked, not listed: a new command is covered by itself


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_unknown_option_prints_usage_and_exits_2(name, capsys):
    code, out, err = run_cli([name, "--bogus"], capsys)
    assert code == 2, (out, err)
    assert "Traceback" not in err and "Traceback" not in out
    assert err.startswith(f"Usage: sigma {name} ") and "Error: No such option: --bogus" in err, err


@pytest.mark.parametrize("name", sorted(n for n, c in COMMANDS.items() if any(p.required for p in c.params)))
def test_missing_required_parameter_prints_usage_and_exits_2(name, capsys):
    code, out, err = run_cli([name], capsys)
    assert code == 2, (out, err)
    assert "Traceback" not in err and err.startswith(f"Usage: sigma {name} ")
    assert "Error: Missing" in err, err


def test_bad_option_value_prints_usage_and_exits_2(capsys):
    code, _, err = run_cli(["train", "shards", "--out", "run", "--steps", "many"], capsys)
    assert code == 2 and err.startswith("Usage: sigma train ") and "'--steps'" in err and "Traceback" not in err


def test_a_full_disk_is_one_line(monkeypatch, tmp_path, capsys):
    """ENOSPC in prep, train, train-base, rollout or record used to end in a traceback."""
    import errno

    import sigma_vla.training.run as run

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "base" / "model.safetensors"))

    monkeypatch.setattr(run, "train_base", full)
    code, _, err = run_cli(["train-base", tmp_path, "--out", tmp_path / "base", "--no-progress"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "model.safetensors: no space left on device" in lines[0]
