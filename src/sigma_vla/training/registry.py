"""Named experiments: a model preset plus a TrainConfig (`sigma train --config NAME`).

- "tiny": tests. Random 2-layer BERT backbone (SigmaConfig.tiny), seconds on a CPU.
- "demo": the embedded default. Pretrained MiniLM backbone with LoRA r = 16 on q/k/v/o (paper 4.2), sized to finish
  in about 8 minutes on a 2-core CPU (benchmarks/train.py measures the step).
- "pi05": documented for GPUs. pi0.5-shaped backbone (SigmaConfig.pi05_like: d_model 2048, 18 layers, 3 cameras,
  chunk 50), bf16, gradient accumulation; launch with `accelerate launch --num_processes N ... train --config pi05`.
  The randomly initialised Gemma-shaped backbone is a stand-in: plug a real PaliGemma in through models.Backbone.

Data-fixed dims (state_dim, action_dim, horizon, chunk, cameras, image side) always come from the shards' meta.json
(`model_config_for`); the preset supplies everything else.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sigma_vla.errors import SigmaError
from sigma_vla.training.config import TrafConfig, TrainConfig


@dataclass(frozen=True)
class Experiment:
    name: str
    description: str  # one line, the text `sigma train --help` and `sigma experiment --help` show for --config
    model_preset: str  # "tiny" | "embedded" | "pi05_like": a SigmaConfig constructor
    train: TrainConfig

    def model_preset_config(self) -> Any:
        from sigma_vla.models import SigmaConfig

        presets: dict[str, Callable[[], SigmaConfig]] = {
            "tiny": SigmaConfig.tiny, "embedded": SigmaConfig, "pi05_like": SigmaConfig.pi05_like}
        return presets[self.model_preset]()


EXPERIMENTS: dict[str, Experiment] = {
    "tiny": Experiment(
        "tiny", "a random 2-layer encoder for tests, seconds on a CPU; it cannot read language", "tiny",
        TrainConfig(steps=20, batch_size=8, lr=1e-3, warmup_steps=2, checkpoint_every=10, keep_last=2, val_every=10,
                    val_batches=2),
    ),
    "demo": Experiment(
        "demo", "the embedded default: pretrained MiniLM + LoRA (r = 16 on q/k/v/o)", "embedded",
        # Steps, the residual head's rate and the residual floor: each measured in closed loop, docs/closed_loop.md
        # ("A quiet machine", "A faster residual head", "Paired twins", "Does Sigma help? Three seeds").
        TrainConfig(steps=1200, batch_size=16, lr=5e-4, residual_lr_scale=4.0, warmup_steps=15, checkpoint_every=200,
                    keep_last=2, val_every=200, val_batches=3, traf=TrafConfig(residual_floor=0.1)),
    ),
    "pi05": Experiment(
        "pi05", "a pi0.5-shaped stand-in for GPUs (random Gemma-shaped backbone, bf16, 4 x gradient accumulation)",
        "pi05_like",
        TrainConfig(steps=3000, batch_size=32, grad_accum=4, lr=1e-4, warmup_steps=100, mixed_precision="bf16",
                    checkpoint_every=500, keep_last=3, val_every=250, val_batches=16),
    ),
}


def get_experiment(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        raise SigmaError(f"unknown experiment {name!r}; choose one of {sorted(EXPERIMENTS)}", field="--config")
    return EXPERIMENTS[name]


def model_config_for(meta: dict[str, Any], preset: Any) -> Any:
    """The preset SigmaConfig with the dims the shards fix (meta.json): Ds, Da, T, C, cameras, image side."""
    params = meta.get("params") or {}
    try:
        cameras = len(meta["cameras"])
        dims = {"state_dim": int(meta["state_dim"]), "action_dim": int(meta["action_dim"]),
                "horizon": int(params["horizon"]), "chunk": int(params["chunk"])}
    except (KeyError, TypeError, ValueError) as err:
        raise SigmaError(f"shard metadata lacks {err}", file="meta.json") from err
    vision = dataclasses.replace(preset.vision, num_cameras=cameras)
    if cameras:
        side = int(params.get("image_size", preset.vision.image_size))
        if side % preset.vision.patch_size:
            raise SigmaError(f"image side {side} is not a multiple of the model's patch size "
                             f"{preset.vision.patch_size}; rerun `sigma prep --image-size` with a multiple",
                             file="meta.json", field="params.image_size")
        vision = dataclasses.replace(vision, image_size=side)
    return preset.replace(**dims, vision=vision)
