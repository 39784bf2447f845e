"""Training-step throughput and peak memory on CPU -> benchmarks/results/train.json.

--vs-control times Sigma's demo step and the control group's (the embedded base fine-tuned, BaseFinetuneTask) at
the same batch, alternating in one process so both see the same machine, and counts the FLOPs of Sigma's step per
workspace (torch's FlopCounterMode): what the step spends, and how close to the CPU's arithmetic it runs.

For the tiny and demo experiments: samples/s and peak memory of one optimizer step (forward, TRAF + TSAC losses,
backward, AdamW), with and without TRAF's hard-sample term, with LoRA (paper 4.2) and with full fine-tuning of the
backbone. Each variant runs in its own process, so ru_maxrss (a process-lifetime peak) is that variant's: we report
the process peak and the step's own peak above the resident size before the first step. samples/s uses the fastest
of the timed steps (the machine may be shared; the median is reported too).

--full-demo also times a whole `sigma train --config demo` run (validation, checkpoints, final model) on synthetic
shards shaped like the simulator's (docs/architecture.md: 16-dim state, 4-dim action, 1 camera), the < 6 min target.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/train.py [--steps 5] [--full-demo] [--threads 2] [--vs-control
        [--vision-tokens 8,4]]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sigma_vla.sim.instructions import TEMPLATES

RESULTS = Path(__file__).parent / "results" / "train.json"
VARIANTS = [(exp, trainable, hard) for exp in ("tiny", "demo") for trainable in ("lora", "full")
            for hard in (True, False)]
SIM_DIMS = {"state_dim": 16, "action_dim": 4}  # the SO-101 simulator's STATE_NAMES and [dx, dy, dz, grasp]
# The recorder's training phrasings: their lengths set how many text tokens the backbone runs (Sigma drops the
# padding every text of a batch shares).
TASKS = tuple(t.text for t in TEMPLATES if not t.held_out)


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def fake_meta(model_cfg) -> dict:
    ds, da = model_cfg.state_dim, model_cfg.action_dim
    return {"params": {"horizon": model_cfg.horizon, "chunk": model_cfg.chunk, "image_size": model_cfg.vision.image_size},
            "cameras": [f"cam{i}" for i in range(model_cfg.vision.num_cameras)], "state_dim": ds, "action_dim": da,
            "tasks": list(TASKS),
            "normalization": {"robot_state": {"mean": [0.0] * ds, "std": [1.0] * ds},
                              "action": {"mean": [0.0] * da, "std": [1.0] * da}}}


def fake_batch(model_cfg, batch_size: int) -> dict:
    """A simulator-shaped batch whose rows read TASKS in turn (the transform tokenizes them)."""
    import torch

    from sigma_vla.models import make_fake_batch

    batch = make_fake_batch(model_cfg, batch_size, with_base_actions=True)
    batch.pop("text_input_ids"), batch.pop("text_attention_mask")
    batch["task_index"] = torch.arange(batch_size) * 7 % len(TASKS)
    return batch


def preset_for(experiment: str):
    from sigma_vla.training.registry import get_experiment

    preset = get_experiment(experiment).model_preset_config()
    if experiment == "demo":
        preset = preset.replace(**SIM_DIMS)
    return preset


def one_variant(experiment: str, trainable: str, hard: bool, steps: int) -> dict:
    """Time `steps` optimizer steps after 2 warm-up steps, in this process."""
    import torch

    from sigma_vla.models import SigmaModel
    from sigma_vla.processing.transforms import BatchTransform
    from sigma_vla.training.optim import build_optimizer
    from sigma_vla.training.registry import get_experiment
    from sigma_vla.training.tasks import SigmaTask

    exp = get_experiment(experiment)
    traf = exp.train.traf if hard else dataclasses.replace(exp.train.traf, rho=0.0, lambda_hard=0.0)
    config = exp.train.replace(trainable=trainable, traf=traf)
    torch.manual_seed(0)
    model_cfg = preset_for(experiment)
    task = SigmaTask(SigmaModel(model_cfg), config, BatchTransform.from_meta(fake_meta(model_cfg),
                                                                            model_cfg.language.text_max_len))
    groups = task.param_groups(trainable)
    opt = build_optimizer(groups, config)
    batch = fake_batch(model_cfg, config.batch_size)
    rss_before = _rss_mb()
    times = []
    for i in range(steps + 2):
        start = time.perf_counter()
        loss, _ = task.loss(task.model, batch, i)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= 2:
            times.append(time.perf_counter() - start)
    best = min(times)  # the machine is shared: the fastest step is the least disturbed estimate
    return {"experiment": experiment, "trainable": trainable, "hard_term": hard, "batch_size": config.batch_size,
            "trainable_params": sum(p.numel() for g in groups.values() for _, p in g),
            "total_params": sum(p.numel() for p in task.model.parameters()),
            "step_s_best": round(best, 4), "step_s_median": round(statistics.median(times), 4),
            "step_s_all": [round(t, 4) for t in times], "samples_per_s": round(config.batch_size / best, 2),
            "samples_per_s_median": round(config.batch_size / statistics.median(times), 2),
            "load_avg_1min": round(os.getloadavg()[0], 2),
            "peak_rss_mb": round(_peak_mb(), 1), "step_peak_above_start_mb": round(_peak_mb() - rss_before, 1),
            "threads": torch.get_num_threads()}


def _sigma_step(batch_size: int, vision_tokens: int | None = None):
    """(step function, model, batch) of Sigma's demo training step on a simulator-shaped fake batch; vision_tokens
    replaces the preset's N_v (how many vision tokens the backbone reads)."""
    import torch

    from sigma_vla.models import SigmaModel
    from sigma_vla.processing.transforms import BatchTransform
    from sigma_vla.training.optim import build_optimizer
    from sigma_vla.training.registry import get_experiment
    from sigma_vla.training.tasks import SigmaTask

    config = get_experiment("demo").train.replace(batch_size=batch_size)
    torch.manual_seed(0)
    cfg = preset_for("demo")
    if vision_tokens is not None:
        cfg = cfg.replace(vision=dataclasses.replace(cfg.vision, num_tokens=vision_tokens))
    task = SigmaTask(SigmaModel(cfg), config, BatchTransform.from_meta(fake_meta(cfg), cfg.language.text_max_len))
    opt = build_optimizer(task.param_groups("lora"), config)
    batch = fake_batch(cfg, batch_size)

    def step(i: int) -> None:
        loss, _ = task.loss(task.model, batch, i)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, task, batch


