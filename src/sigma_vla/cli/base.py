"""`sigma train-base` and `sigma base-actions`: the embedded base policy (DESIGN 1 step 3, paper 4.2.1).

train-base trains a TinyBasePolicy on the shards' `base` split (episodes disjoint from Sigma's train / val / test
splits) with one generic instruction that names no zone (DESIGN 3), through the same trainer as `sigma train`
(checkpoints, --resume, train_log.csv); the final model is written to OUT/ (and OUT/model/), then it is frozen.

base-actions runs the frozen base once over every shard and adds base_action_vector (Da), base_action_chunk (C, Da)
and base_action_trajectory (T, Da), in the normalised units training uses, so training never runs the base. Each
shard is rewritten atomically; meta.json["base_actions"] records the base's fingerprint and the finished shards, so
a killed run resumes where it stopped and a different base starts over.

Shape legend (data/schema.py): B batch, T horizon, C chunk, Da action dim.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import typer

from sigma_vla.errors import SigmaError
from sigma_vla.sim.instructions import GENERIC_INSTRUCTION

BASE_INFO = "base_info.json"


def train_base(
    shards: Path = typer.Argument(..., help="Shard directory written by `sigma prep`."),
    out: Path = typer.Option(..., "--out", help="Base-policy directory (model + training logs)."),
    split: str = typer.Option("base", "--split", help="Split to train on (default: the episodes set aside for it)."),
    instruction: str = typer.Option(GENERIC_INSTRUCTION, "--instruction",
                                    help="The one instruction the base reads ('' = the dataset's own task text)."),
    steps: int = typer.Option(2000, "--steps", help="Optimizer steps."),
    batch_size: int = typer.Option(64, "--batch-size", help="Samples per step."),
    lr: float = typer.Option(2e-3, "--lr", help="Peak learning rate (cosine schedule)."),
    seed: int = typer.Option(0, "--seed", help="Seed of weights and data order."),
    vision: str = typer.Option("flat", "--vision", help="Camera encoder: flat | keypoints | grid."),
    augment_shift: int = typer.Option(0, "--augment-shift", help="Random-shift augmentation in pixels (0: off)."),
    dropout: float = typer.Option(0.0, "--dropout", help="Transformer dropout."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the latest checkpoint in --out."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Train the embedded base policy (TinyBasePolicy) on SHARDS, then freeze it."""
    result = fit_base(shards, out, split, instruction or None, steps, batch_size, lr, seed, resume, progress,
                      {"vision": vision, "augment_shift": augment_shift, "dropout": dropout})
    typer.echo(f"trained the base {result['steps']} steps on {result['samples']} '{split}' windows "
               f"(last loss {result['last_loss']:.4g}); model in {out}")


