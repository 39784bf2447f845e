"""`sigma serve`: bad input is one line with exit 2; a served run answers a client and stops cleanly on Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from sigma_vla_client import PolicyClient
from tests.conftest import run_cli
from tests.serving.helpers import make_obs

# Runs `sigma serve` with the stand-in policy in place of the run's loader (sigma_vla.inference's is not ours).
SERVE_STANDIN = textwrap.dedent("""
    import sigma_vla.cli.serve as serve
    from sigma_vla.serving.standin import standin_factory
    serve.load_policy_factory = lambda run: standin_factory(image_size=64)
    from sigma_vla.cli.main import main
    main()
""")


def test_missing_run_dir(tmp_path: Path, capsys):
    code, _, err = run_cli(["serve", tmp_path / "nope"], capsys)
    assert code == 2 and "run directory not found" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("args,fragment", [(["--max-message-mb", "0"], "--max-message-mb"),
                                           (["--port", "70000"], "port must be in 0..65535"),
                                           (["--token", " "], "token must be a non-empty")])
def test_bad_options(tmp_path: Path, capsys, args, fragment):
    code, _, err = run_cli(["serve", tmp_path, *args], capsys)
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1


def _start(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-c", SERVE_STANDIN, "serve", str(tmp_path), "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    line = proc.stdout.readline()  # "serving RUN on ws://127.0.0.1:PORT/ ..."
    assert "serving" in line, line + proc.stderr.read()
    return proc, int(line.split("ws://127.0.0.1:")[1].split("/")[0])


def test_serve_answers_then_stops_gracefully_on_ctrl_c(tmp_path: Path):
    proc, port = _start(tmp_path, "--token", "tok")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            assert resp.status == 200
        with PolicyClient("127.0.0.1", port, token="tok", retries=0) as client:
            assert client.infer(make_obs(), "x")["actions"].shape == (8, 4)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "server stopped" in out


def test_port_in_use_is_a_clear_error(tmp_path: Path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run([sys.executable, "-c", SERVE_STANDIN, "serve", str(tmp_path), "--port", str(port)],
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "cannot listen on 127.0.0.1" in proc.stderr, proc.stderr


def test_non_loopback_without_token_warns(tmp_path: Path):
    proc = subprocess.Popen([sys.executable, "-c", SERVE_STANDIN, "serve", str(tmp_path), "--port", "0",
                             "--host", "0.0.0.0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "serving" in proc.stdout.readline()
        time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "without --token" in err
