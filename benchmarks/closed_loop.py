"""Benchmark the closed loop: roll trained policies out on held-out seeds and instruction templates.

    python benchmarks/closed_loop.py --policy base=demo_out/run:base --policy sigma=demo_out/run:sigma \
        [--policy "base fine-tuned=demo_out/base_finetuned:base"] [--episodes 50] [--workers 2] \
        [--out benchmarks/results/closed_loop.json]

Trains nothing. Each --policy is LABEL=DIRECTORY:MODE, where DIRECTORY is a Sigma run (modes base, sigma,
sigma+adapter) or a base / fine-tuned-base directory (mode base). Every policy runs the same planned episodes
(`evaluation.rollout.plan_episodes`: held-out seeds, held-out templates by default). The JSON holds, per policy,
every rate of `evaluation.rollout.RATES` with its 95% Wilson interval, the splits by instruction kind, template and
zone, the mean final distance and length, and the wall time per episode (with --workers W, wall time / episodes:
the throughput a user sees).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from sigma_vla.evaluation.rollout import TEMPORAL_ENSEMBLE, RolloutJob, format_summary, plan_episodes, run_rollouts
from sigma_vla.outdir import atomic_write_text


def parse_policy(spec: str) -> tuple[str, str, str]:
    label, _, rest = spec.partition("=")
    directory, _, mode = rest.rpartition(":")
    if not (label and directory and mode):
        raise SystemExit(f"--policy {spec!r}: expected LABEL=DIRECTORY:MODE")
    return label, directory, mode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", action="append", required=True, help="LABEL=DIRECTORY:MODE (repeat)")
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--templates", default="held-out", choices=["held-out", "seen", "all"])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-steps", type=int, default=120)
    ap.add_argument("--replan-every", type=int, default=1)
    ap.add_argument("--ensemble", type=float, default=TEMPORAL_ENSEMBLE, help="temporal ensembling weight k (0: off)")
    ap.add_argument("--image-size", type=int, default=None, help="default: the policy's training image size")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "closed_loop.json")
    args = ap.parse_args()

    from sigma_vla.inference.policy import load_policy

    specs = plan_episodes(args.episodes, args.seed, args.templates)
    results = {}
    for label, directory, mode in map(parse_policy, args.policy):
        size = args.image_size or load_policy(directory, mode, args.replan_every).config.image_size
        job = RolloutJob(directory, mode, args.replan_every, size, args.max_steps, args.ensemble)
        start = time.perf_counter()
        s = run_rollouts(job, specs, args.out.parent / "closed_loop" / label.replace(" ", "_"), animations=1,
                         workers=args.workers, label=label)
        wall = time.perf_counter() - start
        print(format_summary(label, s), flush=True)
        results[label] = {k: v for k, v in s.items() if k != "episodes_detail"}
        results[label].update(wall_s=wall, wall_s_per_episode=wall / len(specs))
    record = {"benchmark": "closed_loop", "episodes": args.episodes, "seed": args.seed, "templates": args.templates,
              "workers": args.workers, "max_steps": args.max_steps, "replan_every": args.replan_every, "ensemble": args.ensemble,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
              "policies": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(record, indent=1))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
