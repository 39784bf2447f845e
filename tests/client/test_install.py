"""The robot side is its own distribution (client/, sigma-vla-client): `pip install ./client`
into a bare venv pulls no torch, and its PolicyClient talks to our server.

The install uses pip's configured indexes for numpy, msgpack, websockets (and setuptools for the build); where
none is reachable (an offline machine without them cached) the test is skipped, saying so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sigma_vla.serving import ServerThread
from sigma_vla.serving.standin import standin_factory
from tests.serving.helpers import server_config

CLIENT = Path(__file__).resolve().parents[2] / "client"
# What pip says when it cannot get a distribution (no network, no local index, nothing cached).
UNREACHABLE = ("No matching distribution found", "Could not find a version", "NewConnectionError",
               "Temporary failure in name resolution", "Network is unreachable", "ProxyError")


def _run(cmd: list, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, env=env)


def _pip(python: Path, *args: object) -> subprocess.CompletedProcess:
    """This suite's pip acting on another interpreter's environment (`pip --python`): the bare venv needs no pip
    of its own, which saves the ~10 s of ensurepip on 2 cores."""
    return _run([sys.executable, "-m", "pip", "--python", python, "--disable-pip-version-check", *args])


@pytest.fixture(scope="module")
def bare_venv(tmp_path_factory) -> Path:
    """A fresh venv (same Python as the suite) with only `pip install ./client` in it; its python."""
    root = tmp_path_factory.mktemp("client_venv")
    client = shutil.copytree(CLIENT, root / "client", ignore=shutil.ignore_patterns("*.egg-info", "build"))
    venv = root / "venv"  # (installing from a copy keeps setuptools' build/ out of the repository)
    made = _run([sys.executable, "-m", "venv", "--without-pip", venv], timeout=120)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    install = _pip(python, "install", "--quiet", client)
    if install.returncode and any(s in install.stderr for s in UNREACHABLE):
        pytest.skip("pip install ./client needs numpy, msgpack, websockets and setuptools from an index or the "
                    f"pip cache, and none was reachable: {install.stderr.strip().splitlines()[-1]}")
    assert install.returncode == 0, install.stderr
    return python


def test_pip_install_client_pulls_no_torch(bare_venv):
    listed = _pip(bare_venv, "list", "--format=json")
    names = {p["name"].lower().replace("_", "-") for p in json.loads(listed.stdout)}
    assert "sigma-vla-client" in names and {"numpy", "msgpack", "websockets"} <= names
    assert not names & {"torch", "sigma-vla", "transformers", "mujoco"}, sorted(names)


def test_installed_client_talks_to_the_server(bare_venv):
    code = textwrap.dedent("""
        import sys
        import numpy as np
        from sigma_vla_client import PolicyClient
        assert "torch" not in sys.modules
        with PolicyClient("127.0.0.1", int(sys.argv[1]), timeout=30) as policy:
            spec = policy.metadata["inputs"]
            obs = {k: np.zeros(v["shape"], dtype=v["dtype"]) for k, v in spec.items()}
            policy.reset()
            out = policy.infer(obs, "put it far left")
        print(out["actions"].shape, out["actions"].dtype)
    """)
    with ServerThread(standin_factory(), server_config()) as server:
        ran = _run([bare_venv, "-c", code, server.port], timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "(8, 4) float32"
