"""--resume survives a damaged checkpoint and refuses to mix runs.

Checkpoints are verified against their manifest (sizes and sha256) before they are trusted; a damaged newest one
is set aside (renamed, never deleted) and the run continues from the newest verified one, with the same result as
a run that was never damaged. A kill while pruning leaves nothing the next prune does not finish.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from sigma_vla.errors import SigmaError
from sigma_vla.training import checkpoint as ckpt
from sigma_vla.training.config import TrainConfig
from sigma_vla.training.logs import read_csv
from sigma_vla.training.trainer import train

from toy_training import ToyTask, toy_data

CFG = TrainConfig(steps=20, batch_size=8, grad_accum=2, lr=1e-2, warmup_steps=3, checkpoint_every=5, keep_last=2,
                  val_every=0)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """20 straight steps: what every repaired resume must reproduce."""
    task = ToyTask()
    train(task, toy_data(), None, CFG, tmp_path_factory.mktemp("straight"), progress=False)
    return {k: v.clone() for k, v in task.model.state_dict().items()}


def _flip_bit(path):
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10  # inside the last tensor's bytes: the file still parses, only the checksum can tell
    path.write_bytes(bytes(data))


DAMAGE = {
    "truncated_weights": lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:50]),
    "emptied_trainer_state": lambda d: (d / "trainer_state.json").write_text(""),
    "corrupt_manifest_json": lambda d: (d / "checkpoint.json").write_text("{\"format\": "),
    "missing_manifest": lambda d: (d / "checkpoint.json").unlink(),  # used to end in FileExistsError at step 10
    "flipped_bit_in_weights": lambda d: _flip_bit(d / "model.safetensors"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_latest_checkpoint_falls_back_to_the_newest_verified(damage, straight, tmp_path, capsys):
    run = tmp_path / "run"
    train(ToyTask(), toy_data(), None, CFG, run, progress=False, stop_after=10)  # checkpoints 5 and 10
    DAMAGE[damage](run / "checkpoints/step_000010")
    torch.manual_seed(1234)  # a fresh process: nothing carried over but the files
    task = ToyTask()
    res = train(task, toy_data(), None, CFG, run, resume=True, progress=False)
    err = capsys.readouterr().err
    assert "step_000010 is damaged" in err and "continuing from the newest verified checkpoint, step_000005" in err
    assert res.steps == 20 and len(res.history) == 15  # steps 5..19 were trained again
    for k, v in straight.items():
        assert torch.equal(task.model.state_dict()[k], v), k
    assert [int(r["step"]) for r in read_csv(run / "train_log.csv")] == list(range(20))
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["step_000010.damaged", "step_000015", "step_000020"]  # set aside, never deleted


def test_no_verified_checkpoint_starts_over_and_says_so(tmp_path, capsys):
    run = tmp_path / "run"
    train(ToyTask(), toy_data(), None, CFG.replace(steps=5), run, progress=False)
    _flip_bit(run / "checkpoints/step_000005/model.safetensors")
    res = train(ToyTask(), toy_data(), None, CFG.replace(steps=5), run, resume=True, progress=False)
    assert "no verified checkpoint" in capsys.readouterr().err and len(res.history) == 5


def test_manifest_records_sizes_and_checksums(tmp_path):
    train(ToyTask(), toy_data(), None, CFG.replace(steps=5), tmp_path, progress=False)
    path = ckpt.latest_checkpoint(tmp_path)
    files = json.loads((path / "checkpoint.json").read_text())["files"]
    assert files["model.safetensors"]["size"] == (path / "model.safetensors").stat().st_size
    assert len(files["model.safetensors"]["sha256"]) == 64 and ckpt.verify(path) is None


class Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs."""


def test_kill_while_pruning_is_cleaned_up_by_the_next_prune(tmp_path, monkeypatch):
    run = tmp_path / "run"
    train(ToyTask(), toy_data(), None, CFG.replace(steps=10), run, progress=False)  # keeps 5 and 10
    real_unlink, calls = os.unlink, []

    def dying_unlink(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 3:
            raise Killed()
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", dying_unlink)
    with pytest.raises(Killed):
        ckpt.prune(run, keep_last=1)  # killed two files into deleting step_000005
    monkeypatch.setattr(os, "unlink", real_unlink)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) != ["step_000010"]  # something half-deleted
    ckpt.prune(run, keep_last=1)  # what the next save does
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_000010"]


