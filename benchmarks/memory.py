"""Memory of `--config pi05` measured on CPU: the frozen backbone's bytes per precision, one training step's peak,
and the per-GPU figure they imply for the GPU recipe -> benchmarks/results/memory.json.

    python benchmarks/memory.py [--step-modes nf4 [none int8]] [--batches 1 2] [--checkpointing-batches 1 4]
                                [--out benchmarks/results/memory.json]

1. Bytes of the frozen backbone of the pi0.5-shaped stand-in (SigmaConfig.pi05_like: Gemma-2B-shaped, 2.59 B
   parameters, random weights, built on CPU) at fp32, bf16 (the float backbone cast), nf4 and int8
   (`--quantize`, bitsandbytes), counted by models.quantize.frozen_bytes (every frozen parameter and buffer by its
   storage, quantization statistics included). Also the trainable parameters (LoRA + heads).
2. Peak memory of one optimizer step (forward, TRAF + TSAC losses, backward, AdamW's first step, which allocates its
   states) at batch 1 and 2 without gradient checkpointing and 1 and 4 with it, with an nf4 backbone (--step-modes). Each case runs in its
   own process; the kernel's peak-RSS counter is reset after the model and optimizer are built (clear_refs), so the
   step's peak is not hidden by the build's (a quantized backbone is built in fp32 first). Activations here are
   fp32: the GPU recipe's bf16 autocast halves them, so the derived figure below is an upper bound in that term.
3. Derived, not measured on a GPU, per precision: its frozen bytes + trainable weights + the step's fixed part
   (AdamW states, gradients, workspace) + per-sample activations x the per-GPU micro-batch, the step's peak fitted
   as a line in the batch, for the README's recipe (micro-batch 32) and smaller ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "memory.json"
PRECISIONS = ("fp32", "bf16", "nf4", "int8")
GiB = 2**30


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field + ":"))


def _reset_peak() -> None:
    """Linux: writing 5 to clear_refs resets VmHWM (the peak resident size) to the current size."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def _build(quantize: str, preset: str):
    import torch

    from sigma_vla.models import SigmaConfig, SigmaModel

    torch.manual_seed(0)
    base = SigmaConfig.pi05_like() if preset == "pi05" else SigmaConfig.tiny()
    cfg = base.replace(backbone=dataclasses.replace(base.backbone, quantize=quantize))
    return SigmaModel(cfg), cfg


def frozen_case(precision: str, preset: str) -> dict:
    """Bytes of the frozen backbone at one precision, in this process."""
    import torch

    from sigma_vla.models.quantize import frozen_bytes

    start = time.perf_counter()
    model, _ = _build(precision if precision in ("nf4", "int8") else "none", preset)
    if precision == "bf16":
        for p in model.backbone.parameters():
            if not p.requires_grad:
                p.data = p.data.to(torch.bfloat16)
    backbone = sum(p.numel() for p in model.backbone.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"precision": precision, "frozen_backbone_bytes": frozen_bytes(model.backbone),
            "backbone_params_as_stored": backbone, "trainable_params": trainable,
            "build_s": round(time.perf_counter() - start, 1)}


def step_case(quantize: str, batch_size: int, checkpointing: bool, preset: str) -> dict:
    """Peak resident memory of one training step, in this process."""
    import torch

    from benchmarks.train import fake_meta
    from sigma_vla.models import make_fake_batch
    from sigma_vla.models.quantize import frozen_bytes
    from sigma_vla.processing.transforms import BatchTransform
    from sigma_vla.training.optim import build_optimizer
    from sigma_vla.training.registry import get_experiment
    from sigma_vla.training.tasks import SigmaTask

    torch.set_num_threads(2)
    model, cfg = _build(quantize, preset)
    if checkpointing:
        model.backbone.enable_gradient_checkpointing()
    config = get_experiment(preset).train.replace(batch_size=batch_size)
    task = SigmaTask(model, config, BatchTransform.from_meta(fake_meta(cfg), cfg.language.text_max_len))
    opt = build_optimizer(task.param_groups("lora"), config)
    batch = make_fake_batch(cfg, batch_size, with_base_actions=True)
    batch.pop("text_input_ids"), batch.pop("text_attention_mask")
    batch["task_index"] %= 2  # fake_meta has two tasks
    gc.collect()
    _reset_peak()
    before = _status_kb("VmRSS") * 1024
    start = time.perf_counter()
    loss, _ = task.loss(task.model, batch, 0)
    loss.backward()
    opt.step()
    seconds = time.perf_counter() - start
    peak = _status_kb("VmHWM") * 1024
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"quantize": quantize, "batch_size": batch_size, "gradient_checkpointing": checkpointing,
            "frozen_backbone_bytes": frozen_bytes(model.backbone), "trainable_params": trainable,
            "rss_before_step_bytes": before, "peak_rss_bytes": peak, "step_peak_above_start_bytes": peak - before,
            "step_s": round(seconds, 1), "loss": float(loss)}


