"""The training loop of paper 4.2 on Hugging Face Accelerate: gradient accumulation, mixed precision, data parallel
(DDP; gloo on CPU), checkpoints with exact resume, non-finite-loss skipping, and the logs of Table 1.

What is trained is a `TrainTask` (tasks.py): Sigma (LoRA + telepathy heads, TRAF + TSAC losses) or the base policy
(the fine-tuned control group), so both groups see the same loop, data order and step budget.

Determinism: micro-batch j is a pure function of (seed, j, rank) (batches.py), the checkpoint stores every RNG
stream, and validation runs under a forked RNG, so N steps + resume + M steps equals N + M straight steps.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import Dataset

from sigma_vla.errors import SigmaError
from sigma_vla.outdir import atomic_dir, writer_lock
from sigma_vla.progress import Progress
from sigma_vla.training import checkpoint as ckpt
from sigma_vla.training.batches import BatchPlan, collate, sequential_batches
from sigma_vla.training.config import TrainConfig
from sigma_vla.training.distributed import make_accelerator, process_state
from sigma_vla.training.logs import TRAIN_COLUMNS, TRAIN_LOG, VAL_COLUMNS, VAL_LOG, CsvLog, TensorBoardLog
from sigma_vla.training.optim import build_optimizer, build_scheduler, param_report
from sigma_vla.training.resume import choose_checkpoint, reconcile, saved_config


class TrainTask(Protocol):
    """What the loop needs from a model family (see tasks.py). A task's `cfg`, if it has one, is replaced by the
    settings a resumed run continues with (resume.py)."""

    model: nn.Module

    def param_groups(self, trainable: str) -> dict[str, list[tuple[str, nn.Parameter]]]: ...

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor], step: int) -> tuple[torch.Tensor, dict]: ...

    def save_model(self, model: nn.Module, directory: Path) -> None: ...

    def load_model(self, model: nn.Module, directory: Path) -> None: ...

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The task's own state beyond model and optimizer (Sigma's per-episode memory), checkpointed per rank."""
        ...

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None: ...


class NonFiniteLossError(SigmaError):
    """Too many non-finite steps in a row: the run stops, its last good checkpoint intact."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training: where it stopped and what survives, for the command to say how to resume (still a
    KeyboardInterrupt to every caller that does not ask)."""

    def __init__(self, step: int, steps: int, checkpoint: Path | None):
        super().__init__(step)
        self.step, self.steps, self.checkpoint = step, steps, checkpoint

    def describe(self) -> str:
        if self.checkpoint is None:
            kept = "no checkpoint yet, so a resume starts from step 0"
        else:
            saved = ckpt.checkpoint_step(self.checkpoint)
            lost = self.step - saved
            kept = (f"last checkpoint {self.checkpoint} (step {saved})"
                    + (f"; the {lost} steps since are not saved" if lost > 0 else ""))
        return f"interrupted at step {self.step} of {self.steps}; {kept}"


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    history: list[dict[str, Any]] = field(default_factory=list)
    skipped_steps: int = 0
    rank_digests: list[int] = field(default_factory=list)


def train(task: TrainTask, train_data: Dataset, val_data: Dataset | None, config: TrainConfig, run_dir: Path,
          resume: bool = False, progress: bool = True, stop_after: int | None = None,
          extend_steps: bool = False) -> TrainResult:
    """Train `task.model` for config.steps optimizer steps, writing checkpoints and logs under run_dir, and the
    final model to RUN/model/. stop_after: end this invocation (with a checkpoint) once that many steps are done,
    as if interrupted: a later `resume=True` call continues the same schedule. resume: continue from the newest
    verified checkpoint, with the same settings (extend_steps: config.steps may be larger; resume.py). One writer
    per run: the main process holds RUN's writer lock throughout (outdir.writer_lock)."""
    run_dir = Path(run_dir)
    main = process_state().is_main_process
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
    with writer_lock(run_dir) if main else contextlib.nullcontext():
        return _train(task, train_data, val_data, config, run_dir, resume, progress, stop_after, extend_steps)


