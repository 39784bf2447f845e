"""The training loop's machinery on a toy task: resume equals a straight run, atomic checkpoints, pruning,
non-finite steps, logs and the optimizer report."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from sigma_vla.training import checkpoint as ckpt
from sigma_vla.training.config import TrainConfig
from sigma_vla.training.logs import read_csv
from sigma_vla.training.trainer import NonFiniteLossError, train

from toy_training import ToyTask, toy_data

# constant LR after warm-up: a 10-step run then has the same schedule as the first half of a 20-step run
CFG = TrainConfig(steps=20, batch_size=8, grad_accum=2, lr=1e-2, warmup_steps=3, lr_schedule="constant",
                  checkpoint_every=5, keep_last=2, val_every=5, val_batches=2)


def _weights(task):
    return {k: v.clone() for k, v in task.model.state_dict().items()}


def test_resume_equals_straight_run(tmp_path):
    straight = ToyTask()
    res_a = train(straight, toy_data(), toy_data(16, 2), CFG, tmp_path / "a", progress=False)
    first = ToyTask()
    train(first, toy_data(), toy_data(16, 2), CFG.replace(steps=10), tmp_path / "b", progress=False)
    second = ToyTask()  # a fresh process would start from fresh weights and RNG
    torch.manual_seed(1234)
    res_b = train(second, toy_data(), toy_data(16, 2), CFG, tmp_path / "b", resume=True, progress=False,
                  extend_steps=True)  # 10 -> 20 steps: constant LR, so the extension matches the straight run
    assert [r["loss"] for r in res_a.history[10:]] == [r["loss"] for r in res_b.history]
    for k, v in _weights(straight).items():
        assert torch.equal(v, _weights(second)[k]), k
    log_a, log_b = read_csv(tmp_path / "a/train_log.csv"), read_csv(tmp_path / "b/train_log.csv")
    assert [r["step"] for r in log_b] == [str(i) for i in range(20)]
    assert [r["loss"] for r in log_a] == [r["loss"] for r in log_b]
    assert [r["step"] for r in read_csv(tmp_path / "b/val_log.csv")] == ["5", "10", "15", "20"]


def test_checkpoint_layout_and_pruning(tmp_path):
    stranger = tmp_path / "run/checkpoints/step_000001"  # not ours: never deleted
    stranger.mkdir(parents=True)
    train(ToyTask(), toy_data(), None, CFG.replace(steps=12), tmp_path / "run", progress=False)
    kept = ckpt.complete_checkpoints(tmp_path / "run")
    assert [p.name for p in kept] == ["step_000010", "step_000012"]
    assert stranger.exists()
    files = sorted(p.name for p in kept[-1].iterdir())
    assert files == ["checkpoint.json", "model.safetensors", "optimizer.json", "optimizer.safetensors",
                     "rng_rank0.json", "rng_rank0.safetensors", "scheduler.json", "trainer_state.json"]
    state = json.loads((kept[-1] / "trainer_state.json").read_text())
    assert state["step"] == 12 and state["micro_batch"] == 24
    assert not list((tmp_path / "run/checkpoints").glob(".tmp-*"))
    report = json.loads((tmp_path / "run/param_report.json").read_text())
    assert report["trainable"] == 18 and report["total"] == 58


def test_incomplete_checkpoint_is_ignored(tmp_path):
    train(ToyTask(), toy_data(), None, CFG.replace(steps=5), tmp_path, progress=False)
    tmp = ckpt.begin(tmp_path, 7)  # a crash mid-save leaves only a temp dir
    (tmp / "model.safetensors").write_bytes(b"partial")
    assert ckpt.latest_checkpoint(tmp_path).name == "step_000005"
    ckpt.prune(tmp_path, keep_last=2)
    assert tmp.exists()  # newer than the newest complete one: left for inspection, not ours to judge


def test_nonfinite_step_is_skipped(tmp_path):
    with pytest.warns(RuntimeWarning, match="non-finite"):
        res = train(ToyTask(poison_steps={3}), toy_data(), None, CFG.replace(steps=6), tmp_path, progress=False)
    assert res.steps == 6 and res.skipped_steps == 1
    assert all(torch.isfinite(p).all() for p in res_params(res))


def res_params(res):
    from safetensors.torch import load_file

    return load_file(str(ckpt.latest_checkpoint(res.run_dir) / "model.safetensors")).values()


def test_nonfinite_streak_stops_with_last_good_checkpoint(tmp_path):
    task = ToyTask(poison_steps={5}, persistent=True)
    with pytest.warns(RuntimeWarning), pytest.raises(NonFiniteLossError, match="3 non-finite steps in a row"):
        train(task, toy_data(), None, CFG.replace(steps=10, max_nonfinite=3), tmp_path, progress=False)
    assert ckpt.latest_checkpoint(tmp_path).name == "step_000005"
    assert all(torch.isfinite(p).all() for p in task.model.parameters())


def test_full_trainable_reports_more(tmp_path):
    res = train(ToyTask(), toy_data(), None, CFG.replace(steps=1, trainable="full"), tmp_path, progress=False)
    assert json.loads((tmp_path / "param_report.json").read_text())["trainable"] == 58 and res.steps == 1


class _Unused(nn.Module):
    """A weight no loss reaches; loss_free says whether the model expects that (as models/action.py's fusion)."""

    def __init__(self, loss_free: bool):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(2))
        self.loss_free = loss_free


@pytest.mark.parametrize("loss_free", [True, False])
def test_the_start_prints_totals_and_only_leftovers_the_model_does_not_expect(loss_free, tmp_path, capsys):
    task = ToyTask()
    task.model.extra = _Unused(loss_free)
    groups = task.param_groups
    task.param_groups = lambda trainable: {**groups(trainable),
                                           "extra": list(task.model.extra.named_parameters(prefix="extra"))}
    train(task, toy_data(), None, CFG.replace(steps=1), tmp_path, progress=False)
    out = capsys.readouterr().out
    assert "trainable 18 of 60 parameters" in out and "optimizer groups" not in out
    assert ("extra.w" in out) is (not loss_free)
    report = json.loads((tmp_path / "param_report.json").read_text())
    assert report["unreached"] == ["extra.w"] and "optimizer groups: heads" in report["text"]


def test_sigma_expects_no_loss_on_its_fusion_weights_only():
    from sigma_vla.models import SigmaConfig, SigmaModel
    from sigma_vla.training.trainer import expected_unreached

    assert expected_unreached(SigmaModel(SigmaConfig.tiny())) == {"action.fusion.logits"}
