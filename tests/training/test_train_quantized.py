"""`sigma train --quantize nf4|int8` end to end at tiny size: the loss falls, resume equals straight, the run records
its choice, reloads with the same outputs and serves; bad or impossible choices are one line
(models/quantize.py, docs/gpu.md "A 24 GB card: nf4 + gradient checkpointing")."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from fake_shards import write_fake_shards
from safetensors.torch import load_file

from sigma_vla.errors import SigmaError
from sigma_vla.training.run import train_sigma
from tests.conftest import run_cli

bnb = pytest.importorskip("bitsandbytes")
LAYER = {"nf4": bnb.nn.Linear4bit, "int8": bnb.nn.Linear8bitLt}
FAST = {"steps": 12, "batch_size": 4, "checkpoint_every": 4, "val_every": 0}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_fake_shards(tmp_path_factory.mktemp("shards") / "s", n_train=16, n_val=4, with_base=True)


def _weights(run):
    return load_file(str(run / "model/model.safetensors"))


@pytest.mark.parametrize("mode", ["nf4", "int8"])
def test_quantized_tiny_training_learns(shards, tmp_path, mode):
    res = train_sigma(shards, tmp_path / "run", "tiny", {"steps": 25, "batch_size": 4, "lr": 3e-3, "val_every": 0},
                      progress=False, quantize=mode)
    losses = [r["loss"] for r in res.history]
    assert len(losses) == 25 and sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses
    config = json.loads((tmp_path / "run/model/config.json").read_text())["config"]
    assert config["backbone"]["quantize"] == mode
    run_json = json.loads((tmp_path / "run/run.json").read_text())
    assert run_json["model_config"]["backbone"]["quantize"] == mode
    assert any(k.startswith("backbone.") and "lora_" not in k for k in _weights(tmp_path / "run"))  # random: saved


@pytest.mark.parametrize("mode", ["nf4", "int8"])
def test_quantized_resume_equals_straight(shards, tmp_path, mode):
    """As test_train_run.py::test_resume_equals_straight_tiny for the float model: 6 steps, stop, resume (the run's
    --quantize read back from run.json), 6 more == 12 straight; every weight equal, the packed ones included."""
    straight = train_sigma(shards, tmp_path / "a", "tiny", FAST, progress=False, quantize=mode)
    train_sigma(shards, tmp_path / "b", "tiny", FAST, progress=False, stop_after=6, quantize=mode)
    resumed = train_sigma(shards, tmp_path / "b", "tiny", FAST, resume=True, progress=False)
    assert [r["loss"] for r in straight.history[6:]] == [r["loss"] for r in resumed.history]
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert any(k.endswith(("weight.absmax", ".SCB")) for k in wa)
    other = "int8" if mode == "nf4" else "nf4"
    with pytest.raises(SigmaError, match=f"cannot resume with --quantize {other}: this run was trained with {mode}"):
        train_sigma(shards, tmp_path / "b", "tiny", FAST, resume=True, progress=False, quantize=other)


def test_gradient_checkpointing_run_equals_plain_and_may_change_on_resume(shards, tmp_path):
    """--gradient-checkpointing changes memory, not what is trained: the same losses; free to differ on resume."""
    plain = train_sigma(shards, tmp_path / "a", "tiny", FAST, progress=False, quantize="nf4")
    train_sigma(shards, tmp_path / "b", "tiny", {**FAST, "gradient_checkpointing": True}, progress=False,
                stop_after=6, quantize="nf4")
    resumed = train_sigma(shards, tmp_path / "b", "tiny", {**FAST, "gradient_checkpointing": False}, resume=True,
                          progress=False)
    assert [r["loss"] for r in resumed.history] == pytest.approx([r["loss"] for r in plain.history[6:]], rel=1e-5)


def test_a_quantized_run_reloads_and_serves(tmp_path):
    """A run over a real base (so it serves): RUN/model rebuilds Linear4bit layers, two loads answer alike and the
    server's policy gives the same actions as `load_policy`."""
    from sigma_vla.bases.actions import write_base_actions
    from sigma_vla.bases.policy import load_base_policy
    from sigma_vla.inference.policy import load_policy, load_run_model
    from sigma_vla.interop.fingerprint import fingerprint
    from sigma_vla.training.run import train_base
    from tests.inference.test_portable_run import BASE_OPTIONS, _actions, _served_actions, _so101_shards

    data = _so101_shards(tmp_path / "shards", 0, None)
    train_base(data, tmp_path / "base", None, split="train", steps=2, batch_size=4, progress=False,
               model_options=BASE_OPTIONS)
    write_base_actions(data, load_base_policy(tmp_path / "base"), fingerprint(tmp_path / "base"),
                       source=str((tmp_path / "base").resolve()))
    run = tmp_path / "run"
    train_sigma(data, run, "tiny", {"steps": 2, "batch_size": 4}, progress=False, quantize="nf4")
    model = load_run_model(run)
    assert sum(isinstance(m, LAYER["nf4"]) for m in model.backbone.modules()) == 12
    first = _actions(load_policy(run))
    assert all(a.shape[-1] == 4 and (a == b).all() for a, b in zip(first, _actions(load_policy(run))))
    assert all((a == b).all() for a, b in zip(first, _served_actions(run)))


def test_cli_quantize(shards, tmp_path, capsys, monkeypatch):
    """`sigma train SHARDS --config tiny --quantize nf4 --steps 5` works; a bad mode, --finetune-base, and a missing
    bitsandbytes are one line each, and leave no run."""
    args = ["train", shards, "--config", "tiny", "--batch-size", "4", "--no-progress"]
    code, out, err = run_cli([*args, "--out", tmp_path / "run", "--quantize", "nf4", "--steps", "5",
                              "--gradient-checkpointing"], capsys)
    assert code == 0 and "trained 5 steps" in out, err
    assert json.loads((tmp_path / "run/train_config.json").read_text())["gradient_checkpointing"] is True
    code, _, err = run_cli([*args, "--out", tmp_path / "bad", "--quantize", "fp4"], capsys)
    assert code == 2 and err.count("\n") == 1 and "--quantize" in err and "nf4" in err, err
    code, _, err = run_cli([*args, "--out", tmp_path / "bad", "--quantize", "nf4", "--finetune-base",
                            tmp_path / "base"], capsys)
    assert code == 2 and err.count("\n") == 1 and "control group" in err, err
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # `import bitsandbytes` now raises ImportError
    code, _, err = run_cli([*args, "--out", tmp_path / "bad", "--quantize", "nf4"], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "--quantize needs bitsandbytes: pip install -c constraints.txt 'sigma-vla[quant]'" in err
    code, _, err = run_cli(["eval", tmp_path / "run", shards, "--out", tmp_path / "eval", "--split", "val"], capsys)
    assert code == 2 and err.count("\n") == 1 and "needs bitsandbytes" in err, err  # the run's own choice
    assert not (tmp_path / "bad").exists()
