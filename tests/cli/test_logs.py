"""Logs a person can read: written to a file, long commands print plain lines (no carriage-return redraws), the
validation loss is printed when it is computed, and Ctrl-C in `sigma train` says where it stopped and how to resume.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sigma_vla.progress import Progress, duration, plain_line
from tests.training.fake_shards import write_fake_shards

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]), "OMP_NUM_THREADS": "1"}


def test_a_plain_line_has_step_fields_rate_and_eta():
    line = plain_line("train", 300, 1200, "step", 100.0, {"loss": "0.41", "lr": "4.8e-04"}, start=100)
    assert line == "train 300/1200 (25%) | loss 0.41 | lr 4.8e-04 | 2.00 step/s | ETA 7m30s | elapsed 1m40s"
    assert "s/ep" in plain_line("rollout", 2, 10, "ep", 8.0, {})  # slow work reads as seconds per item
    assert duration(4000) == "1h06m" and duration(12) == "12s"


def test_off_a_terminal_progress_prints_lines_not_redraws():
    stream = io.StringIO()  # not a TTY, as `> log 2>&1`
    bar = Progress(total=5, desc="train", unit="step", stream=stream, every_s=0.0)
    for i in range(5):
        bar.set_postfix(loss=f"{1 / (i + 1):.3g}")
        bar.update(1)
    bar.note("step 5: validation loss 0.2")
    bar.close()
    text = stream.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert lines[0].startswith("train 1/5 (20%) | loss 1")
    assert "step 5: validation loss 0.2" in lines
    assert len(lines) == 7  # five updates, the note, the final line at close


def test_disabled_progress_prints_only_notes():
    stream = io.StringIO()
    bar = Progress(range(3), desc="eval", stream=stream, enabled=False, every_s=0.0)
    assert list(bar) == [0, 1, 2]
    bar.note("kept")
    assert stream.getvalue() == "kept\n"


def _train(shards: Path, run: Path, *extra: str, **popen) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "sigma_vla.cli.main", "train", str(shards), "--out", str(run), "--config", "tiny",
           "--batch-size", "4", *extra]
    return subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def test_sigma_train_into_a_file_gives_short_lines_and_the_validation_loss(tmp_path):
    shards = write_fake_shards(tmp_path / "shards", n_train=16, n_val=4, with_base=True)
    proc = _train(shards, tmp_path / "run", "--steps", "20")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "\r" not in out
    assert max(len(line) for line in out.splitlines()) <= 200
    assert "step 10: validation loss" in out and "step 20: validation loss" in out  # tiny validates every 10
    assert any(line.startswith("train 20/20 (100%) | loss") for line in out.splitlines())


def test_ctrl_c_in_sigma_train_says_where_it_stopped_and_how_to_resume(tmp_path):
    shards = write_fake_shards(tmp_path / "shards", n_train=16, n_val=4, with_base=True)
    run = tmp_path / "run"
    proc = _train(shards, run, "--steps", "100000", "--checkpoint-every", "5")
    deadline = time.time() + 240
    while not list((run / "checkpoints").glob("step_*/checkpoint.json")) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    tail = out.strip().splitlines()[-2:]
    assert tail[0].startswith("interrupted at step ") and " of 100000; last checkpoint " in tail[0], out
    assert tail[1] == (f"resume with: sigma train {shards} --out {run} --config tiny --batch-size 4 --steps 100000 "
                       "--checkpoint-every 5 --resume")