def _control_step(batch_size: int):
    """The control group's step: the demo's embedded base (TinyBaseConfig defaults), fully fine-tuned."""
    import torch

    from sigma_vla.bases.policy import TinyBaseConfig, TinyBasePolicy
    from sigma_vla.processing.transforms import BatchTransform
    from sigma_vla.training.optim import build_optimizer
    from sigma_vla.training.registry import get_experiment
    from sigma_vla.training.tasks import BaseFinetuneTask

    config = get_experiment("demo").train.replace(batch_size=batch_size)
    torch.manual_seed(0)
    cfg = preset_for("demo")
    base = TinyBasePolicy(TinyBaseConfig(state_dim=cfg.state_dim, action_dim=cfg.action_dim, horizon=cfg.horizon))
    task = BaseFinetuneTask(base, config, BatchTransform.from_meta(fake_meta(cfg), base.config.text_max_len),
                            cfg.chunk)
    opt = build_optimizer(task.param_groups("full"), config)
    batch = fake_batch(cfg, batch_size)

    def step(i: int) -> None:
        loss, _ = task.loss(task.model, batch, i)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def sigma_flops(task, batch) -> dict:
    """GFLOPs of one Sigma step: forward per workspace, and forward + backward in all."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False, depth=2) as fwd:
        loss, _ = task.loss(task.model, batch, 0)
    with FlopCounterMode(display=False, depth=1) as both:
        loss, _ = task.loss(task.model, batch, 0)
        loss.backward()
    task.model.zero_grad(set_to_none=True)
    per_module = {k.removeprefix("SigmaModel."): round(sum(v.values()) / 1e9, 2)
                  for k, v in fwd.get_flop_counts().items() if k.count(".") == 1 and k.startswith("SigmaModel.")}
    per_module["other (vision workspace, losses)"] = round(fwd.get_total_flops() / 1e9 - sum(per_module.values()), 2)
    return {"forward_gflop": round(fwd.get_total_flops() / 1e9, 2), "forward_gflop_per_workspace": per_module,
            "step_gflop": round(both.get_total_flops() / 1e9, 2)}


def vs_control(steps: int, batch_size: int = 16, vision_tokens: tuple[int, ...] = ()) -> dict:
    """Sigma's and the control's step, alternating (A B A B ...) after warm-up, best and median of each; each of
    vision_tokens adds Sigma with that N_v to the alternation."""
    sigma, task, batch = _sigma_step(batch_size)
    fns = {"sigma": sigma, "control": _control_step(batch_size)}
    fns.update({f"sigma_nv{n}": _sigma_step(batch_size, n)[0] for n in vision_tokens})
    for i in range(2):
        for fn in fns.values():
            fn(i)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(steps):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn(i)
            times[name].append(time.perf_counter() - start)
    out = {name: {"step_s_best": round(min(t), 4), "step_s_median": round(statistics.median(t), 4)}
           for name, t in times.items()}
    out["ratio_median"] = round(out["sigma"]["step_s_median"] / out["control"]["step_s_median"], 2)
    for n in vision_tokens:  # how much faster than the preset's Sigma
        out[f"sigma_nv{n}"]["speedup_median"] = round(out["sigma"]["step_s_median"] /
                                                      out[f"sigma_nv{n}"]["step_s_median"], 2)
    flops = sigma_flops(task, batch)
    flops["achieved_gflop_per_s"] = round(flops["step_gflop"] / out["sigma"]["step_s_best"], 1)
    return {"batch_size": batch_size, "steps": steps, **out, "sigma_flops": flops,
            "demo_sigma_stage_s_at_median": round(out["sigma"]["step_s_median"] * 1200, 0),
            "load_avg_1min": round(os.getloadavg()[0], 2)}


def full_demo(threads: int) -> dict:
    """Wall time of a whole demo training run on synthetic simulator-shaped shards (subprocess: the real CLI)."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "training"))
    from fake_shards import write_fake_shards

    from sigma_vla.training.registry import get_experiment

    exp = get_experiment("demo")
    cfg = preset_for("demo")
    with tempfile.TemporaryDirectory() as tmp:
        shards = write_fake_shards(Path(tmp) / "shards", n_train=480, n_val=48, with_base=True, config=cfg,
                                   image_size=cfg.vision.image_size, shard_size=256)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)}
        start = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "sigma_vla.cli.main", "train", str(shards), "--out",
                              str(Path(tmp) / "run"), "--config", "demo", "--no-progress"], env=env,
                             capture_output=True, text=True)
        wall = time.perf_counter() - start
        if res.returncode:
            raise RuntimeError(res.stderr[-2000:])
        log = (Path(tmp) / "run/train_log.csv").read_text().splitlines()
    return {"steps": exp.train.steps, "batch_size": exp.train.batch_size, "wall_s": round(wall, 1),
            "target_s": 360, "within_target": wall < 360, "first_row": log[1], "last_row": log[-1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--full-demo", action="store_true")
    ap.add_argument("--vs-control", action="store_true", help="only Sigma's demo step against the control's")
    ap.add_argument("--vision-tokens", type=lambda v: tuple(int(n) for n in v.split(",")), default=(),
                    metavar="N[,N...]", help="with --vs-control: also Sigma with these N_v, alternating")
    ap.add_argument("--one", nargs=3, metavar=("EXPERIMENT", "TRAINABLE", "HARD"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(one_variant(args.one[0], args.one[1], args.one[2] == "hard", args.steps)))
        return
    if args.vs_control:
        import torch

        torch.set_num_threads(args.threads)
        r = vs_control(args.steps, vision_tokens=args.vision_tokens)
        print(f"batch {r['batch_size']}: Sigma {r['sigma']['step_s_median']:.3f} s/step, control "
              f"{r['control']['step_s_median']:.3f} s/step (median; Sigma / control {r['ratio_median']} x); "
              f"Sigma's step {r['sigma_flops']['step_gflop']} GFLOP at {r['sigma_flops']['achieved_gflop_per_s']} "
              f"GFLOP/s; forward per workspace {r['sigma_flops']['forward_gflop_per_workspace']}")
        for n in args.vision_tokens:
            v = r[f"sigma_nv{n}"]
            print(f"Sigma with N_v = {n}: {v['step_s_median']:.3f} s/step ({v['speedup_median']} x faster)")
        previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({**previous, "vs_control": r}, indent=2) + "\n")
        print(f"wrote {RESULTS}")
        return
    rows = []
    for exp, trainable, hard in VARIANTS:
        cmd = [sys.executable, __file__, "--one", exp, trainable, "hard" if hard else "nohard", "--steps",
               str(args.steps), "--threads", str(args.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if out.returncode:
            raise RuntimeError(out.stderr[-2000:])
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{exp:5s} {trainable:4s} hard={hard!s:5s}  {r['samples_per_s']:8.1f} samples/s  "
              f"step {r['step_s_best']:.3f} s (median {r['step_s_median']:.3f})  peak {r['peak_rss_mb']:.0f} MB "
              f"(+{r['step_peak_above_start_mb']:.0f})")
    result = {"machine": {"cpus": os.cpu_count(), "threads": args.threads,
                          "load_avg_at_end": list(os.getloadavg())}, "variants": rows}
    if args.full_demo:
        result["demo_run"] = full_demo(args.threads)
        print(f"demo run: {result['demo_run']['wall_s']} s for {result['demo_run']['steps']} steps")
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if not args.full_demo and "demo_run" in previous:
        result["demo_run"] = previous["demo_run"]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
