"""Benchmark the control loop at robot rate: one policy step (observation in, action chunk out) at batch 1.

    python benchmarks/control.py [--run RUN] [--steps 200] [--threads 2] [--episodes 4] [--no-server]
                                 [--out benchmarks/results/control.json]

In one process, side by side on the same observations: the base alone, base + Sigma (`--policy sigma`), and base +
Sigma + the risk-gated adapter (`sigma+adapter`, what `sigma serve` answers with), each `SigmaPolicy.plan` timed
over --steps steps (medians and rates), and where a Sigma step spends its time (building the batch with the
tokenizer, the base's chunk, Sigma's forward with and without path C's sampler). Then the same Sigma + adapter
through `sigma serve` and the client over loopback (server in its own process), and with --episodes > 0
closed-loop seconds per episode in the simulator for the base and Sigma (one process each, the same episodes).
Target (docs/pipeline.md, "Serving a real robot"): >= 30 Hz for base + Sigma on 2 cores at the embedded size, and
Sigma's seconds per episode <= 1.5 x the base's.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve import INSTRUCTION, make_obs, start_server, stats, stop_server  # noqa: E402  (benchmarks/serve.py)

from sigma_vla.inference.policy import load_policy  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODES = ("base", "sigma", "sigma+adapter")
TARGET_HZ = 30.0
TARGET_EPISODE_RATIO = 1.5


def timed(fn, steps: int, warmup: int = 10) -> list[float]:
    """Milliseconds of each call after a warm-up (first calls allocate and fill caches)."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        out.append(1e3 * (time.perf_counter() - start))
    return out


def with_rate(ms: list[float]) -> dict[str, float]:
    s = stats(ms)
    return {**s, "hz": 1e3 / s["median"]}


def in_process(run: Path, steps: int) -> dict[str, Any]:
    """Each mode's plan() on the same rotating observations; an episode reset every 100 steps."""
    policies = {mode: load_policy(run, mode) for mode in MODES}
    rng = np.random.default_rng(0)
    pool = [make_obs(policies["sigma"].metadata()["inputs"], rng) for _ in range(8)]
    out = {}
    for mode, policy in policies.items():
        i = iter(range(10**9))

        def step(policy=policy, i=i) -> None:
            n = next(i)
            if n % 100 == 0:
                policy.reset()
            policy.plan(pool[n % len(pool)], INSTRUCTION)

        out[mode] = with_rate(timed(step, steps))
    out["parts"] = sigma_parts(policies["sigma+adapter"], pool[0], steps)
    return out


@torch.no_grad()
def sigma_parts(policy, obs: dict[str, np.ndarray], steps: int) -> dict[str, dict[str, float]]:
    """Where one Sigma step goes: the batch (state, frames, tokenizer), the base's chunk, Sigma's forward."""
    batch = policy.batch(obs, INSTRUCTION)
    model = policy.model
    return {
        "batch": stats(timed(lambda: policy.batch(obs, INSTRUCTION), steps)),
        "base_chunk": stats(timed(lambda: policy.base.predict_chunk(batch), steps)),
        "sigma_forward_chunk_only": stats(timed(lambda: model(batch, trajectory=False), steps)),
        "sigma_forward_with_path_c": stats(timed(lambda: model(batch, trajectory=True), steps)),
    }


def through_server(run: Path, steps: int) -> dict[str, Any]:
    from sigma_vla_client import PolicyClient

    proc, port = start_server(0, str(run))
    try:
        with PolicyClient("127.0.0.1", port, timeout=120.0) as client:
            rng = np.random.default_rng(0)
            pool = [make_obs(client.metadata["inputs"], rng) for _ in range(8)]
            i = iter(range(10**9))
            rtt = timed(lambda: client.infer(pool[next(i) % len(pool)], INSTRUCTION), steps)
    finally:
        stop_server(proc)
    return {"policy": "sigma+adapter", "roundtrip_ms": with_rate(rtt)}


def closed_loop(run: Path, episodes: int) -> dict[str, Any]:
    """Seconds per simulated episode, one process, the same planned held-out episodes for each policy."""
    from sigma_vla.evaluation.rollout import RolloutJob, iter_episodes, plan_episodes

    specs = plan_episodes(episodes, 0)
    out = {}
    for mode in ("base", "sigma"):
        size = load_policy(run, mode).config.image_size
        job = RolloutJob(str(run), mode, 1, size, 120)
        start = time.perf_counter()
        results = [res for res, _ in iter_episodes(job, specs, 0, 1)]
        seconds = time.perf_counter() - start
        out[mode] = {"episodes": episodes, "s_per_episode": seconds / episodes,
                     "steps_per_episode": float(np.mean([r.length for r in results]))}
    out["sigma_over_base"] = out["sigma"]["s_per_episode"] / out["base"]["s_per_episode"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, default=ROOT / "demo_out" / "run", help="A Sigma run (sigma train).")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--episodes", type=int, default=4, help="Closed-loop episodes per policy (0: skip).")
    ap.add_argument("--no-server", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "control.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    record: dict[str, Any] = {"run": str(args.run), "threads": args.threads, "steps": args.steps,
                              "machine": {"platform": platform.platform(), "processor": platform.processor()}}
    record["in_process_ms"] = in_process(args.run, args.steps)
    for mode in MODES:
        r = record["in_process_ms"][mode]
        print(f"{mode:>14}: {r['median']:6.1f} ms median, p90 {r['p90']:6.1f} ms -> {r['hz']:5.1f} Hz")
    for part, r in record["in_process_ms"]["parts"].items():
        print(f"{'':>14}  {part}: {r['median']:.1f} ms")
    if not args.no_server:
        record["server"] = through_server(args.run, args.steps)
        r = record["server"]["roundtrip_ms"]
        print(f"{'served':>14}: {r['median']:6.1f} ms median round trip -> {r['hz']:5.1f} Hz")
    if args.episodes:
        record["closed_loop"] = closed_loop(args.run, args.episodes)
        c = record["closed_loop"]
        print(f"closed loop: base {c['base']['s_per_episode']:.2f} s/episode, Sigma {c['sigma']['s_per_episode']:.2f}"
              f" s/episode ({c['sigma_over_base']:.2f} x)")
    record["meets_hz_target"] = record["in_process_ms"]["sigma"]["hz"] >= TARGET_HZ
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
