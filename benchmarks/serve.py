"""Benchmark `sigma serve`: round-trip latency at batch 1 over loopback, and how much of it is the model.

    python benchmarks/serve.py [--requests 1000] [--image-sizes 64,224] [--run RUN] [--out results/serve.json]

The server runs in its own process (as in deployment: the robot's client and the policy do not share a GIL) on
127.0.0.1; the client is `sigma_vla.client.PolicyClient`, one request at a time, a fresh observation each time.
Scenarios:
- stand-in policy (zero-cost model, `sigma_vla.serving.standin`) with one camera at each --image-sizes: the
  round trip is serialization + transport + the server's checks alone;
- with --run RUN, the real policy of that run through `sigma_vla.inference.load_sigma_policy_factory` (skipped
  with a note if the loader is not there yet), with observations shaped from its metadata.
Per scenario: round trip (client clock), server time and model time (server-reported), overhead = round trip -
model time per request, model share = sum(model) / sum(round trip), and the encoded request size. Also the
pure pack + unpack time of one request (no socket). Target (issue 6): overhead median < 2 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from sigma_vla.client import PolicyClient
from sigma_vla.wire import pack, unpack

TARGET_OVERHEAD_MS = 2.0
INSTRUCTION = "the bin is on your left, far from you"


def serve_main(image_size: int, run: str | None) -> None:
    """Child process: serve until SIGINT, printing 'PORT <n>' once bound."""
    from sigma_vla.serving.server import PolicyServer, ServerConfig

    if run:
        from sigma_vla.cli.serve import load_policy_factory

        factory = load_policy_factory(Path(run))
    else:
        from sigma_vla.serving.standin import standin_factory

        factory = standin_factory(image_size=image_size)
    PolicyServer(factory, ServerConfig(port=0)).run(on_ready=lambda port: print(f"PORT {port}", flush=True))


def start_server(image_size: int, run: str | None) -> tuple[subprocess.Popen, int]:
    cmd = [sys.executable, __file__, "--serve", "--image-sizes", str(image_size)] + (["--run", run] if run else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        proc.kill()
        raise RuntimeError(f"server did not start: {line}{proc.stderr.read()[-2000:]}")
    return proc, int(line.split()[1])


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(2)  # SIGINT: the graceful path
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def make_obs(inputs: dict[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A random observation exactly as the policy declared it."""
    obs = {}
    for key, spec in inputs.items():
        dtype, shape = np.dtype(spec["dtype"]), tuple(spec["shape"])
        if dtype.kind == "f":
            obs[key] = rng.standard_normal(shape).astype(dtype)
        else:
            obs[key] = rng.integers(0, 256 if dtype == np.uint8 else 2, shape).astype(dtype)
    return obs


def stats(values: list[float]) -> dict[str, float]:
    v = np.asarray(values)
    return {"median": float(np.median(v)), "p90": float(np.percentile(v, 90)), "p99": float(np.percentile(v, 99)),
            "mean": float(v.mean()), "max": float(v.max())}


def codec_us(obs: dict[str, np.ndarray], repeats: int = 2000) -> dict[str, float]:
    """Pure serialization cost of one request: pack on the client, unpack on the server (microseconds)."""
    msg = {"type": "infer", "obs": obs, "instruction": INSTRUCTION, "id": 1}
    start = time.perf_counter()
    for _ in range(repeats):
        data = pack(msg)
    packed = time.perf_counter()
    for _ in range(repeats):
        unpack(data, 2**24)
    done = time.perf_counter()
    return {"pack_us": (packed - start) / repeats * 1e6, "unpack_us": (done - packed) / repeats * 1e6}


def run_scenario(name: str, image_size: int, run: str | None, requests: int, warmup: int) -> dict[str, Any]:
    proc, port = start_server(image_size, run)
    try:
        with PolicyClient("127.0.0.1", port, timeout=120.0) as client:
            meta = client.metadata
            rng = np.random.default_rng(0)
            pool = [make_obs(meta["inputs"], rng) for _ in range(8)]  # fresh arrays, as from a camera
            for i in range(warmup):
                client.infer(pool[i % len(pool)], INSTRUCTION)
            rtt, server, model = [], [], []
            for i in range(requests):
                if i % 200 == 0:
                    client.reset()  # episodes of 200 steps, as a real loop would
                t = client.infer(pool[i % len(pool)], INSTRUCTION)["timing"]
                rtt.append(t["roundtrip_ms"])
                server.append(t["server_ms"])
                model.append(t["model_ms"])
    finally:
        stop_server(proc)
    overhead = [r - m for r, m in zip(rtt, model, strict=True)]
    request_bytes = len(pack({"type": "infer", "obs": pool[0], "instruction": INSTRUCTION, "id": 1}))
    out = {"scenario": name, "policy": meta.get("policy", "sigma"), "image_size": meta.get("image_size"),
           "inputs": meta["inputs"], "requests": requests, "request_bytes": request_bytes,
           "roundtrip_ms": stats(rtt), "server_ms": stats(server), "model_ms": stats(model),
           "overhead_ms": stats(overhead), "model_share": float(sum(model) / sum(rtt)),
           "codec": codec_us(pool[0])}
    out["meets_overhead_target"] = out["overhead_ms"]["median"] < TARGET_OVERHEAD_MS
    return out


def print_row(r: dict[str, Any]) -> None:
    print(f"{r['scenario']:24s} {r['request_bytes'] / 1024:8.1f} KiB  rtt median {r['roundtrip_ms']['median']:7.3f} "
          f"p99 {r['roundtrip_ms']['p99']:7.3f} ms  model {r['model_ms']['median']:7.3f} ms  overhead median "
          f"{r['overhead_ms']['median']:6.3f} p99 {r['overhead_ms']['p99']:6.3f} ms  model share "
          f"{100 * r['model_share']:5.1f}%  (pack {r['codec']['pack_us']:.0f} us, unpack "
          f"{r['codec']['unpack_us']:.0f} us)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--image-sizes", default="64,224", help="Stand-in camera sizes (64: the simulator's).")
    ap.add_argument("--run", help="Also benchmark the real policy of this run directory.")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "serve.json")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # child-process mode
    args = ap.parse_args()
    sizes = [int(s) for s in args.image_sizes.split(",")]
    if args.serve:
        serve_main(sizes[0], args.run)
        return

    load_before = os.getloadavg()
    results = [run_scenario(f"stand-in {s}px", s, None, args.requests, args.warmup) for s in sizes]
    for r in results:
        print_row(r)
    notes = []
    if args.run:
        try:
            results.append(run_scenario("sigma (real)", sizes[0], args.run, args.requests, args.warmup))
            print_row(results[-1])
        except RuntimeError as err:
            notes.append(f"real policy skipped: {str(err).strip().splitlines()[-1]}")
            print(notes[-1])
    report = {"benchmark": "serve", "target_overhead_median_ms": TARGET_OVERHEAD_MS, "transport": "loopback",
              "batch": 1, "results": results, "notes": notes,
              "machine": {"platform": platform.platform(), "python": platform.python_version(),
                          "cpus": os.cpu_count(), "numpy": np.__version__,
                          # other work on the box shows up in the tail (p99), not much in the median
                          "loadavg_1m_before_after": [load_before[0], os.getloadavg()[0]]},
              "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
