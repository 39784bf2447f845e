"""Offline error by phase: where Sigma's corrections help (the carry) and where they cost the grasp (the approach).

    python benchmarks/phase_error.py RUN SHARDS [--split test] [--windows 1000] [--out benchmarks/results/phase_error.json]

Trains nothing. Replays up to --windows full windows of a split (a seeded sample) through a Sigma run and reports the
chunk MSE (normalised units) of the frozen base and of Sigma (base + Sigma's output, what a rollout executes), for
windows that start before the jaw first closes ("approach") and after ("carry"). The averaged offline MSE hides
the difference: the carry asks for corrections about 30 times larger than the approach, so Sigma can lower the
average while adding the millimetres of error that make a grasp fail (docs/closed_loop.md, "Paired twins").
Per phase it also reports the gain of Sigma's correction on the position actions: <p, r> / <r, r>, p Sigma's output
(what it adds to the base) and r = ground truth - base (what it should add). 1 is a full correction; a gain of 0.4
in the carry means the executed action keeps 60% of the base's pull toward its own goal, and in closed loop the
block stalls where that pull and Sigma's push cancel (docs/closed_loop.md, "Why Sigma's carry stalls").
The jaw command is the action's last dimension (the SO-101 simulator's grasp: 1 open, 0 closed).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from sigma_vla.evaluation.offline import load_eval_data
from sigma_vla.inference.policy import load_run_model
from sigma_vla.outdir import atomic_write_text
from sigma_vla.processing.action_triple import ActionTriple, BASE_ACTION, GT_ACTION, per_sample_mse
from sigma_vla.processing.transforms import BatchTransform


def first_close(data: dict[str, torch.Tensor]) -> dict[int, int]:
    """Episode -> frame index of the first window whose first jaw command is past mid-way to closed."""
    out = {}
    for e in data["episode_index"].unique().tolist():
        rows = data["episode_index"] == e
        frames, jaw = data["frame_index"][rows], data["gt_action_vector"][rows][:, -1]  # (n,), (n,)
        closed = frames[jaw < (jaw.max() + jaw.min()) / 2]
        out[e] = int(closed.min()) if len(closed) else int(frames.max()) + 1
    return out


@torch.no_grad()
def phase_errors(run: Path, shards: Path, split: str, windows: int, batch_size: int = 64) -> dict:
    data, meta = load_eval_data(shards, split)
    closes = first_close(data)
    pick = torch.randperm(len(data["split"]), generator=torch.Generator().manual_seed(0))[:windows]
    data = {k: v[pick] for k, v in data.items()}
    model = load_run_model(run)
    transform = BatchTransform.from_meta(meta, model.config.language.text_max_len)
    sums = {p: {"windows": 0, "base": 0.0, "sigma": 0.0, "pr": 0.0, "rr": 0.0} for p in ("approach", "carry")}
    for start in range(0, len(pick), batch_size):
        batch = transform({k: v[start:start + batch_size] for k, v in data.items()})
        base, gt = ActionTriple.from_batch(batch, BASE_ACTION), ActionTriple.from_batch(batch, GT_ACTION)
        sigma = base.plus(model(batch).actions()).chunk  # (B, C, Da) TRAF composition, as a rollout executes
        err_base, err_sigma = per_sample_mse(base.chunk, gt.chunk), per_sample_mse(sigma, gt.chunk)  # (B,) each
        given, wanted = (sigma - base.chunk)[..., :-1], (gt.chunk - base.chunk)[..., :-1]  # (B, C, Da - 1) positions
        pr, rr = (given * wanted).flatten(1).sum(1), (wanted * wanted).flatten(1).sum(1)  # (B,) each
        for i, (e, f) in enumerate(zip(batch["episode_index"].tolist(), batch["frame_index"].tolist())):
            s = sums["approach" if f < closes[e] else "carry"]
            s["windows"] += 1
            s["base"] += float(err_base[i])
            s["sigma"] += float(err_sigma[i])
            s["pr"] += float(pr[i])
            s["rr"] += float(rr[i])
    out = {}
    for phase, s in sums.items():
        n = max(s["windows"], 1)
        base, sigma = s["base"] / n, s["sigma"] / n
        out[phase] = {"windows": s["windows"], "mse_chunk_base": base, "mse_chunk_sigma": sigma,
                      "change": sigma / base - 1 if base else None,
                      "correction_gain": s["pr"] / s["rr"] if s["rr"] else None}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("shards", type=Path)
    ap.add_argument("--split", default="test")
    ap.add_argument("--windows", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "phase_error.json")
    args = ap.parse_args()
    start = time.perf_counter()
    phases = phase_errors(args.run, args.shards, args.split, args.windows)
    for phase, r in phases.items():
        change = "" if r["change"] is None else f" ({100 * r['change']:+.0f}%)"
        gain = "" if r["correction_gain"] is None else f"; correction gain {r['correction_gain']:.2f}"
        print(f"{phase:8s} {r['windows']:5d} windows: base {r['mse_chunk_base']:.4f}, "
              f"Sigma {r['mse_chunk_sigma']:.4f}{change}{gain}")
    result = {"run": str(args.run), "shards": str(args.shards), "split": args.split, "phases": phases,
              "seconds": time.perf_counter() - start}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=1))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
