"""Assemble a training run from a shard directory: the Sigma run (paper 4.2), the embedded base (`sigma train-base`)
and the fine-tuned base control group (docs/architecture.md, "Honest evaluation": same train split, same loop, same
step budget). The two base runs share one path through the trainer (`_fit_base_policy`).

RUN/ holds: run.json (what was trained on what), train_config.json, param_report.json, train_log.csv, val_log.csv,
checkpoints/step_XXXXXX/, model/ (the final model: model.safetensors + config.json), summary.json, tensorboard/,
policy.json (what inference needs from the shards) and, for a Sigma run, base/ (its embedded base), so the directory
serves without its shards or the original base (runs/spec.py; the names: layout.py).
A `train-base` directory is itself a base-policy directory (model files copied up) with base_info.json and
policy.json.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from sigma_vla.bases.lerobot import lerobot_base
from sigma_vla.bases.policy import TinyBaseConfig, TinyBasePolicy
from sigma_vla.data.shards import ShardDataset, meta_dims
from sigma_vla.errors import SigmaError
from sigma_vla.interop.fingerprint import fingerprint
from sigma_vla.interop.lerobot import canonical, is_lerobot_ref, resolve
from sigma_vla.layout import BASE_INFO, MODEL_DIR, RUN_FILE
from sigma_vla.models import SigmaModel
from sigma_vla.models.backbone import lerobot_backbone
from sigma_vla.models.quantize import require_bitsandbytes
from sigma_vla.outdir import atomic_write_text, check_dir, claim_dir
from sigma_vla.processing.action_triple import BASE_ACTION, has_actions
from sigma_vla.processing.recipe import base_text, shard_transform, sigma_text
from sigma_vla.runs.spec import base_record, copy_base, lerobot_model_record, spec_from_meta, write_policy_file
from sigma_vla.training import checkpoint as ckpt
from sigma_vla.training.config import TrainConfig
from sigma_vla.training.distributed import process_state
from sigma_vla.training.registry import get_experiment, model_config_for
from sigma_vla.training.resume import run_settings
from sigma_vla.training.tasks import BaseFinetuneTask, SigmaTask
from sigma_vla.training.trainer import TrainResult, train


def load_splits(shards: Path) -> tuple[Any, Any | None, dict]:
    """(train dataset, val dataset or None when the val split is empty, meta)."""
    train_ds = ShardDataset(shards, "train")
    if len(train_ds) == 0:
        raise SigmaError("the train split has no samples", file=shards, field="split")
    val_ds = ShardDataset(shards, "val")
    for ds in (train_ds, val_ds):  # before the run directory exists: a bad index would crash mid-run
        check_task_index(ds.data.get("task_index"), train_ds.tasks, shards)
    return train_ds, (val_ds if len(val_ds) else None), train_ds.meta


def check_task_index(task_index: torch.Tensor | None, tasks: list[str], shards: Path) -> None:
    """Every window's task_index names an instruction of meta.json's tasks table."""
    if task_index is None or not len(task_index):
        return
    lo, hi = int(task_index.min()), int(task_index.max())
    if lo < 0 or hi >= len(tasks):
        raise SigmaError(f"task_index {lo if lo < 0 else hi} is outside the tasks table ({len(tasks)} tasks in "
                         "meta.json); rerun `sigma prep`", file=shards, field="task_index")


def resolve_config(name: str, overrides: dict[str, Any], resume_dir: Path | None = None,
                   extend_steps: bool = False) -> TrainConfig:
    """The experiment's TrainConfig with overrides (a None override is one not given); a bad value is a
    ConfigError naming the field.
    On resume the run's own settings (RUN/train_config.json) come first, so `--resume` alone continues the run as it
    was started and an option given is compared with them by the trainer (resume.py)."""
    if extend_steps and (resume_dir is None or overrides.get("steps") is None):
        raise SigmaError("goes with --resume and a new --steps", field="--extend-steps")
    base = (run_settings(resume_dir) if resume_dir is not None else None) or get_experiment(name).train
    return base.replace(**{k: v for k, v in overrides.items() if v is not None})


def check_run_dir(out: Path, kind: str, identity: dict[str, Any], resume: bool) -> None:
    """Refuse to mix runs: files that are not ours are never touched (sigma_vla.outdir), a fresh run never
    overwrites checkpoints, a resumed one must be the same kind of run."""
    check_dir(out, "run")
    if ckpt.step_dirs(out) and not resume:
        raise SigmaError("already holds checkpoints; pass --resume to continue it or choose another --out", file=out)
    run_file = out / RUN_FILE
    if resume and run_file.exists():
        try:
            before = json.loads(run_file.read_text())
        except (OSError, ValueError) as err:
            raise SigmaError(f"unreadable ({err}); not a run to resume", file=run_file) from None
        for key in ("kind", "experiment", "shards", "base", "task_text", "model_config"):
            if before.get(key) != identity.get(key):
                raise SigmaError(f"cannot resume: this run has {key} {_short(before.get(key))}, asked "
                                 f"{_short(identity.get(key))}; resume with the run's value or start a new --out",
                                 file=run_file, field=key)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _write_run_file(out: Path, identity: dict[str, Any]) -> None:
    state = process_state()
    state.wait_for_everyone()  # every rank has checked the directory before the main one writes in it
    if state.is_main_process:
        claim_dir(out, "run")
        atomic_write_text(out / RUN_FILE, json.dumps(identity, indent=2))


def _write_policy_spec(out: Path, meta: dict[str, Any], text: dict[str, Any], with_base: bool,
                       model: dict[str, Any] | None = None) -> None:
    """RUN/policy.json (+ RUN/base for a Sigma run): what serving, rollouts and eval read instead of the training
    shards and the original base directory, so the run directory alone is the deployable model (runs/spec.py).
    model: what RUN/model is when it is not our own format (a fine-tuned LeRobot checkpoint)."""
    if not process_state().is_main_process:
        return
    spec = spec_from_meta(meta, text)
    if with_base:
        spec["base"] = base_record(out, meta)
    if model is not None:
        spec["model"] = model
    write_policy_file(out, spec)


def train_sigma(shards: Path, out: Path, experiment: str = "demo", overrides: dict[str, Any] | None = None,
                resume: bool = False, progress: bool = True, stop_after: int | None = None,
                extend_steps: bool = False, backbone: str | None = None, no_base: bool = False,
                quantize: str | None = None) -> TrainResult:
    """`sigma train`: LoRA + telepathy heads with TRAF and TSAC on the train split, validation on the val split.
    backbone: a `lerobot:PATH_OR_ID` reference whose own language model (and tokenizer) replaces the experiment's
    backbone (models.backbone.lerobot_backbone). Shards without base actions are refused (a Sigma with no base
    under it) unless no_base says so on purpose. quantize: "nf4" | "int8" for the frozen backbone layers (QLoRA,
    models/quantize.py; None: the run's own on resume, else the preset's), recorded in the model config."""
    shards, out = Path(shards), Path(out)
    config = resolve_config(experiment, overrides or {}, out if resume else None, extend_steps)
    train_ds, val_ds, meta = load_splits(shards)
    model_cfg = model_config_for(meta, get_experiment(experiment).model_preset_config())
    quantize = _quantize_choice(quantize, model_cfg.backbone.quantize, out if resume else None)
    if quantize != "none":
        require_bitsandbytes()  # before the run directory is touched
        if config.trainable == "full":
            raise SigmaError("a quantized backbone cannot be fully fine-tuned (trainable 'full'); train LoRA over it",
                             field="--quantize")
    model_cfg = model_cfg.replace(backbone=dataclasses.replace(model_cfg.backbone, quantize=quantize))
    module = None
    if backbone is not None:  # loaded before the seed: LeRobot's constructor draws random numbers
        backbone_cfg, module = lerobot_backbone(backbone, model_cfg.backbone)
        model_cfg = model_cfg.replace(backbone=backbone_cfg)
    if not no_base and not has_actions(train_ds.data, BASE_ACTION):
        raise SigmaError("the shards hold no base actions, so Sigma would learn whole actions with no base under "
                         "it; run `sigma base-actions SHARDS --base BASE` first, or pass --no-base to train without "
                         "a base on purpose", file=shards / "meta.json", field="base_actions")
    identity = {"kind": "sigma", "experiment": experiment, "shards": str(shards.resolve()),
                "model_config": model_cfg.to_dict()}
    check_run_dir(out, "sigma", identity, resume)
    torch.manual_seed(config.seed)  # identical initial weights on every rank and in every rerun
    model = SigmaModel(model_cfg, backbone=module)
    if config.gradient_checkpointing:
        model.backbone.enable_gradient_checkpointing()
    task = SigmaTask(model, config, shard_transform(meta, sigma_text(model_cfg), config.paraphrases, config.seed))
    _write_run_file(out, identity)
    _write_policy_spec(out, meta, {"mode": model_cfg.language.text_mode, "max_len": model_cfg.language.text_max_len},
                       with_base=True)
    return train(task, train_ds, val_ds, config, out, resume=resume, progress=progress, stop_after=stop_after,
                 extend_steps=extend_steps)


def _quantize_choice(asked: str | None, preset: str, resume_dir: Path | None) -> str:
    """--quantize, or on resume the run's own (recorded in run.json's model config); a different one is refused."""
    if resume_dir is None:
        return asked or preset
    try:
        recorded = json.loads((resume_dir / RUN_FILE).read_text())["model_config"]["backbone"].get("quantize", "none")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return asked or preset  # no run to read: check_run_dir says what is wrong
    if asked is not None and asked != recorded:
        raise SigmaError(f"cannot resume with --quantize {asked}: this run was trained with {recorded}; resume with "
                         "the run's value or start a new --out", file=resume_dir / RUN_FILE, field="--quantize")
    return recorded


def finetune_base(shards: Path, out: Path, base_dir: Path | str, experiment: str = "demo",
                  overrides: dict[str, Any] | None = None, resume: bool = False, progress: bool = True,
                  stop_after: int | None = None, task_text: bool = True, extend_steps: bool = False,
                  instruction: str | None = None) -> TrainResult:
    """`sigma train --finetune-base DIR|lerobot:PATH_OR_ID`: the base policy fine-tuned on Sigma's train split with
    Sigma's budget; a LeRobot checkpoint with its own loss, saved as a LeRobot checkpoint (training/lerobot_task.py).

    task_text: the fine-tuned base reads each window's own instruction (as Sigma does) instead of the generic one
    it was trained with, so the control group has the same information as Sigma (the strongest honest control);
    False keeps the base's fixed instruction (an embedded base's own; for a LeRobot base, which has none,
    `instruction`)."""
    shards, out = Path(shards), Path(out)
    config = resolve_config(experiment, overrides or {}, out if resume else None, extend_steps)
    if config.gradient_checkpointing:
        raise SigmaError("is for Sigma's backbone; the control group trains its base as it is",
                         field="--gradient-checkpointing")
    train_ds, val_ds, meta = load_splits(shards)
    lerobot = is_lerobot_ref(str(base_dir))
    if lerobot:
        base, source, record = _lerobot_to_finetune(str(base_dir), meta, shards, task_text, instruction)
        text = {"mode": "task", "instruction": base.instruction}
    else:
        base, source, record = _embedded_to_finetune(Path(base_dir), task_text), str(Path(base_dir).resolve()), None
        text = _base_text(base.config)
    identity = {"kind": "base", "experiment": experiment, "shards": str(shards.resolve()), "base": source,
                "task_text": task_text}
    check_run_dir(out, "base", identity, resume)
    _write_run_file(out, identity)
    _write_policy_spec(out, meta, text, with_base=False, model=record)  # RUN/model is the base itself
    options = {"resume": resume, "progress": progress, "stop_after": stop_after, "extend_steps": extend_steps}
    if lerobot:
        from sigma_vla.training.lerobot_task import fit_lerobot

        return fit_lerobot(base, config, train_ds, val_ds, out, **options)
    return _fit_base_policy(base, meta, config, train_ds, val_ds, out, **options)


def _embedded_to_finetune(base_dir: Path, task_text: bool):
    if not (base_dir / "config.json").is_file():
        raise SigmaError("not a base-policy directory (run `sigma train-base` first)", file=base_dir,
                         field="--finetune-base")
    base = TinyBasePolicy.from_pretrained(base_dir)
    if task_text:
        base.config.instruction = None  # read the batch's text tokens (saved so in RUN/model/config.json)
    return base


def _lerobot_to_finetune(reference: str, meta: dict[str, Any], shards: Path, task_text: bool,
                         instruction: str | None):
    """(trainable LeRobotPolicyBase, recorded reference, policy.json's model record) of a `lerobot:` checkpoint,
    its features checked against the shards before the run directory exists."""
    field = "--finetune-base"
    if not task_text and not instruction:
        raise SigmaError("a LeRobot base has no fixed instruction of its own: give the one to keep",
                         field="--keep-base-instruction")
    source = canonical(reference, field)
    fixed = None if task_text else instruction
    base = lerobot_base(source, {**meta, "text": {"instruction": fixed}}, field, shards / "meta.json", frozen=False)
    return base, source, lerobot_model_record(source, fingerprint(resolve(source, field)))


def train_base(shards: Path, out: Path, instruction: str | None, split: str = "base", steps: int = 2000,
               batch_size: int = 64, lr: float = 2e-3, seed: int = 0, resume: bool = False, progress: bool = True,
               model_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """`sigma train-base`: a TinyBasePolicy on one split of SHARDS (by default the `base` episodes, disjoint from
    Sigma's splits), reading the one `instruction` (None: each window's own task text; the demo passes
    sim.instructions.GENERIC_INSTRUCTION), then frozen. model_options override TinyBaseConfig fields (vision, ...).
    Returns base_info.json's record: split, samples, steps, instruction, shards, last_loss."""
    shards, out = Path(shards), Path(out)
    data = ShardDataset(shards, split)
    if len(data) == 0:
        raise SigmaError(f"split '{split}' has no windows: prep with a base share (e.g. --split "
                         "train:0.6,val:0.1,test:0.1,base:0.2) or pass --split train", file=shards, field="--split")
    meta = data.meta
    config = TinyBaseConfig(state_dim=int(meta["state_dim"]), action_dim=int(meta["action_dim"]),
                            horizon=meta_dims(meta)[0], num_cameras=len(meta.get("cameras") or []),
                            instruction=instruction, **(model_options or {}))
    train_cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup_steps=min(20, steps // 10),
                            checkpoint_every=max(1, steps // 2), keep_last=1, val_every=0, seed=seed)
    if check_dir(out, "base") == "ours" and not resume and ((out / "config.json").exists() or ckpt.step_dirs(out)):
        raise SigmaError("already holds a base (retraining it would change the base every run over it was trained "
                         "on); pass --resume to continue it or choose another --out", file=out)
    torch.manual_seed(seed)
    base = TinyBasePolicy(config)
    claim_dir(out, "base")  # the one output rule: files that are not ours are refused and kept
    result = _fit_base_policy(base, meta, train_cfg, data, None, out, resume=resume, progress=progress)
    copy_base(out / MODEL_DIR, out)  # OUT/ itself is a base-policy directory (atomic copies, as RUN/base gets)
    last = result.history[-1].get("loss", float("nan")) if result.history else float("nan")
    info = {"split": split, "samples": len(data), "steps": result.steps, "instruction": instruction,
            "shards": str(shards.resolve()), "last_loss": float(last)}
    atomic_write_text(out / BASE_INFO, json.dumps(info, indent=2) + "\n")
    _write_policy_spec(out, meta, _base_text(config), with_base=False)  # OUT/ is the base itself
    return info


def _base_text(config: Any) -> dict[str, Any]:
    """A base's text settings: token length, and the one instruction it always reads (None: the batch's own)."""
    return {"mode": "tokens", "max_len": config.text_max_len, "instruction": config.instruction}


def _fit_base_policy(base, meta: dict[str, Any], config: TrainConfig, train_ds, val_ds, out: Path,
                     **train_options: Any) -> TrainResult:
    """A base policy through the trainer (BaseFinetuneTask): `train_base` and the control group share this."""
    chunk = meta_dims(meta)[1]
    task = BaseFinetuneTask(base, config, shard_transform(meta, base_text(base), config.paraphrases, config.seed),
                            chunk)
    return train(task, train_ds, val_ds, config, out, **train_options)