def _train(task: TrainTask, train_data: Dataset, val_data: Dataset | None, config: TrainConfig, run_dir: Path,
           resume: bool, progress: bool, stop_after: int | None, extend_steps: bool) -> TrainResult:
    latest = choose_checkpoint(run_dir) if resume else None
    if latest is not None:
        config = reconcile(saved_config(latest), config, extend_steps, latest / "trainer_state.json")
        if hasattr(task, "cfg"):
            task.cfg = config
    acc = make_accelerator(config)
    if acc.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
    task.model.to(acc.device)
    groups, unreached = drop_unreached(task, task.param_groups(config.trainable), train_data, config, acc.device)
    report = param_report(task.model, groups)
    if unreached:
        report["unreached"] = unreached
        report["text"] += f"\nleft out (no loss reaches them, frozen): {', '.join(unreached)}"
        unexpected = [name for name in unreached if name not in expected_unreached(task.model)]
        if unexpected:
            report["summary"] += f"\nwarning: no loss reaches these, left out (frozen): {', '.join(unexpected)}"
    optimizer = build_optimizer(groups, config)
    scheduler = build_scheduler(optimizer, config)
    model, optimizer = acc.prepare(task.model, optimizer)
    plan = BatchPlan(len(train_data), config.batch_size, acc.num_processes, acc.process_index, config.seed)
    state = {"step": 0, "micro_batch": 0, "skipped": 0}
    if latest is not None:
        state = _restore(task, acc, optimizer, scheduler, latest, config)
    else:
        torch.manual_seed(config.seed + 7919 * acc.process_index)  # per-rank dropout / noise streams
    if acc.is_main_process:
        ckpt.write_json(run_dir / "train_config.json", config.to_dict())
        ckpt.write_json(run_dir / "param_report.json", report)
        acc.print(report["summary"])  # the optimizer groups and the expected leftovers: param_report.json
    resume_step = state["step"] if latest is not None else None
    logs = _Logs(run_dir, acc.is_main_process, resume_step)
    loop = _Loop(task, acc, model, optimizer, scheduler, plan, config, run_dir, logs, state)
    try:
        history = loop.run(train_data, val_data, progress, stop_after)
    finally:
        logs.close()
    digests = _rank_digests(acc, task)
    if acc.is_main_process and state["step"] >= config.steps:  # all files or none (outdir.atomic_dir)
        atomic_dir(run_dir / "model", lambda tmp: task.save_model(acc.unwrap_model(model), tmp))
    if acc.is_main_process:
        ckpt.write_json(run_dir / "summary.json", {"steps": state["step"], "skipped_steps": state["skipped"],
                                                    "world_size": acc.num_processes, "rank_weight_digests": digests,
                                                    "ranks_identical": len(set(digests)) == 1})
    acc.wait_for_everyone()
    return TrainResult(run_dir, state["step"], history, state["skipped"], digests)


class _Logs:
    def __init__(self, run_dir: Path, main: bool, resume_step: int | None):
        self.main = main
        self.train = CsvLog(run_dir / TRAIN_LOG, TRAIN_COLUMNS, resume_step) if main else None
        # a val row at step S describes the model after S updates (the checkpointed state): kept on resume at S
        val_resume = None if resume_step is None else resume_step + 1
        self.val = CsvLog(run_dir / VAL_LOG, VAL_COLUMNS, val_resume) if main else None
        self.tb = TensorBoardLog(run_dir, enabled=main)

    def write(self, row: dict, kind: str = "train") -> None:
        if self.main:
            (self.train if kind == "train" else self.val).write(row)
            self.tb.write(int(row["step"]), row, kind)

    def close(self) -> None:
        self.tb.close()


