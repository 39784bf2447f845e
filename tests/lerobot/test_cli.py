"""LeRobot's ACT and Diffusion (random weights, saved as a user's checkpoint: `save_pretrained` + processors) as
Sigma's base END TO END THROUGH THE CLI: `sigma base-actions --base lerobot:DIR` (resumable), `sigma train`, `sigma
eval`, `sigma rollout` in the SO-101 simulator and a `sigma serve` round trip, all reloading the base by the
reference the run recorded. Features that disagree with the shards' meta.json are one line, exit 2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sigma_vla.data.shards import read_meta
from sigma_vla.sim.so101 import STATE_NAMES
from tests.conftest import run_cli
from tests.inference.test_portable_run import _obs, _so101_shards
from tests.lerobot.conftest import save_checkpoint

pytest.importorskip("lerobot", reason="LeRobot is not installed here: `make test-lerobot` builds .venv-lerobot")
pytestmark = pytest.mark.lerobot
TRAIN = ["--config", "tiny", "--steps", "2", "--batch-size", "4", "--no-progress"]


def make_policy(kind: str, meta: dict, **features):
    if kind == "act":
        from tests.lerobot.test_act import make_act

        return make_act(meta, **features)
    pytest.importorskip("diffusers", reason="Diffusion needs lerobot[diffusion] (diffusers)")
    from tests.lerobot.test_diffusion import make_diffusion

    return make_diffusion(meta, **features)


def saved_policy(kind: str, tmp_path: Path, capsys, **features) -> tuple[Path, Path]:
    """(shards shaped like the simulator's, a `kind` checkpoint saved on them with its processors)."""
    shards = _so101_shards(tmp_path / "shards", 0, capsys)
    return shards, save_checkpoint(make_policy(kind, read_meta(shards), **features), shards, tmp_path / kind)


def served_actions(run: Path) -> np.ndarray:
    """`sigma serve RUN` in its own process, asked once by the robot-side client."""
    from sigma_vla_client import PolicyClient

    proc = subprocess.Popen([sys.executable, "-m", "sigma_vla.cli.main", "serve", str(run), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = ""
        while "serving" not in line:  # LeRobot prints while loading; then "serving RUN on ws://127.0.0.1:PORT/"
            line = proc.stdout.readline()
            assert line or proc.poll() is None, proc.communicate(timeout=10)[1]
        port = int(line.split("ws://127.0.0.1:")[1].split("/")[0])
        with PolicyClient("127.0.0.1", port, retries=0) as client:
            client.reset()
            actions = client.infer(_obs(0), "put it far left")["actions"]
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return actions


@pytest.mark.parametrize("kind", ["act", "diffusion"])
def test_lerobot_base_end_to_end_through_the_cli(kind, tmp_path, capsys):
    shards, checkpoint = saved_policy(kind, tmp_path, capsys)
    ref = f"lerobot:{checkpoint}"
    code, out, err = run_cli(["base-actions", shards, "--base", ref, "--batch-size", "8"], capsys)
    assert code == 0, err
    assert "base actions in 1 shards (1 written, 0 already done, 20 windows)" in out
    assert "base actions" in err  # the progress bar
    code, out, err = run_cli(["base-actions", shards, "--base", ref, "--no-progress"], capsys)
    assert code == 0 and "(0 written, 1 already done" in out, err  # resumed by fingerprint: nothing to redo
    assert read_meta(shards)["base_actions"]["base"] == ref

    run = tmp_path / "run"
    code, out, err = run_cli(["train", shards, "--out", run, *TRAIN], capsys)
    assert code == 0, err
    spec = json.loads((run / "policy.json").read_text())
    assert spec["base"]["ref"] == ref and len(spec["base"]["fingerprint"]) == 16
    assert not (run / "base").exists()  # a LeRobot base is reloaded by its reference, never copied

    code, out, err = run_cli(["eval", run, shards, "--out", tmp_path / "eval", "--split", "val",
                              "--bootstrap", "10"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "eval" / "sigma_eval_report.json").read_text())["groups"]
    pytest.importorskip("mujoco")
    code, out, err = run_cli(["rollout", run, "--policy", "sigma+adapter", "--out", tmp_path / "roll",
                              "--episodes", "1", "--max-steps", "3", "--animations", "0"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "roll" / "rollouts.json").read_text())
    actions = served_actions(run)
    assert actions.shape == (spec["chunk"], 4) and np.isfinite(actions).all()


@pytest.mark.parametrize("features, words", [
    ({"action_dim": 6}, ["action_dim", "action dim: the shards have 4", "declares 6"]),
    ({"state_dim": 8}, ["state_dim", f"state dim: the shards have {len(STATE_NAMES)}", "declares 8"]),
    ({"cameras": ["observation.images.top"]}, ["cameras", "observation.images.front", "observation.images.top"]),
    ({"image_size": 32}, ["image_size", "16x16 px", "32x32", "--image-size 32"]),
])
def test_features_that_differ_from_meta_json_are_one_line_exit_2(features, words, tmp_path, capsys):
    shards, checkpoint = saved_policy("act", tmp_path, capsys, **features)
    code, out, err = run_cli(["base-actions", shards, "--base", f"lerobot:{checkpoint}"], capsys)
    line = err.strip()
    assert code == 2 and "\n" not in line and line.startswith("error: "), err
    assert "meta.json" in line and all(w in line for w in words), line
    assert "base_actions" not in read_meta(shards)


def test_a_changed_checkpoint_is_refused_by_the_run(tmp_path, capsys):
    shards, checkpoint = saved_policy("act", tmp_path, capsys)
    assert run_cli(["base-actions", shards, "--base", f"lerobot:{checkpoint}", "--no-progress"], capsys)[0] == 0
    assert run_cli(["train", shards, "--out", tmp_path / "run", *TRAIN], capsys)[0] == 0
    config = json.loads((checkpoint / "config.json").read_text())
    (checkpoint / "config.json").write_text(json.dumps({**config, "temporal_ensemble_coeff": 0.01}))
    code, _, err = run_cli(["rollout", tmp_path / "run", "--policy", "sigma+adapter", "--out", tmp_path / "roll",
                            "--episodes", "1"], capsys)
    assert code == 2 and "base.fingerprint" in err and "the run was trained over" in err, err


def test_a_hub_id_outside_the_local_cache_is_one_line(tmp_path, capsys):
    shards = _so101_shards(tmp_path / "shards", 0, capsys)
    code, _, err = run_cli(["base-actions", shards, "--base", "lerobot:nobody/not-cached-policy"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "not in the local Hugging Face cache" in err and "hf download nobody/not-cached-policy" in err