def _in_subprocess(preset: str, *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, __file__, "--preset", preset, "--one", *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"benchmarks/memory.py --one {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def slope(points: list[tuple[int, int]]) -> float:
    """Least-squares bytes per sample of (batch, step peak) points."""
    n = len(points)
    mx, my = sum(b for b, _ in points) / n, sum(p for _, p in points) / n
    return sum((b - mx) * (p - my) for b, p in points) / sum((b - mx) ** 2 for b, _ in points)


def fit_step(steps: list[dict], mode: str, ckpt: bool) -> tuple[float, float, list[int]] | None:
    """The step's peak above the built model as fixed + per_sample x batch (least squares over the batches
    measured): (fixed bytes, bytes per sample, batches), or None with fewer than two batches."""
    points = [(s["batch_size"], s["step_peak_above_start_bytes"]) for s in steps
              if (s["quantize"], s["gradient_checkpointing"]) == (mode, ckpt)]
    if len({b for b, _ in points}) < 2:
        return None
    per_sample = max(slope(points), 0.0)  # allocator noise can tilt a near-flat fit below 0
    first = min(points)
    return first[1] - per_sample * first[0], per_sample, sorted(b for b, _ in points)


def derive(frozen: dict[str, dict], steps: list[dict], micro_batch: int) -> dict[str, dict]:
    """The GPU figure at `micro_batch` per backbone precision, with and without checkpointing: the frozen weights
    of that precision + trainable weights + the step's fixed part (AdamW states, gradients, workspace) + activations
    per sample x micro_batch, the step measured with the first --step-modes (activations do not depend on how the
    frozen weights are stored)."""
    out = {}
    mode = steps[0]["quantize"]
    trainable = 4 * steps[0]["trainable_params"]
    for ckpt in (False, True):
        fit = fit_step(steps, mode, ckpt)
        if fit is None:
            continue
        fixed, per_sample, batches = fit
        for precision, f in frozen.items():
            total = f["frozen_backbone_bytes"] + trainable + fixed + micro_batch * per_sample
            out[f"{precision}{' + checkpointing' if ckpt else ''}"] = {
                "micro_batch": micro_batch, "step_measured_with": mode, "batches_measured": batches,
                "frozen_weights_gib": round(f["frozen_backbone_bytes"] / GiB, 2),
                "trainable_weights_gib": round(trainable / GiB, 2),
                "optimizer_gradients_workspace_gib": round(fixed / GiB, 2),
                "activations_per_sample_gib": round(per_sample / GiB, 3), "total_gib": round(total / GiB, 1),
                "total_gib_bf16_activations": round((total - micro_batch * per_sample / 2) / GiB, 1)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--step-modes", nargs="+", default=["nf4"], choices=["none", "nf4", "int8"],
                    help="backbone precisions a step is measured with (the derived figures use the first)")
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 2], help="batches measured without checkpointing")
    ap.add_argument("--checkpointing-batches", nargs="+", type=int, default=[1, 4],
                    help="with checkpointing (its activations are small: a wider spread measures them)")
    ap.add_argument("--micro-batches", nargs="+", type=int, default=[32, 8, 4],
                    help="per-GPU micro-batches to derive a figure for (the README's recipe: 32)")
    ap.add_argument("--preset", default="pi05", choices=["pi05", "tiny"], help="tiny: a seconds-long smoke run")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--one", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        kind, *rest = args.one
        result = frozen_case(rest[0], args.preset) if kind == "frozen" else \
            step_case(rest[0], int(rest[1]), rest[2] == "1", args.preset)
        print(json.dumps(result))
        return
    frozen = {}
    for precision in PRECISIONS:
        frozen[precision] = _in_subprocess(args.preset, "frozen", precision)
        print(f"frozen backbone {precision:5s} {frozen[precision]['frozen_backbone_bytes'] / GiB:6.2f} GiB", flush=True)
    steps = []
    for mode in args.step_modes:
        for ckpt in (False, True):
            for b in args.checkpointing_batches if ckpt else args.batches:
                s = _in_subprocess(args.preset, "step", mode, str(b), "1" if ckpt else "0")
                steps.append(s)
                print(f"step {mode:4s} batch {b} checkpointing {ckpt!s:5s}: peak {s['peak_rss_bytes'] / GiB:6.2f} GiB "
                      f"({s['step_peak_above_start_bytes'] / GiB:5.2f} GiB above the built model; {s['step_s']} s)",
                      flush=True)
    derived = {str(m): derive(frozen, steps, m) for m in args.micro_batches}
    for m, cases in derived.items():
        for key, d in cases.items():
            print(f"derived, micro-batch {m:>2s}, {key:23s}: {d['total_gib']:5.1f} GiB "
                  f"({d['total_gib_bf16_activations']:.1f} GiB with bf16 activations)")
    result = {"what": f"{args.preset} stand-in, random weights, CPU", "preset": args.preset, "frozen": frozen, "steps": steps,
              "derived_per_gpu": derived, "derived_note": "derived from CPU measurements, not measured on a GPU",
              "machine": {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count()},
              "date": time.strftime("%Y-%m-%d")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(args.out)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
