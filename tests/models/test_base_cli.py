"""`sigma train-base` and `sigma base-actions` on a miniature shard directory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from sigma_vla.bases.policy import TinyBaseConfig, TinyBasePolicy, load_base_policy
from sigma_vla.data.schema import BASE_ACTION_KEYS, SPLIT_CODES
from sigma_vla.data.shards import write_shard
from sigma_vla.models import SigmaConfig, make_fake_batch
from tests.conftest import run_cli

T, C, DA, DS = 6, 3, 4, 6


def _shards(root: Path) -> Path:
    """Two shards (10 + 6 windows), one 16 px camera; splits base/train/test; raw units (mean 5, std 2)."""
    cfg = SigmaConfig.tiny(vision=SigmaConfig.tiny().vision.__class__(
        num_cameras=1, image_size=16, patch_size=8, patch_dim=16, num_tokens=4, heads=2, state_hidden=16,
        film_hidden=16))
    root.mkdir()
    batch = make_fake_batch(cfg, 16)
    batch["task_index"] = torch.arange(16) % 2
    batch["split"] = torch.tensor([SPLIT_CODES["base"]] * 8 + [SPLIT_CODES["train"]] * 4 + [SPLIT_CODES["test"]] * 4)
    for key in ("robot_state", "gt_action_vector", "gt_action_chunk", "gt_action_trajectory"):
        batch[key] = batch[key] * 2.0 + 5.0
    batch = {k: v for k, v in batch.items() if not k.startswith("text_")}
    for i, (lo, hi) in enumerate([(0, 10), (10, 16)]):
        write_shard(root / f"shard_{i:05d}.safetensors", {k: v[lo:hi].numpy() for k, v in batch.items()})
    stats = lambda d: {"mean": [5.0] * d, "std": [2.0] * d, "min": [0.0] * d, "max": [9.0] * d}  # noqa: E731
    meta = {"status": "complete", "tasks": ["place it far left", "put the block near the right"],
            "params": {"horizon": T, "chunk": C, "image_size": 16}, "cameras": ["observation.images.front"],
            "state_dim": DS, "action_dim": DA, "normalization": {"robot_state": stats(DS), "action": stats(DA)}}
    (root / "meta.json").write_text(json.dumps(meta))
    return root


def test_train_base_then_base_actions_resumably(tmp_path: Path, capsys) -> None:
    shards = _shards(tmp_path / "shards")
    code, out, err = run_cli(["train-base", shards, "--out", tmp_path / "base", "--steps", "3", "--batch-size", "4",
                              "--no-progress"], capsys)
    assert code == 0, err
    assert "8 'base' windows" in out
    base = load_base_policy(tmp_path / "base")
    assert base.config.instruction and (base.horizon, base.action_dim) == (T, DA)
    info = json.loads((tmp_path / "base" / "base_info.json").read_text())
    assert info["split"] == "base" and info["steps"] == 3

    code, out, err = run_cli(["base-actions", shards, "--base", tmp_path / "base", "--no-progress"], capsys)
    assert code == 0, err
    meta = json.loads((shards / "meta.json").read_text())
    assert meta["base_actions"]["status"] == "complete" and meta["base_actions"]["units"] == "normalized"
    with safe_open(str(shards / "shard_00000.safetensors"), framework="pt") as f:
        got = {k: f.get_tensor(k) for k in f.keys()}
    assert set(BASE_ACTION_KEYS) <= set(got)
    assert got["base_action_trajectory"].shape == (10, T, DA) and got["base_action_chunk"].shape == (10, C, DA)
    state = (got["robot_state"] - 5.0) / 2.0  # the base saw normalised state
    expect = base.predict_chunk({"vision_inputs": got["vision_inputs"], "robot_state": state})
    assert torch.allclose(got["base_action_trajectory"], expect, atol=1e-5)
    assert torch.equal(got["base_action_vector"], got["base_action_trajectory"][:, 0])

    before = (shards / "shard_00001.safetensors").stat().st_mtime_ns
    code, out, _ = run_cli(["base-actions", shards, "--base", tmp_path / "base", "--no-progress"], capsys)
    assert code == 0 and "0 written, 2 already done" in out  # resumable: finished shards are skipped
    assert (shards / "shard_00001.safetensors").stat().st_mtime_ns == before

    # train-base into the same directory used to retrain the base with no word, changing every run over it
    weights = (tmp_path / "base" / "model.safetensors").read_bytes()
    code, _, err = run_cli(["train-base", shards, "--out", tmp_path / "base", "--steps", "3", "--batch-size", "4",
                            "--seed", "1", "--no-progress"], capsys)
    assert code == 2 and "already holds a base" in err and "--resume" in err and "Traceback" not in err
    assert (tmp_path / "base" / "model.safetensors").read_bytes() == weights


def test_base_actions_refuse_a_base_of_another_shape(tmp_path: Path, capsys) -> None:
    shards = _shards(tmp_path / "shards")
    TinyBasePolicy(TinyBaseConfig.tiny(action_dim=3, num_cameras=1)).save_pretrained(tmp_path / "b")
    code, _, err = run_cli(["base-actions", shards, "--base", tmp_path / "b", "--no-progress"], capsys)
    assert code != 0 and "action dim 3" in err and "Traceback" not in err


def test_train_base_on_an_empty_split_says_how_to_fix_it(tmp_path: Path, capsys) -> None:
    shards = _shards(tmp_path / "shards")
    code, _, err = run_cli(["train-base", shards, "--out", tmp_path / "b", "--split", "val", "--no-progress"], capsys)
    assert code != 0 and "split 'val' has no windows" in err


@pytest.mark.parametrize("with_instruction", [True, False])
def test_tiny_base_instruction_overrides_the_batch_text(with_instruction: bool) -> None:
    cfg = TinyBaseConfig.tiny(instruction="pick up the block" if with_instruction else None)
    base = TinyBasePolicy(cfg)
    batch = make_fake_batch(SigmaConfig.tiny(), 2)
    other = {**batch, "text_input_ids": torch.flip(batch["text_input_ids"], dims=[0]),
             "text_attention_mask": torch.flip(batch["text_attention_mask"], dims=[0])}
    same = torch.equal(base.predict_chunk(batch), base.predict_chunk(other))
    assert same == with_instruction
    _ = np  # numpy arrays are what write_shard takes
