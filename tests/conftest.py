"""Shared test helpers: a writable copy of the real SO-101 fixture, and running the CLI in-process."""

from __future__ import annotations

import os
import shutil
import stat
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MUJOCO_GL", "egl")

# The real SO-101 recording (see its SOURCE.md), vendored so a fresh clone tests on its own.
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "so101_real_v30"


@pytest.fixture
def real_v30(tmp_path: Path) -> Path:
    """A writable copy of the real LeRobot v3.0 SO-101 recording (videos absent)."""
    dst = tmp_path / "so101_real_v30"
    shutil.copytree(FIXTURE, dst)
    for path in [dst, *dst.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)
    return dst


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """Run `sigma ARGS` in this process; returns (exit code, stdout, stderr)."""
    from sigma_vla.cli.main import main

    old = sys.argv
    sys.argv = ["sigma", *map(str, args)]
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = old
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def one_torch_thread():
    """Tiny-tensor tests run single-threaded: intra-op threads only add contention on a busy 2-core machine (a
    20 ms step can take seconds). tests/models and tests/training use it for every test."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> tuple[Path, Path]:
    """(shards, run): miniature shards with base actions and a Sigma run trained 2 steps on them (tiny config).
    Tests that damage them copy them first."""
    import torch

    from sigma_vla.training.run import train_sigma
    from tests.training.fake_shards import write_fake_shards

    root = tmp_path_factory.mktemp("tiny_run")
    shards = write_fake_shards(root / "shards", n_train=16, n_val=4, with_base=True)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_sigma(shards, root / "run", "tiny", {"steps": 2, "batch_size": 4}, progress=False)
    finally:
        torch.set_num_threads(before)
    return shards, root / "run"