class _Loop:
    """One optimizer step = grad_accum micro-batches; non-finite steps are skipped and counted."""

    def __init__(self, task, acc, model, optimizer, scheduler, plan, config, run_dir, logs, state):
        self.task, self.acc, self.model, self.opt, self.sched = task, acc, model, optimizer, scheduler
        self.plan, self.cfg, self.run_dir, self.logs, self.state = plan, config, run_dir, logs, state
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        self.streak = 0

    def run(self, train_data: Dataset, val_data: Dataset | None, progress: bool,
            stop_after: int | None = None) -> list[dict]:
        bar = Progress(total=self.cfg.steps, initial=self.state["step"], desc="train", unit="step",
                       enabled=progress and self.acc.is_main_process)
        try:
            history = self._steps(train_data, val_data, bar, stop_after)
        except KeyboardInterrupt:
            bar.close()
            raise TrainingInterrupted(self.state["step"], self.cfg.steps,
                                      ckpt.latest_checkpoint(self.run_dir)) from None
        bar.close()
        return history

    def _steps(self, train_data: Dataset, val_data: Dataset | None, bar: Progress,
               stop_after: int | None) -> list[dict]:
        history = []
        last_saved = self.state["step"] if self.state["step"] else None
        end = self.cfg.steps if stop_after is None else min(self.cfg.steps, stop_after)
        while self.state["step"] < end:
            row = self.step(train_data)
            if row is None:
                continue
            history.append(row)
            bar.set_postfix(loss=f"{row['loss']:.4g}", lr=f"{row['lr']:.2e}")
            bar.update(1)
            step = self.state["step"]
            if self.cfg.checkpoint_every and step % self.cfg.checkpoint_every == 0:
                self.save()
                last_saved = step
            if val_data is not None and self.cfg.val_every and step % self.cfg.val_every == 0:
                self._report_val(self.validate(val_data), bar)
        if last_saved != self.state["step"]:
            self.save()
        done = self.state["step"] >= self.cfg.steps
        if done and val_data is not None and self.cfg.val_every and self.state["step"] % self.cfg.val_every:
            self._report_val(self.validate(val_data), bar)
        return history

    def _report_val(self, row: dict, bar: Progress) -> None:
        if row.get("val_loss") is None or not self.acc.is_main_process:
            return
        bar.set_postfix(val=f"{row['val_loss']:.4g}")
        bar.note(f"step {row['step']}: validation loss {row['val_loss']:.4g}"
                 + (f" (action loss {row['val_L_act']:.4g})" if row.get("val_L_act") is not None else ""))

    def step(self, data: Dataset) -> dict | None:
        t, cfg, acc = self.state["step"], self.cfg, self.acc
        start = time.perf_counter()
        sums: dict[str, float] = {}
        bad = torch.zeros((), device=acc.device)
        for _ in range(cfg.grad_accum):
            idx = self.plan.indices(self.state["micro_batch"])
            self.state["micro_batch"] += 1
            batch = {k: v.to(acc.device) for k, v in collate(data, idx).items()}
            with acc.accumulate(self.model):
                with acc.autocast():  # also covers loss terms computed outside the model's forward
                    loss, metrics = self.task.loss(self.model, batch, t)
                bad += (~torch.isfinite(loss.detach())).float()
                acc.backward(loss)  # always, so every rank joins the gradient all-reduce
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v) / cfg.grad_accum
        grad_norm = acc.clip_grad_norm_(self.params, cfg.grad_clip) if cfg.grad_clip > 0 else None
        if grad_norm is not None and acc.scaler is None:  # fp16's GradScaler handles overflowing gradients itself
            bad += (~torch.isfinite(grad_norm)).float()
        if acc.num_processes > 1:
            bad = acc.reduce(bad, "sum")
        if bad.item() > 0:
            return self._skip(t, sums)
        lr = self.opt.param_groups[0]["lr"]  # the rate this update uses (the scheduler moves it on below)
        self.opt.step()
        if getattr(self.opt, "step_was_skipped", False):  # fp16 overflow: the scaler lowered its scale; retry
            self.opt.zero_grad(set_to_none=True)
            self.state["skipped"] += 1
            return None
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        self.streak = 0
        self.state["step"] += 1
        row = self._row(t, sums, lr, time.perf_counter() - start)
        if t % cfg.log_every == 0 or self.state["step"] == cfg.steps:
            self.logs.write(row)
        return row

    def _skip(self, t: int, sums: dict) -> None:
        self.opt.zero_grad(set_to_none=True)
        self.streak += 1
        self.state["skipped"] += 1
        msg = f"step {t}: non-finite loss or gradient (loss={sums.get('loss', float('nan'))}); step skipped"
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
        if self.streak >= self.cfg.max_nonfinite:
            latest = ckpt.latest_checkpoint(self.run_dir)
            raise NonFiniteLossError(
                f"{self.streak} non-finite steps in a row at step {t}; stopping. Last good checkpoint: "
                f"{latest if latest else 'none yet'} (lower --lr, try --mixed-precision no, or check the data)",
                file=self.run_dir, field="loss")
        return None

    def _row(self, t: int, sums: dict, lr: float, seconds: float) -> dict:
        if self.acc.num_processes > 1:  # mean over ranks: the log describes the global batch
            keys = sorted(sums)
            vals = self.acc.reduce(torch.tensor([sums[k] for k in keys], device=self.acc.device), "mean")
            sums = dict(zip(keys, vals.tolist()))
        samples = self.cfg.batch_size * self.cfg.grad_accum * self.acc.num_processes
        return {**sums, "step": t, "lr": lr, "samples_per_s": samples / max(seconds, 1e-9),
                "epoch": self.plan.epoch(self.state["micro_batch"])}

    @torch.no_grad()
    def validate(self, data: Dataset) -> dict:
        """Mean loss over the first val_batches in-order batches, under a forked fixed RNG (training RNG untouched)."""
        model = self.acc.unwrap_model(self.model)
        model.eval()
        sums: dict[str, float] = {}
        batches = sequential_batches(data, self.cfg.batch_size, self.cfg.val_batches)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.seed)
            with self.acc.autocast():
                for idx in batches:
                    batch = {k: v.to(self.acc.device) for k, v in collate(data, idx).items()}
                    _, metrics = self.task.loss(model, batch, self.state["step"])
                    for k, v in metrics.items():
                        sums[k] = sums.get(k, 0.0) + float(v) / len(batches)
        model.train()
        row = {"step": self.state["step"], "val_loss": sums.get("loss"), "val_L_act": sums.get("L_act"),
               **{f"val_{k}": sums.get(k) for k in ("mse_vector", "mse_chunk", "mse_trajectory")}}
        self.logs.write(row, "val")
        return row

    def save(self) -> Path | None:
        """Rank 0 makes the temp dir; every rank writes its RNG; rank 0 writes the rest and renames."""
        step, acc = self.state["step"], self.acc
        tmp = ckpt.temp_dir(self.run_dir, step)
        if acc.is_main_process:
            ckpt.begin(self.run_dir, step)
        acc.wait_for_everyone()
        ckpt.save_state(ckpt.rng_state(), tmp, f"rng_rank{acc.process_index}")
        task_state = self.task.state_dict()
        if task_state:  # a task without state of its own (the base) leaves no file
            ckpt.save_state(task_state, tmp, f"task_rank{acc.process_index}")
        acc.wait_for_everyone()
        final = None
        if acc.is_main_process:
            self.task.save_model(acc.unwrap_model(self.model), tmp)
            ckpt.save_state(self.opt.state_dict(), tmp, "optimizer")
            ckpt.write_json(tmp / "scheduler.json", self.sched.state_dict())
            if acc.scaler is not None:  # fp16 loss scale (GPU only)
                ckpt.save_state(acc.scaler.state_dict(), tmp, "grad_scaler")
            ckpt.write_json(tmp / "trainer_state.json", {**self.state, "world_size": acc.num_processes,
                                                          "config": self.cfg.to_dict()})
            final = ckpt.commit(self.run_dir, step, self.cfg.keep_last)
        acc.wait_for_everyone()
        return final


