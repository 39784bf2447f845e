"""The control group for a LeRobot base END TO END THROUGH THE CLI: `sigma train --finetune-base lerobot:DIR`
fine-tunes LeRobot's ACT / Diffusion (random weights, saved as a user's checkpoint) with its own loss through our
trainer, saves a LeRobot checkpoint in RUN/model, resumes, and loads back as a base for `sigma eval
--finetuned-base` and `sigma rollout --policy base`."""

from __future__ import annotations

import json
import math

import pytest
import torch

from sigma_vla.outdir import read_csv
from tests.conftest import run_cli
from tests.lerobot.test_cli import TRAIN, saved_policy

pytest.importorskip("lerobot", reason="LeRobot is not installed here: `make test-lerobot` builds .venv-lerobot")
pytestmark = pytest.mark.lerobot


def weights(directory) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(directory / "model.safetensors"))


def changed(before: dict, after: dict) -> int:
    assert before.keys() == after.keys()
    return sum(not torch.equal(before[k], after[k]) for k in before)


def finite_losses(run) -> list[float]:
    losses = [float(row["loss"]) for row in read_csv(run / "train_log.csv")]
    assert losses and all(math.isfinite(x) for x in losses), losses
    return losses


@pytest.mark.parametrize("kind", ["act", "diffusion"])
def test_lerobot_base_fine_tuned_as_the_control_group_through_the_cli(kind, tmp_path, capsys):
    from sigma_vla.interop.fingerprint import fingerprint

    shards, checkpoint = saved_policy(kind, tmp_path, capsys)
    ref = f"lerobot:{checkpoint}"
    assert run_cli(["base-actions", shards, "--base", ref, "--no-progress"], capsys)[0] == 0

    ft = tmp_path / "ft"
    code, out, err = run_cli(["train", shards, "--out", ft, "--finetune-base", ref, *TRAIN], capsys)
    assert code == 0, err
    assert "trained 2 steps (0 skipped)" in out and len(finite_losses(ft)) == 2
    assert read_csv(ft / "val_log.csv")[-1]["val_loss"]
    model = ft / "model"
    assert (model / "policy_preprocessor.json").is_file() and (model / "policy_postprocessor.json").is_file()
    record = json.loads((ft / "policy.json").read_text())["model"]
    assert record == {"format": "lerobot", "path": "model", "fingerprint": fingerprint(model), "source": ref,
                      "source_fingerprint": fingerprint(checkpoint)}
    tuned = weights(model)
    assert changed(weights(checkpoint), tuned) > 0  # the policy's own loss moved its weights
    assert not list(ft.glob(".*sigma-tmp"))  # RUN/model was written atomically

    code, out, err = run_cli(["train", shards, "--out", ft, "--finetune-base", ref, *TRAIN, "--resume",
                              "--steps", "4", "--extend-steps"], capsys)
    assert code == 0, err
    assert "resumed from" in out and "trained 4 steps" in out
    assert [int(r["step"]) for r in read_csv(ft / "train_log.csv")] == [0, 1, 2, 3] and finite_losses(ft)
    assert changed(tuned, weights(model)) > 0

    sigma = tmp_path / "sigma"
    assert run_cli(["train", shards, "--out", sigma, *TRAIN], capsys)[0] == 0
    code, out, err = run_cli(["eval", sigma, shards, "--out", tmp_path / "eval", "--split", "val", "--bootstrap",
                              "10", "--finetuned-base", ft], capsys)
    assert code == 0, err
    group = json.loads((tmp_path / "eval" / "sigma_eval_report.json").read_text())["groups"]["base_finetuned"]
    assert math.isfinite(group["avg_mse_chunk"])
    pytest.importorskip("mujoco")
    code, out, err = run_cli(["rollout", ft, "--policy", "base", "--out", tmp_path / "roll", "--episodes", "1",
                              "--max-steps", "3", "--animations", "0"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "roll" / "rollouts.json").read_text())


def test_keep_base_instruction_is_recorded_and_read_back(tmp_path, capsys):
    from sigma_vla.inference.policy import load_policy
    from sigma_vla.sim.instructions import GENERIC_INSTRUCTION

    shards, checkpoint = saved_policy("act", tmp_path, capsys)
    ft = tmp_path / "ft"
    code, _, err = run_cli(["train", shards, "--out", ft, "--finetune-base", f"lerobot:{checkpoint}", *TRAIN,
                            "--steps", "1", "--keep-base-instruction"], capsys)
    assert code == 0, err
    assert json.loads((ft / "policy.json").read_text())["text"]["instruction"] == GENERIC_INSTRUCTION
    assert load_policy(ft, mode="base").base.instruction == GENERIC_INSTRUCTION


def test_features_that_differ_are_one_line_and_leave_no_run(tmp_path, capsys):
    shards, checkpoint = saved_policy("act", tmp_path, capsys, state_dim=8)
    code, _, err = run_cli(["train", shards, "--out", tmp_path / "ft", "--finetune-base", f"lerobot:{checkpoint}",
                            *TRAIN], capsys)
    line = err.strip()
    have = json.loads((shards / "meta.json").read_text())["state_dim"]  # the simulator's state, whatever it grows to
    assert code == 2 and "\n" not in line and f"state dim: the shards have {have}" in line and "declares 8" in line, err
    assert not (tmp_path / "ft").exists()