def fit_base(shards: Path, out: Path, split: str = "base", instruction: str | None = GENERIC_INSTRUCTION,
             steps: int = 2000, batch_size: int = 64, lr: float = 2e-3, seed: int = 0, resume: bool = False,
             progress: bool = True, model_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train a TinyBasePolicy on one split of SHARDS; model_options override TinyBaseConfig fields (vision, ...)."""
    import torch

    from sigma_vla.data.shards import ShardDataset
    from sigma_vla.models.base_policy import TinyBaseConfig, TinyBasePolicy
    from sigma_vla.outdir import claim_dir
    from sigma_vla.training.config import TrainConfig
    from sigma_vla.training.tasks import BaseFinetuneTask
    from sigma_vla.training.trainer import train
    from sigma_vla.training.transforms import BatchTransform

    shards, out = Path(shards), Path(out)
    data = ShardDataset(shards, split)
    if len(data) == 0:
        raise SigmaError(f"split '{split}' has no windows: prep with a base share (e.g. --split "
                         "train:0.6,val:0.1,test:0.1,base:0.2) or pass --split train", file=shards, field="--split")
    meta = data.meta
    horizon, chunk = _meta_dims(meta)
    config = TinyBaseConfig(state_dim=int(meta["state_dim"]), action_dim=int(meta["action_dim"]), horizon=horizon,
                            num_cameras=len(meta.get("cameras") or []), instruction=instruction,
                            **(model_options or {}))
    try:
        train_cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup_steps=min(20, steps // 10),
                                checkpoint_every=max(1, steps // 2), keep_last=1, val_every=0, seed=seed)
    except ValueError as err:
        raise SigmaError(str(err), field="train-base options") from err
    torch.manual_seed(seed)
    base = TinyBasePolicy(config)
    task = BaseFinetuneTask(base, train_cfg, BatchTransform.from_meta(meta, config.text_max_len), chunk)
    claim_dir(out, "base")  # the one output rule: files that are not ours are refused and kept
    result = train(task, data, None, train_cfg, out, resume=resume, progress=progress)
    for name in ("model.safetensors", "config.json"):  # OUT/ itself is a base-policy directory
        shutil.copy2(out / "model" / name, out / name)
    last = result.history[-1].get("loss", float("nan")) if result.history else float("nan")
    info = {"split": split, "samples": len(data), "steps": result.steps, "instruction": instruction,
            "shards": str(shards.resolve()), "last_loss": float(last)}
    (out / BASE_INFO).write_text(json.dumps(info, indent=2) + "\n")
    return info


def base_actions(
    shards: Path = typer.Argument(..., help="Shard directory written by `sigma prep`."),
    base: Path = typer.Option(..., "--base", help="Base-policy directory written by `sigma train-base`."),
    batch_size: int = typer.Option(64, "--batch-size", help="Windows per forward."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Add the frozen base's actions (base_action_*) to every shard of SHARDS (resumable)."""
    from sigma_vla.models.base_policy import load_base_policy

    policy = load_base_policy(base)
    done = write_base_actions(shards, policy, fingerprint_dir(base), batch_size, progress, str(base.resolve()))
    typer.echo(f"base actions in {done['shards']} shards ({done['written']} written, {done['skipped']} already "
               f"done, {done['samples']} windows) in {shards}")


def write_base_actions(shards: Path, policy: Any, fingerprint: str, batch_size: int = 64,
                       progress: bool = False, source: str | None = None) -> dict[str, int]:
    """Run any BasePolicy over every shard and add the schema.BASE_ACTION_KEYS (normalised units). Usable from
    Python with a LeRobotPolicyBase: write_base_actions(dir, LeRobotPolicyBase(policy, ...), "my-pi05")."""
    from tqdm import tqdm

    from sigma_vla.data.shards import atomic_write_text, read_meta, shard_paths

    shards = Path(shards)
    meta = read_meta(shards)
    horizon, chunk = _meta_dims(meta)
    if policy.horizon < horizon:
        raise SigmaError(f"the base predicts {policy.horizon} steps, the shards need horizon {horizon}",
                         field="--base")
    if policy.action_dim != int(meta["action_dim"]):
        raise SigmaError(f"the base has action dim {policy.action_dim}, the shards {meta['action_dim']}",
                         field="--base")
    record = meta.get("base_actions") or {}
    finished = set(record.get("done_shards", [])) if record.get("fingerprint") == fingerprint else set()
    # `base` records where the base lives, so `sigma rollout` / `sigma serve` rebuild base + Sigma from a run
    record = {"fingerprint": fingerprint, "units": "normalized", "horizon": horizon, "chunk": chunk,
              "base": source, "done_shards": sorted(finished), "status": "in_progress"}
    transform = _transform(meta, policy)
    paths = shard_paths(shards)
    counts = {"shards": len(paths), "written": 0, "skipped": 0, "samples": 0}
    for path in tqdm(paths, desc="base actions", unit="shard", disable=not progress):
        if path.name in finished and _has_base_actions(path):  # the record is a hint, the shard is the truth
            counts["skipped"] += 1
            continue
        counts["samples"] += _rewrite_shard(path, policy, transform, horizon, chunk, batch_size)
        counts["written"] += 1
        finished.add(path.name)
        record["done_shards"] = sorted(finished)
        atomic_write_text(shards / "meta.json", json.dumps({**meta, "base_actions": record}, indent=1))
    record["status"] = "complete"
    atomic_write_text(shards / "meta.json", json.dumps({**meta, "base_actions": record}, indent=1))
    return counts


def _has_base_actions(path: Path) -> bool:
    """Whether a shard holds base actions for every window; an unreadable (truncated) shard is a SigmaError."""
    from sigma_vla.data.schema import BASE_ACTION_KEYS
    from sigma_vla.data.shards import open_shard

    with open_shard(path) as f:
        if "split" not in f.keys() or not set(BASE_ACTION_KEYS) <= set(f.keys()):
            return False
        n = f.get_slice("split").get_shape()[0]
        return all(f.get_slice(k).get_shape()[0] == n for k in BASE_ACTION_KEYS)


def _rewrite_shard(path: Path, policy: Any, transform: Any, horizon: int, chunk: int, batch_size: int) -> int:
    """Add base_action_* to one shard file, atomically (data.shards.write_shard: temp file + rename)."""
    import torch

    from sigma_vla.data.schema import BASE_ACTION_KEYS
    from sigma_vla.data.shards import open_shard, write_shard
    from sigma_vla.models.base_policy import base_action_dict

    with open_shard(path, framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys() if k not in BASE_ACTION_KEYS}
    n = tensors["split"].shape[0]
    chunks = []
    with torch.no_grad():
        for start in range(0, n, batch_size):
            batch = transform({k: v[start:start + batch_size] for k, v in tensors.items()})
            chunks.append(policy.predict_chunk(batch)[:, :horizon].float())  # (B, T, Da)
    pred = torch.cat(chunks) if chunks else torch.zeros(0, horizon, policy.action_dim)  # (N, T, Da)
    if not torch.isfinite(pred).all():
        raise SigmaError("the base produced non-finite actions", file=path, field="base_action_trajectory")
    tensors.update(base_action_dict(pred, chunk))
    write_shard(path, {k: v.contiguous().numpy() for k, v in tensors.items()})
    return n


def _transform(meta: dict[str, Any], policy: Any) -> Any:
    """Shard batch -> the base's input: normalised state, text tokens of the task (if the base reads them)."""
    from sigma_vla.training.transforms import BatchTransform

    config = getattr(policy, "config", None)
    text_len = getattr(config, "text_max_len", None) if getattr(config, "instruction", None) is None else None
    return BatchTransform.from_meta(meta, text_len)


def _meta_dims(meta: dict[str, Any]) -> tuple[int, int]:
    params = meta.get("params") or {}
    try:
        return int(params["horizon"]), int(params["chunk"])
    except (KeyError, TypeError, ValueError) as err:
        raise SigmaError(f"shard metadata lacks params {err}", file="meta.json", field="params") from err


def fingerprint_dir(directory: Path) -> str:
    """sha256 of a model directory's weights and config: which base wrote the base actions."""
    directory = Path(directory)
    if not (directory / "config.json").is_file() and (directory / "model" / "config.json").is_file():
        directory = directory / "model"
    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        digest.update((directory / name).read_bytes())
    return digest.hexdigest()[:16]