def _restore(task, acc, optimizer, scheduler, directory: Path, config: TrainConfig) -> dict:
    """Load model, optimizer, scheduler, this rank's RNG and the data position from a complete checkpoint."""
    trainer_state = ckpt.read_json(directory / "trainer_state.json")
    task.load_model(acc.unwrap_model(task.model), directory)
    try:
        optimizer.load_state_dict(ckpt.load_state(directory, "optimizer"))
    except ValueError as err:  # e.g. a run from before the residual head had its own group (residual_lr_scale)
        raise SigmaError(f"the saved optimizer does not fit this version's parameter groups ({err}); start a new "
                         "run", file=str(directory / "optimizer.json")) from err
    scheduler.load_state_dict(ckpt.read_json(directory / "scheduler.json"))
    if acc.scaler is not None and (directory / "grad_scaler.json").exists():
        acc.scaler.load_state_dict(ckpt.load_state(directory, "grad_scaler"))
    rank_file = f"rng_rank{acc.process_index}"
    if trainer_state.get("world_size") != acc.num_processes or not (directory / f"{rank_file}.json").exists():
        warnings.warn(f"resuming with {acc.num_processes} processes from a {trainer_state.get('world_size')}-process "
                      "checkpoint: RNG streams are reseeded and the data order changes from here")
        torch.manual_seed(config.seed + 7919 * acc.process_index + trainer_state["step"])
    else:
        ckpt.set_rng_state(ckpt.load_state(directory, rank_file))
        if (directory / f"task_rank{acc.process_index}.json").exists():
            task.load_state_dict(ckpt.load_state(directory, f"task_rank{acc.process_index}"))
    acc.print(f"resumed from {directory} (step {trainer_state['step']})")
    return {k: int(trainer_state[k]) for k in ("step", "micro_batch", "skipped")}


