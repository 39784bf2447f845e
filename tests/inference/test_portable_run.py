"""A run is the deployable model: moved to another directory with its shards and base deleted, it
loads, serves, rolls out and evaluates on new shards with the same actions; older runs still load from their shards."""

from __future__ import annotations

import dataclasses
import os
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from sigma_vla.errors import SigmaError
from sigma_vla.inference.policy import load_policy, load_sigma_policy
from sigma_vla.models import SigmaConfig
from sigma_vla.sim.so101 import STATE_NAMES
from sigma_vla.training.run import finetune_base, train_base, train_sigma
from tests.conftest import run_cli
from tests.training.fake_shards import write_fake_shards

CAMERA, SIDE = "observation.images.front", 16  # the simulator's camera, so `sigma rollout` can drive the run
BASE_OPTIONS = dict(vision_tokens=4, grid=2, width=16, layers=1, heads=2, text_max_len=8, pretrained_text=False,
                    text_dim=16)
TRAIN = {"steps": 2, "batch_size": 4}


def _so101_shards(out: Path, seed: int, capsys, base: Path | None = None) -> Path:
    """Fake shards shaped like the SO-101 simulator (STATE_NAMES, 4-dim action, one front camera)."""
    cfg = SigmaConfig.tiny(state_dim=len(STATE_NAMES), action_dim=4)
    cfg = cfg.replace(vision=dataclasses.replace(cfg.vision, num_cameras=1))
    write_fake_shards(out, n_train=12, n_val=8, seed=seed, config=cfg, image_size=SIDE)
    meta = json.loads((out / "meta.json").read_text())
    (out / "meta.json").write_text(json.dumps({**meta, "cameras": [CAMERA]}))
    if base is not None:
        code, _, err = run_cli(["base-actions", out, "--base", base, "--no-progress"], capsys)
        assert code == 0, err
    return out


def _obs(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"observation.state": rng.normal(size=len(STATE_NAMES)).astype(np.float32),
            CAMERA: rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)}


def _actions(policy) -> list[np.ndarray]:
    policy.reset()
    return [policy.infer(_obs(i), "put it far left")["actions"] for i in range(3)]  # memory advances across plans


def _served_actions(run: Path) -> list[np.ndarray]:
    from sigma_vla.cli.serve import load_policy_factory

    return _actions(load_policy_factory(run)())


