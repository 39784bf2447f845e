"""The Sigma training run end to end on the tiny config and miniature shards: Table 1 log, resume == straight,
the base control group, the CLI and its one-line errors, plot-losses."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from fake_shards import write_fake_shards
from safetensors.torch import load_file

from sigma_vla.training.logs import TABLE1_COLUMNS, TRAIN_COLUMNS, read_csv
from sigma_vla.training.run import finetune_base, train_sigma

FAST = {"steps": 20, "batch_size": 4, "checkpoint_every": 5}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_fake_shards(tmp_path_factory.mktemp("shards") / "s", n_train=24, n_val=4, with_base=True)


def _weights(run):
    return load_file(str(run / "model/model.safetensors"))


def test_resume_equals_straight_tiny(shards, tmp_path):
    """10 steps, stop, resume, 10 more == 20 straight steps: same losses, same weights (paper-scale check of
    checkpoint completeness: model, optimizer, scheduler, RNG, data position, semantic memory bank)."""
    straight = train_sigma(shards, tmp_path / "a", "tiny", FAST, progress=False)
    train_sigma(shards, tmp_path / "b", "tiny", FAST, progress=False, stop_after=10)
    assert not (tmp_path / "b/model").exists()  # not finished yet
    resumed = train_sigma(shards, tmp_path / "b", "tiny", FAST, resume=True, progress=False)
    assert [r["loss"] for r in straight.history[10:]] == [r["loss"] for r in resumed.history]
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    log = read_csv(tmp_path / "b/train_log.csv")
    assert list(log[0]) == TRAIN_COLUMNS and list(log[0])[: len(TABLE1_COLUMNS)] == TABLE1_COLUMNS
    assert [int(r["step"]) for r in log] == list(range(20))
    assert [r["loss"] for r in log] == [r["loss"] for r in read_csv(tmp_path / "a/train_log.csv")]
    assert float(log[0]["w_sem"]) == pytest.approx(0.1) and float(log[-1]["w_tau"]) == pytest.approx(0.03)
    assert float(log[0]["lr"]) == pytest.approx(1e-3 / 2)  # the rate step 0 used: first of 2 warm-up steps
    val = read_csv(tmp_path / "b/val_log.csv")
    assert [r["step"] for r in val] == ["10", "20"] and all(float(r["val_loss"]) > 0 for r in val)


def test_fresh_run_refuses_to_overwrite_checkpoints(shards, tmp_path):
    from sigma_vla.errors import SigmaError

    train_sigma(shards, tmp_path, "tiny", {"steps": 1, "batch_size": 4}, progress=False)
    with pytest.raises(SigmaError, match="--resume"):
        train_sigma(shards, tmp_path, "tiny", {"steps": 1, "batch_size": 4}, progress=False)


def test_base_finetune_control_group(shards, tmp_path):
    from sigma_vla.bases.policy import TinyBaseConfig, TinyBasePolicy

    torch.manual_seed(0)
    TinyBasePolicy(TinyBaseConfig.tiny(instruction="pick and place")).save_pretrained(tmp_path / "base")
    res = finetune_base(shards, tmp_path / "run", tmp_path / "base", "tiny", {"steps": 4, "batch_size": 4},
                        progress=False)
    assert res.steps == 4 and (tmp_path / "run/model/model.safetensors").exists()
    # the control group reads each window's own instruction, as Sigma does
    assert json.loads((tmp_path / "run/model/config.json").read_text())["config"]["instruction"] is None
    tuned = TinyBasePolicy.from_pretrained(tmp_path / "run/model")
    assert not torch.equal(tuned.head.weight, TinyBasePolicy.from_pretrained(tmp_path / "base").head.weight)
    report = json.loads((tmp_path / "run/param_report.json").read_text())
    assert "base" in report["groups"] and report["trainable"] < report["total"]  # text table stays frozen
    assert read_csv(tmp_path / "run/train_log.csv")[0]["L_act"] != ""


def _cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """Run `sigma ARGS` in-process (as the console script does): (exit code, stdout, stderr)."""
    from sigma_vla.cli.main import main

    monkeypatch.setattr(sys, "argv", ["sigma", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code or 0
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_bad_input_is_one_line(tmp_path, shards, monkeypatch, capsys):
    code, _, err = _cli(monkeypatch, capsys, "train", tmp_path / "nope", "--out", tmp_path / "run",
                        "--config", "tiny")
    assert code == 2 and err.count("\n") == 1 and "not a directory" in err
    code, _, err = _cli(monkeypatch, capsys, "train", shards, "--out", tmp_path / "run", "--config", "huge")
    assert code == 2 and "unknown experiment 'huge'" in err
    code, _, err = _cli(monkeypatch, capsys, "train", shards, "--out", tmp_path / "run", "--config", "tiny",
                        "--mixed-precision", "fp8")
    assert code == 2 and "--mixed-precision" in err
    code, _, err = _cli(monkeypatch, capsys, "train", shards, "--out", tmp_path / "run", "--config", "tiny",
                        "--lr", "-1")
    assert code == 2 and "lr must be > 0" in err and err.count("\n") == 1
    code, _, err = _cli(monkeypatch, capsys, "train", shards, "--out", tmp_path / "run", "--config", "tiny",
                        "--residual-lr-scale", "0")
    assert code == 2 and "residual_lr_scale must be > 0" in err and err.count("\n") == 1
    code, _, err = _cli(monkeypatch, capsys, "plot-losses", tmp_path / "empty")
    assert code == 2 and "train_log.csv" in err


def test_cli_train_bf16_accum_and_plot(tmp_path, shards, monkeypatch, capsys):
    code, out, err = _cli(monkeypatch, capsys, "train", shards, "--out", tmp_path / "run", "--config", "tiny",
                          "--steps", "2", "--batch-size", "4", "--grad-accum", "2", "--mixed-precision", "bf16",
                          "--no-progress")
    assert code == 0, err
    assert "trained 2 steps" in out and "trainable" in out
    assert json.loads((tmp_path / "run/train_config.json").read_text())["mixed_precision"] == "bf16"
    code, out, err = _cli(monkeypatch, capsys, "plot-losses", tmp_path / "run")
    assert code == 0, err
    assert (tmp_path / "run/loss_dynamics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_resume_checks_what_it_resumes(tmp_path, shards, monkeypatch, capsys):
    """--resume continues with the run's own settings; another shards directory or --lr is one line naming it;
    more --steps needs --extend-steps."""
    import shutil

    run = tmp_path / "run"
    args = ["train", shards, "--out", run, "--config", "tiny", "--batch-size", "4", "--no-progress"]
    assert _cli(monkeypatch, capsys, *args, "--steps", "2")[0] == 0
    other = shutil.copytree(shards, tmp_path / "other")
    for bad, field in ((["train", other, "--out", run, "--config", "tiny", "--resume"], "shards"),
                       ([*args, "--resume", "--lr", "0.5"], "--lr"), ([*args, "--resume", "--steps", "3"], "--steps")):
        code, _, err = _cli(monkeypatch, capsys, *bad)
        assert code == 2 and err.count("\n") == 1 and f"field '{field}'" in err and "Traceback" not in err, err
    code, out, err = _cli(monkeypatch, capsys, *args, "--resume", "--steps", "3", "--extend-steps")
    assert code == 0 and "trained 3 steps" in out, err
    saved = json.loads((run / "train_config.json").read_text())
    assert saved["steps"] == 3 and saved["schedule_steps"] == 2 and saved["batch_size"] == 4
    code, out, err = _cli(monkeypatch, capsys, "train", shards, "--out", run, "--config", "tiny", "--resume",
                          "--no-progress")  # no options: the run's own settings, nothing left to do
    assert code == 0 and "trained 3 steps" in out, err


def test_shards_without_base_actions_are_refused_unless_no_base(tmp_path, capsys):
    """`sigma train` on shards without base actions used to succeed with `"base": null` in policy.json (a Sigma
    with no base under it) while `sigma eval` refused the same shards."""
    from tests.conftest import run_cli

    bare = write_fake_shards(tmp_path / "bare", n_train=8, n_val=0)
    code, _, err = run_cli(["train", bare, "--out", tmp_path / "run", "--config", "tiny", "--steps", "1",
                            "--no-progress"], capsys)
    assert code == 2 and "field 'base_actions'" in err and "--no-base" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
    code, _, err = run_cli(["train", bare, "--out", tmp_path / "run", "--config", "tiny", "--steps", "1",
                            "--batch-size", "4", "--no-base", "--no-progress"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "run/policy.json").read_text())["base"] is None


def test_paraphrases_change_what_sigma_and_the_control_read_and_resume_exactly(shards, tmp_path):
    """With --paraphrases a run trains on other wordings (its losses differ from the plain run's), and a resumed run
    draws the wordings the straight one drew."""
    from fake_shards import TASKS

    from sigma_vla.bases.policy import TinyBaseConfig, TinyBasePolicy

    table = tmp_path / "table.jsonl"
    table.write_text("".join(json.dumps({"task": t, "text": f"{t}, {w}"}) + "\n" for t in TASKS
                             for w in ("please", "when you can", "gently now")))
    opts = {"steps": 10, "batch_size": 4, "checkpoint_every": 5, "paraphrases": str(table)}
    plain = train_sigma(shards, tmp_path / "plain", "tiny", {**opts, "paraphrases": None}, progress=False)
    straight = train_sigma(shards, tmp_path / "a", "tiny", opts, progress=False)
    train_sigma(shards, tmp_path / "b", "tiny", opts, progress=False, stop_after=5)
    resumed = train_sigma(shards, tmp_path / "b", "tiny", opts, resume=True, progress=False)
    assert [r["loss"] for r in straight.history[5:]] == [r["loss"] for r in resumed.history]
    assert [r["loss"] for r in plain.history] != [r["loss"] for r in straight.history]
    torch.manual_seed(0)
    TinyBasePolicy(TinyBaseConfig.tiny()).save_pretrained(tmp_path / "base")
    runs = [finetune_base(shards, tmp_path / name, tmp_path / "base", "tiny", {**opts, "paraphrases": p},
                          progress=False) for name, p in (("c0", None), ("c1", str(table)))]
    assert [r["loss"] for r in runs[0].history] != [r["loss"] for r in runs[1].history]


def test_cli_paraphrases_bad_table_is_one_line(tmp_path, shards, monkeypatch, capsys):
    table = tmp_path / "table.jsonl"
    table.write_text('{"task": "stack the cups", "text": "pile the cups"}\n')
    code, _, err = _cli(monkeypatch, capsys, "train", shards, "--out", tmp_path / "run", "--config", "tiny",
                        "--steps", "1", "--paraphrases", table, "--no-progress")
    assert code == 2 and err.count("\n") == 1 and "table.jsonl" in err and "no line's task" in err
    assert not (tmp_path / "run" / "model").exists()
