"""A miniature shard directory (data/schema.py contract) built from make_fake_batch, for trainer and CLI tests."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from sigma_vla.data.schema import SHARD_PATTERN, SPLIT_CODES
from sigma_vla.data.shards import write_shard
from sigma_vla.models import SigmaConfig, make_fake_batch

TASKS = ["place the block far left", "put it near the right", "the bin is close to you, in the centre"]


def write_fake_shards(out: Path, n_train: int = 32, n_val: int = 8, with_base: bool = False, seed: int = 0,
                      config: SigmaConfig | None = None, image_size: int = 16, shard_size: int = 24) -> Path:
    cfg = config or SigmaConfig.tiny()
    cfg = cfg.replace(vision=dataclasses.replace(cfg.vision, image_size=image_size))
    n = n_train + n_val
    batch = make_fake_batch(cfg, n, seed=seed, with_base_actions=with_base)
    batch.pop("text_input_ids")
    batch.pop("text_attention_mask")
    batch["episode_index"] = np.arange(n) // 4  # four windows per episode
    batch["frame_index"] = np.arange(n) % 4
    batch["task_index"] = (np.arange(n) // 4) % len(TASKS)
    batch["split"] = np.where(np.arange(n) < n_train, SPLIT_CODES["train"], SPLIT_CODES["val"])
    arrays = {k: np.asarray(v) for k, v in batch.items()}
    arrays = {k: v.astype(np.int64) if v.dtype.kind == "i" and k != "vision_inputs" else v for k, v in arrays.items()}
    out.mkdir(parents=True, exist_ok=True)
    for i, start in enumerate(range(0, n, shard_size)):
        write_shard(out / SHARD_PATTERN.format(i), {k: v[start:start + shard_size] for k, v in arrays.items()})
    state, action = arrays["robot_state"], arrays["gt_action_trajectory"].reshape(-1, cfg.action_dim)
    meta = {
        "format": "sigma-vla-shards/1", "status": "complete",
        "params": {"horizon": cfg.horizon, "chunk": cfg.chunk, "image_size": image_size},
        "cameras": [f"observation.images.cam{i}" for i in range(cfg.vision.num_cameras)],
        "state_dim": cfg.state_dim, "action_dim": cfg.action_dim, "num_samples": n, "tasks": TASKS,
        "normalization": {"robot_state": {"mean": state.mean(0).tolist(), "std": state.std(0).tolist()},
                          "action": {"mean": action.mean(0).tolist(), "std": action.std(0).tolist()}},
    }
    (out / "meta.json").write_text(json.dumps(meta))
    return out