def _train_all(root: Path) -> Path:
    """root/ with shards (base actions of root/base), base (`train-base`), run (Sigma), ft (`--finetune-base`)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        shards = _so101_shards(root / "shards", 0, None)
        train_base(shards, root / "base", None, split="train", steps=2, batch_size=4, progress=False,
                   model_options=BASE_OPTIONS)
        from sigma_vla.bases.actions import write_base_actions
        from sigma_vla.bases.policy import load_base_policy
        from sigma_vla.interop.fingerprint import fingerprint

        write_base_actions(shards, load_base_policy(root / "base"), fingerprint(root / "base"),
                           source=str((root / "base").resolve()))
        train_sigma(shards, root / "run", "tiny", TRAIN, progress=False)
        finetune_base(shards, root / "ft", root / "base", "tiny", TRAIN, progress=False)
    finally:
        torch.set_num_threads(before)
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return _train_all(tmp_path_factory.mktemp("portable"))


def test_run_directory_holds_its_policy_spec_and_base(trained):
    spec = json.loads((trained / "run" / "policy.json").read_text())
    assert spec["cameras"] == [CAMERA] and spec["image_size"] == SIDE
    assert (spec["state_dim"], spec["action_dim"]) == (len(STATE_NAMES), 4) and spec["normalization"]["action"]["std"]
    assert spec["base"]["path"] == "base" and len(spec["base"]["fingerprint"]) == 16
    assert sorted(p.name for p in (trained / "run" / "base").iterdir()) == ["config.json", "model.safetensors"]
    for other in ("base", "ft"):  # the base directory and the control group carry their own spec, no copied base
        assert json.loads((trained / other / "policy.json").read_text())["base"] is None


def test_an_older_run_loads_from_its_shards_and_says_so_when_they_are_gone(trained, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(trained / "run", old)
    (old / "policy.json").unlink()
    shutil.rmtree(old / "base")  # as written before portable runs: shards and base named by absolute paths
    for a, b in zip(_actions(load_sigma_policy(old)), _actions(load_sigma_policy(trained / "run"))):
        np.testing.assert_array_equal(a, b)
    info = json.loads((old / "run.json").read_text())
    (old / "run.json").write_text(json.dumps({**info, "shards": str(tmp_path / "deleted")}))
    with pytest.raises(SigmaError) as err:
        load_sigma_policy(old)
    assert "policy.json" in err.value.one_line() and "\n" not in err.value.one_line()


def test_a_base_that_does_not_match_its_fingerprint_is_refused(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    cfg = json.loads((run / "base" / "config.json").read_text())
    cfg["config"]["instruction"] = "another base"
    (run / "base" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SigmaError) as err:
        load_sigma_policy(run)
    assert "base.fingerprint" in err.value.one_line() and "policy.json" in err.value.one_line()


def test_a_base_alone_plans_what_it_plans_as_a_runs_base_mode(trained):
    """The same base executes the same plans (the run's chunk C, not its own horizon) from its directory and as the
    `--policy base` of a Sigma run over it, so the two closed-loop rows of one base cannot disagree."""
    alone, in_run = load_policy(trained / "base", "base"), load_policy(trained / "run", "base")
    chunk = json.loads((trained / "run" / "policy.json").read_text())["chunk"]
    assert chunk < alone.base.horizon  # the case that differed: a plan longer than the chunk
    for a, b in zip(_actions(alone), _actions(in_run)):
        assert a.shape[0] == chunk
        np.testing.assert_array_equal(a, b)


def test_a_moved_run_serves_rolls_out_and_evaluates_without_its_shards_or_base(tmp_path, capsys):
    trained = _train_all(tmp_path / "origin")  # its own: everything under it is deleted below
    run, ft, base = trained / "run", trained / "ft", trained / "base"
    want = {"run": _actions(load_sigma_policy(run)), "ft": _actions(load_policy(ft, "base")),
            "base": _actions(load_policy(base, "base"))}
    served = _served_actions(run)
    for a, b in zip(served, want["run"]):
        np.testing.assert_array_equal(a, b)
    moved = tmp_path / "elsewhere"
    for name in want:
        shutil.copytree(trained / name, moved / name)
    shutil.rmtree(trained)  # the dataset's shards, the base directory and the original runs are gone

    for name, actions in want.items():
        mode = "sigma+adapter" if name == "run" else "base"
        for a, b in zip(_actions(load_policy(moved / name, mode)), actions):
            np.testing.assert_array_equal(a, b)
    for a, b in zip(_served_actions(moved / "run"), served):
        np.testing.assert_array_equal(a, b)

    new = _so101_shards(tmp_path / "new_shards", 7, capsys, base=moved / "run" / "base")  # base actions by the copy
    code, out, err = run_cli(["eval", moved / "run", new, "--out", tmp_path / "eval", "--split", "val",
                              "--bootstrap", "10", "--finetuned-base", moved / "ft"], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "eval" / "sigma_eval_report.json").read_text())
    assert report["groups"] and report["episodes"] < 5
    assert f"warning: the 95% intervals rest on {report['episodes']} episode(s) of the val split" in err
    pytest.importorskip("mujoco")
    code, out, err = run_cli(["rollout", moved / "run", "--policy", "sigma+adapter", "--out", tmp_path / "roll",
                              "--episodes", "1", "--max-steps", "3", "--animations", "0"], capsys)
    assert code == 0, err
    assert (tmp_path / "roll" / "rollouts.json").is_file()


@pytest.mark.parametrize("record", [{"path": "../../elsewhere/base"}, {"path": "/abs/base"}, {"path": "base"}])
def test_a_run_never_reads_a_base_outside_itself_or_unchecked(record, trained, tmp_path):
    """policy.json naming a base outside the run (relative, absolute, or RUN/base a symbolic link out), or with a
    null fingerprint, used to load that base; now one line, naming policy.json and the field."""
    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    spec = json.loads((run / "policy.json").read_text())
    fingerprint = spec["base"]["fingerprint"]
    if record["path"] == "base":  # the name is fine, but RUN/base is a symbolic link out of the run
        shutil.rmtree(run / "base")
        (run / "base").symlink_to(trained / "base")
    (run / "policy.json").write_text(json.dumps({**spec, "base": {**record, "fingerprint": fingerprint}}))
    with pytest.raises(SigmaError, match="field 'base.path'"):
        load_sigma_policy(run)
    (run / "policy.json").write_text(json.dumps({**spec, "base": {"path": "base", "fingerprint": None}}))
    with pytest.raises(SigmaError, match="field 'base.fingerprint': no fingerprint"):
        load_sigma_policy(run)


def test_eval_refuses_shards_whose_base_actions_come_from_another_base(trained, tmp_path, capsys):
    shards = tmp_path / "shards"
    shutil.copytree(trained / "shards", shards)
    meta = json.loads((shards / "meta.json").read_text())
    meta["base_actions"]["fingerprint"] = "0123456789abcdef"
    (shards / "meta.json").write_text(json.dumps(meta))
    code, _, err = run_cli(["eval", trained / "run", shards, "--out", tmp_path / "e", "--split", "val"], capsys)
    assert code == 2 and "field 'base_actions.fingerprint'" in err and "0123456789abcdef" in err
    assert not (tmp_path / "e").exists()


def _damaged_copy(trained, tmp_path, name: str, content) -> Path:
    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    target = run / name
    if callable(content):
        content(target)
    else:
        target.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return run


def _spec_with(trained, **changes) -> dict:
    return {**json.loads((trained / "run" / "policy.json").read_text()), **changes}


def _model_config_with(trained, section: str, key: str, value) -> dict:
    meta = json.loads((trained / "run" / "model" / "config.json").read_text())
    meta["config"][section][key] = value
    return meta


def _fifo(path: Path) -> None:
    path.unlink(missing_ok=True)
    os.mkfifo(path)


@pytest.mark.parametrize("name, content, phrase", [
    ("policy.json", lambda t: _spec_with(t, cameras=5), "field 'cameras'"),
    ("policy.json", lambda t: _spec_with(t, image_size="x"), "field 'image_size'"),
    ("policy.json", lambda t: _spec_with(t, chunk=None), "field 'chunk'"),
    ("policy.json", lambda t: _spec_with(t, normalization={}), "field 'normalization.robot_state.mean'"),
    ("policy.json", lambda t: _spec_with(t, base={"path": 123, "fingerprint": "x"}), "field 'base.path'"),
    ("policy.json", lambda t: _spec_with(t, base={"ref": str(t / "base"), "fingerprint": "x"}), "field 'base.ref'"),
    ("policy.json", lambda t: _spec_with(t, cameras=[]), "field 'cameras'"),
    ("model", lambda t: (lambda p: (shutil.rmtree(p), p.symlink_to(t / "run" / "model"))), "leads outside"),
    ("run.json", b"\xff\xfe not utf-8", "not UTF-8"),
    ("run.json", b"{not json", "not valid JSON"),
    ("adapter.json", {"max_scale": 1.0, "surprise": 1}, "unknown ['surprise']"),
    ("adapter.json", {"max_scale": "big"}, "field 'max_scale'"),
    ("model/config.json", lambda t: _model_config_with(t, "backbone", "num_layers", 1_000_000),
     "field 'backbone.num_layers'"),
    ("model/config.json", lambda t: _model_config_with(t, "backbone", "hidden_size", "16"),
     "field 'backbone.hidden_size'"),
    ("adapter.json", "fifo", "not a regular file"),
    ("policy.json", "fifo", "not a regular file"),
])
def test_a_damaged_run_is_one_line_naming_the_file(name, content, phrase, trained, tmp_path):
    """Files of a run are read as untrusted: wrong types, foreign bytes, absurd sizes and FIFOs (which used to hang
    serve, eval and rollout) are one SigmaError naming the file, before any model is built."""
    if content == "fifo":
        content = _fifo
    elif callable(content) and content.__name__ == "<lambda>":
        content = content(trained)
    run = _damaged_copy(trained, tmp_path, name, content)
    with pytest.raises(SigmaError) as info:
        load_policy(run, "sigma+adapter")
    line = info.value.one_line()
    assert phrase in line and "\n" not in line, line
    assert name.split("/")[-1] in line or "normalization" in phrase or "backbone" in phrase, line
