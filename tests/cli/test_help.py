"""`sigma --help` reads like a tool's: a version, no type tags, upper-case names, --config's choices and the
per-experiment defaults taken from training/registry.py, and timings that match what was measured."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import typer

from sigma_vla.cli.help import per_config_default
from sigma_vla.cli.main import app
from sigma_vla.training.registry import EXPERIMENTS
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = typer.main.get_command(app).commands  # walked, not listed: a new command is covered by itself
TYPE_TAG = re.compile(r"<(bool|int|float|str|path|text|file|choice|integer)[^>]*>", re.IGNORECASE)


def _help(args: list[str], capsys) -> str:
    code, out, err = run_cli([*args, "--help"], capsys)
    assert code == 0, err
    return out


def _flat(text: str) -> str:
    """The help text without its box and line breaks (rich wraps long lines where the terminal ends)."""
    return " ".join(text.replace("│", " ").split())


def test_version_prints_the_distributions_version(capsys):
    code, out, _ = run_cli(["--version"], capsys)
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert code == 0 and out.strip() == f"sigma-vla {version}"


@pytest.mark.parametrize("name", ["", *sorted(COMMANDS)])
def test_help_has_no_type_tags_and_arguments_in_upper_case(name, capsys):
    out = _help([name] if name else [], capsys)
    assert not TYPE_TAG.search(out), TYPE_TAG.search(out).group(0)
    usage = next(line for line in out.splitlines() if "Usage:" in line)
    assert "{" not in usage, usage
    for param in (COMMANDS[name].params if name else []):
        if param.param_type_name == "argument":
            assert param.name.upper() in usage and f" {param.name.upper()} " in out, param.name


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_value_option_names_its_value_in_upper_case_and_a_flag_shows_none(name):
    for param in COMMANDS[name].params:
        if param.param_type_name != "option":
            continue
        if param.is_flag:
            assert not param.metavar, (name, param.name)
        else:
            assert param.metavar and param.metavar == param.metavar.upper(), (name, param.name, param.metavar)


@pytest.mark.parametrize("command", ["train", "experiment"])
def test_config_lists_each_experiment_on_its_own_line_from_the_registry(command, capsys):
    out = _help([command], capsys)
    for name, experiment in EXPERIMENTS.items():
        assert re.search(rf"│\s+{name} = ", out), name  # each choice starts a line of its own
        assert f"{name} = {experiment.description}" in _flat(out)


def test_an_unknown_config_is_one_line(tmp_path, capsys):
    (tmp_path / "shards").mkdir()
    code, _, err = run_cli(["train", tmp_path / "shards", "--out", tmp_path / "run", "--config", "huge"], capsys)
    assert code == 2 and err.count("\n") == 1 and "field '--config'" in err and "'huge'" in err, err


def test_train_says_each_experiments_steps_and_batch_size(capsys):
    flat = _flat(_help(["train"], capsys))
    for field in ("steps", "batch_size"):
        values = {name: getattr(e.train, field) for name, e in EXPERIMENTS.items()}
        expected = ", ".join(f"{values[n]} for {n}" for n in ["demo", *[n for n in values if n != "demo"]])
        assert f"(default: {expected})" in flat, field
    assert per_config_default({"demo": 0, "tiny": 0}) == "default: 0"
    assert per_config_default({"tiny": 1e-3, "demo": 5e-4}) == "default: 0.0005 for demo, 0.001 for tiny"


def test_demo_help_says_the_measured_times(capsys):
    flat = _flat(_help(["demo"], capsys))
    assert "quick: about 2 minutes; full: about 25 minutes on 2 cpu cores" in flat.lower()
    assert "3 minutes" not in flat


def test_rollout_runs_sigma_unless_told_otherwise():
    from sigma_vla.inference.policy import POLICY_CHOICES

    policy = next(p for p in COMMANDS["rollout"].params if p.name == "policy")
    assert policy.default == "sigma" and "sigma" in POLICY_CHOICES


def test_sigma_help_imports_no_torch():
    """The registry's texts are filled in when a command's help is shown: `sigma --help` stays fast."""
    code = ("import sys\nfrom sigma_vla.cli.main import main\nsys.argv = ['sigma', '--help']\nmain()\n"
            "assert 'torch' not in sys.modules, 'torch imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Usage: sigma" in done.stdout