def drop_unreached(task, groups: dict, data: Dataset, config: TrainConfig,
                   device: torch.device | str = "cpu") -> tuple[dict, list[str]]:
    """Freeze and leave out trainable parameters that no loss term reaches (found by one probe backward on the first
    samples, under a forked RNG and with the task's state restored). Why: AdamW would only decay them, and DDP
    without find_unused_parameters stalls on parameters that never receive a gradient."""
    saved = task.state_dict()
    idx = torch.arange(min(len(data), config.batch_size))
    with torch.random.fork_rng(devices=[]):
        batch = {k: v.to(device) for k, v in collate(data, idx).items()}
        loss, _ = task.loss(task.model, batch, 0)
        loss.backward()
    task.load_state_dict(saved)
    unreached, kept = [], {}
    for gname, named in groups.items():
        kept[gname] = []
        for name, p in named:
            if p.grad is None:
                unreached.append(name)
                p.requires_grad_(False)
            else:
                kept[gname].append((name, p))
            p.grad = None
    return {k: v for k, v in kept.items() if v}, unreached


def expected_unreached(model: nn.Module) -> set[str]:
    """The parameters a model says no loss trains: those of its modules with `loss_free = True` (models/action.py's
    fusion phi). drop_unreached leaves them out as it does any other, but only the others are news to the user."""
    return {f"{prefix}.{name}" if prefix else name for prefix, module in model.named_modules()
            if getattr(module, "loss_free", False) for name, _ in module.named_parameters()}


def _rank_digests(acc, task) -> list[int]:
    """A 60-bit hash of this rank's trainable weights, gathered from every rank (DDP keeps them identical)."""
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(acc.unwrap_model(task.model).named_parameters()):
        if p.requires_grad:
            h.update(name.encode())
            h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    local = torch.tensor([int(h.hexdigest()[:15], 16)], dtype=torch.int64, device=acc.device)
    return [int(x) for x in acc.gather(local).tolist()] if acc.num_processes > 1 else [int(local.item())]