def test_pruning_keeps_what_is_not_ours(tmp_path):
    train(ToyTask(), toy_data(), None, CFG.replace(steps=5), tmp_path, progress=False)
    stranger = tmp_path / "checkpoints/.deleting-notes"
    stranger.mkdir()
    (stranger / "mine.txt").write_text("keep me")
    ckpt.prune(tmp_path, keep_last=1)
    assert (stranger / "mine.txt").read_text() == "keep me"


@pytest.mark.parametrize("change, field", [({"lr": 2e-2}, "--lr"), ({"steps": 30}, "--steps"),
                                           ({"batch_size": 4}, "--batch-size"), ({"seed": 1}, "--seed"),
                                           ({"steps": 3}, "--steps")])
def test_resume_refuses_other_settings(change, field, tmp_path):
    train(ToyTask(), toy_data(), None, CFG.replace(steps=10), tmp_path, progress=False, stop_after=5)
    with pytest.raises(SigmaError, match=f"field '{field}': cannot resume with"):
        train(ToyTask(), toy_data(), None, CFG.replace(**{"steps": 10, **change}), tmp_path, resume=True,
              progress=False)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_000005"]


def test_extend_steps_keeps_the_schedule_it_was_planned_with(tmp_path):
    cosine = CFG.replace(steps=10, lr_schedule="cosine", min_lr_ratio=0.1)
    train(ToyTask(), toy_data(), None, cosine, tmp_path / "a", progress=False)
    planned = [float(r["lr"]) for r in read_csv(tmp_path / "a/train_log.csv")]
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    with pytest.raises(SigmaError, match="--extend-steps to train longer"):
        train(ToyTask(), toy_data(), None, cosine.replace(steps=14), tmp_path / "b", resume=True, progress=False)
    res = train(ToyTask(), toy_data(), None, cosine.replace(steps=14), tmp_path / "b", resume=True,
                progress=False, extend_steps=True)
    lrs = [float(r["lr"]) for r in read_csv(tmp_path / "b/train_log.csv")]
    assert res.steps == 14 and lrs[:10] == planned  # the first 10 steps are the planned run's, untouched
    assert lrs[10:] == pytest.approx([1e-2 * 0.1] * 4)  # the extra steps run at the cosine's floor
    saved = json.loads((tmp_path / "b/train_config.json").read_text())
    assert saved["steps"] == 14 and saved["schedule_steps"] == 10


class _SplitHeads(ToyTask):
    """A newer version's grouping of the same model (as when the residual head got its own group)."""

    def param_groups(self, trainable):
        heads = ToyTask.param_groups(self, trainable)["heads"]
        return {"heads": heads[:1], "residual": heads[1:]}


def test_a_checkpoint_with_other_parameter_groups_is_refused_in_one_line(tmp_path):
    train(ToyTask(), toy_data(), None, CFG.replace(steps=10), tmp_path, progress=False, stop_after=5)
    with pytest.raises(SigmaError, match=r"optimizer\.json.*does not fit this version's parameter groups"):
        train(_SplitHeads(), toy_data(), None, CFG.replace(steps=10), tmp_path, resume=True, progress=False)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_000005"]  # nothing lost


def test_a_second_writer_of_a_run_is_refused_naming_the_first(tmp_path):
    """Two `sigma train --out R` at once (or --resume while R trains) used to collide on temp files and duplicate
    log rows; the second now stops in one line naming the first one's PID, and writes nothing."""
    import subprocess
    import sys

    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom sigma_vla.outdir import writer_lock\n"
                               f"with writer_lock({str(run)!r}):\n    print('held', flush=True)\n    time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SigmaError, match=f"another sigma process \\(PID {holder.pid}\\) is writing here"):
            train(ToyTask(), toy_data(), None, CFG, run, progress=False)
        assert not (run / "train_log.csv").exists() and not ckpt.step_dirs(run)
    finally:
        holder.kill()
        holder.wait()
    train(ToyTask(), toy_data(), None, CFG, run, progress=False)  # the lock died with its holder
    assert len(read_csv(run / "train_log.csv")) == CFG.steps
