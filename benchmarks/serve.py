"""Benchmark `sigma serve`: round-trip latency at batch 1 over loopback, and how much of it is the model.

    python benchmarks/serve.py [--requests 1000] [--image-sizes 64,224] [--run RUN] [--out results/serve.json]

The server runs in its own process (as in deployment: the robot's client and the policy do not share a GIL) on
127.0.0.1; the client is `sigma_vla_client.PolicyClient`, one request at a time, a fresh observation each time.
Scenarios:
- stand-in policy (zero-cost model, `sigma_vla.serving.standin`) with one camera at each --image-sizes: the
  round trip is serialization + transport + the server's checks alone;
- with --run RUN, the real policy of that run through `sigma_vla.inference.load_sigma_policy_factory` (skipped
  with a note if the loader is not there yet), with observations shaped from its metadata.
Per scenario: round trip (client clock), server time and model time (server-reported), overhead = round trip -
model time per request, model share = sum(model) / sum(round trip), and the encoded request size. Also the
pure pack + unpack time of one request (no socket). Target (issue 6): overhead median < 2 ms.

Contention (issue 11): a legitimate client's connect time (to the metadata) and answer time while other clients
misbehave, each group in its own process so no GIL is shared with the measured client:
- "idle + flood": 16 connections that hold their slot and never ask, and 15 clients that ask back-to-back;
- "full of idle": 32 idle connections fill every slot (the new client takes the longest-idle one's).
The measured client connects, asks 5 times 0.25 s apart (a robot's pace), disconnects, 20 rounds. With
--contention-model-ms the stand-in's model takes that long per call (a FIFO would make the client wait for every
flooder's call). Target: median connect and answer under 200 ms.
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

from sigma_vla_client import PolicyClient
from sigma_vla_client.wire import pack, unpack

TARGET_OVERHEAD_MS = 2.0
TARGET_CONTENTION_MS = 200.0
GAP_S = 0.25  # the measured client asks 4 times a second: a 10 fps robot replanning every 2-3 actions
INSTRUCTION = "the bin is on your left, far from you"


def serve_main(image_size: int, run: str | None, model_ms: float = 0.0) -> None:
    """Child process: serve until SIGINT, printing 'PORT <n>' once bound."""
    from sigma_vla.serving.server import PolicyServer, ServerConfig

    if run:
        from sigma_vla.cli.serve import load_policy_factory

        factory = load_policy_factory(Path(run))
    else:
        from sigma_vla.serving.standin import standin_factory

        factory = standin_factory(image_size=image_size, model_seconds=model_ms / 1e3)
    PolicyServer(factory, ServerConfig(port=0)).run(on_ready=lambda port: print(f"PORT {port}", flush=True))


def start_server(image_size: int, run: str | None, model_ms: float = 0.0) -> tuple[subprocess.Popen, int]:
    cmd = [sys.executable, __file__, "--serve", "--image-sizes", str(image_size), "--model-ms", str(model_ms)]
    cmd += ["--run", run] if run else []
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


# ---- contention: misbehaving clients in a child process, the measured client here ------------------------------
def attack_main(port: int, idle: int, flood: int) -> None:
    """Child process: `idle` connections that hold a slot and never ask (reconnecting when closed, as an attacker
    would) and `flood` clients asking back-to-back; prints READY once all are in, runs until stdin closes."""
    import threading

    from websockets.sync.client import connect

    stop, counts = threading.Event(), {"flood_requests": 0, "idle_reconnects": 0}

    def hold() -> None:
        while not stop.is_set():
            try:
                with connect(f"ws://127.0.0.1:{port}/", compression=None, open_timeout=10, proxy=None) as ws:
                    ws.recv(timeout=10)  # the metadata: the slot is ours
                    while not stop.wait(0.5):
                        ws.ping().wait(5)  # a control frame, not a message: raises once the server closed us
            except Exception:  # noqa: BLE001  (closed, evicted or refused: try again, as an attacker would)
                counts["idle_reconnects"] += 1
                stop.wait(0.2)

    def hammer() -> None:
        with PolicyClient("127.0.0.1", port, timeout=120.0, retries=20) as client:
            obs = make_obs(client.metadata["inputs"], np.random.default_rng(0))
            ready.release()
            while not stop.is_set():
                client.infer(obs, INSTRUCTION)
                counts["flood_requests"] += 1

    ready = threading.Semaphore(0)
    threads = [threading.Thread(target=hold, daemon=True) for _ in range(idle)]
    threads += [threading.Thread(target=hammer, daemon=True) for _ in range(flood)]
    for t in threads:
        t.start()
    for _ in range(flood):
        ready.acquire()
    time.sleep(1.0 + (6.0 if idle >= 32 else 0.0))  # idle ones settle (and become evictable when the server is full)
    print("READY", flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    stop.set()
    print(json.dumps(counts), flush=True)


def run_contention(name: str, idle: int, flood: int, model_ms: float, rounds: int, requests: int) -> dict[str, Any]:
    proc, port = start_server(64, None, model_ms)
    attack = subprocess.Popen([sys.executable, __file__, "--attack", str(port), "--idle", str(idle), "--flood",
                               str(flood)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        if attack.stdout.readline().strip() != "READY":
            raise RuntimeError("the attacking clients did not start")
        connect_ms, answer_ms, failures = [], [], 0
        rng = np.random.default_rng(1)
        for _ in range(rounds):
            start = time.perf_counter()
            try:
                client = PolicyClient("127.0.0.1", port, timeout=120.0, retries=0)
            except Exception:  # noqa: BLE001  (refused: counted, the round is skipped)
                failures += 1
                continue
            connect_ms.append((time.perf_counter() - start) * 1e3)
            with client:
                obs = make_obs(client.metadata["inputs"], rng)
                for _ in range(requests):
                    answer_ms.append(client.infer(obs, INSTRUCTION)["timing"]["roundtrip_ms"])
                    time.sleep(GAP_S)  # a robot executes part of each chunk before it asks again
            time.sleep(0.2)
    finally:
        attack.stdin.close()
        counts = json.loads(attack.stdout.readline() or "{}") if attack.wait(timeout=60) == 0 else {}
        stop_server(proc)
    out = {"scenario": name, "idle_clients": idle, "flooding_clients": flood, "model_ms": model_ms,
           "rounds": rounds, "requests_per_round": requests, "refused_connects": failures,
           "connect_ms": stats(connect_ms) if connect_ms else None, "answer_ms": stats(answer_ms), **counts}
    out["meets_target"] = bool(connect_ms) and max(out["connect_ms"]["median"],
                                                   out["answer_ms"]["median"]) < TARGET_CONTENTION_MS
    return out


def print_contention(r: dict[str, Any]) -> None:
    c = r["connect_ms"] or {"median": float("nan"), "p90": float("nan")}
    print(f"{r['scenario']:24s} model {r['model_ms']:5.1f} ms  connect median {c['median']:7.1f} p90 {c['p90']:7.1f} "
          f"ms  answer median {r['answer_ms']['median']:7.1f} p90 {r['answer_ms']['p90']:7.1f} ms  refused "
          f"{r['refused_connects']}/{r['rounds']}  (flood answered {r.get('flood_requests', '?')} requests)")


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
    ap.add_argument("--contention-model-ms", default="0,20",
                    help="Stand-in model times for the contention scenarios ('' skips them).")
    ap.add_argument("--contention-rounds", type=int, default=20, help="Connects of the measured client.")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "serve.json")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # child-process mode
    ap.add_argument("--model-ms", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--attack", type=int, help=argparse.SUPPRESS)  # child: misbehaving clients of this port
    ap.add_argument("--idle", type=int, default=16, help=argparse.SUPPRESS)
    ap.add_argument("--flood", type=int, default=15, help=argparse.SUPPRESS)
    args = ap.parse_args()
    sizes = [int(s) for s in args.image_sizes.split(",")]
    if args.serve:
        serve_main(sizes[0], args.run, args.model_ms)
        return
    if args.attack:
        attack_main(args.attack, args.idle, args.flood)
        return

    load_before = os.getloadavg()
    results = [run_scenario(f"stand-in {s}px", s, None, args.requests, args.warmup) for s in sizes]
    for r in results:
        print_row(r)
    contention = []
    for model_ms in [float(m) for m in args.contention_model_ms.split(",") if m.strip()]:
        for name, idle, flood in (("idle 16 + flood 15", 16, 15), ("full of idle (32)", 32, 0)):
            contention.append(run_contention(name, idle, flood, model_ms, args.contention_rounds, 5))
            print_contention(contention[-1])
    notes = []
    if args.run:
        try:
            results.append(run_scenario("sigma (real)", sizes[0], args.run, args.requests, args.warmup))
            print_row(results[-1])
        except RuntimeError as err:
            notes.append(f"real policy skipped: {str(err).strip().splitlines()[-1]}")
            print(notes[-1])
    report = {"benchmark": "serve", "target_overhead_median_ms": TARGET_OVERHEAD_MS, "transport": "loopback",
              "batch": 1, "results": results, "notes": notes, "contention": contention,
              "target_contention_median_ms": TARGET_CONTENTION_MS,
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
