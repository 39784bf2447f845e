"""LeRobot's SmolVLA (random weights) as Sigma's frozen base, built offline from a locally written tiny SmolVLM
(tiny_smolvlm.py; `load_vlm_weights=False`). Its preprocessor tokenizes our task strings; it resizes frames itself,
so only cameras, state and action dims are checked against the shards."""

from __future__ import annotations

import json

import pytest
import torch

from sigma_vla.data.shards import read_meta
from sigma_vla.errors import SigmaError
from tests.lerobot.conftest import lerobot_base, policy_features, shard_batch

pytest.importorskip("lerobot", reason="LeRobot is not installed here: `make test-lerobot` builds .venv-lerobot")
pytest.importorskip("num2words", reason="SmolVLA needs lerobot[smolvla]")
pytestmark = pytest.mark.lerobot


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    from tests.lerobot.tiny_smolvlm import write_tiny_smolvlm

    return write_tiny_smolvlm(tmp_path_factory.mktemp("smolvlm") / "tiny-smolvlm")


def make_smolvla(meta: dict, vlm, **features):
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    from tests.lerobot.tiny_smolvlm import IMAGE_SIDE

    torch.manual_seed(0)
    config = SmolVLAConfig(**policy_features(meta, **features), vlm_model_name=str(vlm), load_vlm_weights=False,
                           num_vlm_layers=2, chunk_size=10, n_action_steps=10, num_steps=2, tokenizer_max_length=16,
                           resize_imgs_with_padding=(IMAGE_SIDE, IMAGE_SIDE), device="cpu")
    return SmolVLAPolicy(config)


def test_smolvla_predicts_chunks_that_depend_on_the_instruction(shards, tiny_vlm):
    meta = read_meta(shards)
    base = lerobot_base(make_smolvla(meta, tiny_vlm), shards)
    batch = shard_batch(shards, 3)
    chunks = []
    for task in ("put it far left", "the bin is close to you, on the right"):
        torch.manual_seed(1)  # the same flow-matching noise: only the words differ
        chunks.append(base.predict_chunk({**batch, "task": task}))
    assert chunks[0].shape == (3, 6, 4) and torch.isfinite(chunks[0]).all()  # (B, T, Da) of its 10 steps
    assert not torch.allclose(chunks[0], chunks[1])  # the task string reaches the VLM through its tokenizer


def test_smolvla_state_dim_mismatch_is_one_line(shards, tiny_vlm):
    meta = read_meta(shards)
    with pytest.raises(SigmaError, match=r"state dim: the batch's robot_state has 6, the policy's config declares 8"):
        lerobot_base(make_smolvla(meta, tiny_vlm, state_dim=8), shards).predict_chunk(shard_batch(shards, 2))


def test_smolvla_language_model_as_sigmas_backbone_through_the_cli(tiny_vlm, tmp_path, capsys):
    """`sigma train --backbone lerobot:DIR`: LoRA on SmolVLA's own SmolVLM text model, with its tokenizer; only LoRA
    trains inside the backbone, the run records the reference and `sigma eval` rebuilds the backbone from it."""
    from sigma_vla.inference.policy import load_run_model
    from tests.conftest import run_cli
    from tests.lerobot.conftest import save_checkpoint
    from tests.training.fake_shards import write_fake_shards

    shards = write_fake_shards(tmp_path / "shards", n_train=8, n_val=4, with_base=True, image_size=32)
    checkpoint = save_checkpoint(make_smolvla(read_meta(shards), tiny_vlm), shards, tmp_path / "smolvla")
    run = tmp_path / "run"
    code, out, err = run_cli(["train", shards, "--out", run, "--config", "tiny", "--steps", "2", "--batch-size", "4",
                              "--no-progress", "--backbone", f"lerobot:{checkpoint}"], capsys)
    assert code == 0, err
    backbone = json.loads((run / "model" / "config.json").read_text())["config"]["backbone"]
    assert (backbone["kind"], backbone["ref"], backbone["hidden_size"]) == ("lerobot", f"lerobot:{checkpoint}", 64)
    report = json.loads((run / "param_report.json").read_text())
    model = load_run_model(run)  # the text model again, from the reference; LoRA and heads from the run
    assert type(model.backbone.model).__name__.startswith("Llama")  # SmolVLM's text model, not a stand-in
    lora = sum(p.numel() for n, p in model.backbone.named_parameters() if "lora_" in n)
    assert report["groups"]["lora"]["params"] == lora > 0 and "backbone" not in report["groups"]  # LoRA only
    code, out, err = run_cli(["eval", run, shards, "--out", tmp_path / "eval", "--split", "val", "--bootstrap",
                              "10"], capsys)
    assert code == 0, err
