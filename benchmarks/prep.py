"""Benchmark `sigma prep` against pure video decoding and against a naive per-frame reader.

    python benchmarks/prep.py [--dataset DIR] [--episodes 50] [--workers 1] [--image-size S]
                              [--out benchmarks/results/prep.json]

Without --dataset it records one with `sigma record` (SO-101 sim, 128 px, H.264 unless --codec) into a temp dir.
Measures: prep windows/s and frames decoded/s (best of --repeats runs); the pure decode time of the same videos
(every frame, one pass, to RGB arrays at prep's size; also compressed -> YUV only, for reference);
and a naive reader that builds each window item by item (per row: open the video, seek, decode one frame, read
the row from parquet), the way a per-index __getitem__ does, timed on a subset and reported per window.
Targets (issue: data foundation): prep <= 1.5x pure decode time; prep >= 10x faster than the naive reader.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
from av.video.reformatter import VideoReformatter

from sigma_vla.data.lerobot import LeRobotDataset
from sigma_vla.data.prep import PrepConfig, run_prep
from sigma_vla.data.video import count_frames


def pure_decode_seconds(ds: LeRobotDataset, size: int | None = None) -> tuple[float, int]:
    """Every frame of every video once: compressed -> YUV frames only (size None), or on to RGB arrays of
    size x size, which is the least any reader that hands images to a model must do."""
    paths = sorted({ep.videos[c].path for ep in ds.episodes for c in ds.video_keys})
    start = time.perf_counter()
    frames = 0
    for p in paths:
        if size is None:
            frames += count_frames(p)
            continue
        reformatter = VideoReformatter()
        with av.open(str(p)) as c:
            s = c.streams.video[0]
            s.thread_type = "AUTO"
            for frame in c.decode(s):
                reformatter.reformat(frame, width=size, height=size, format="rgb24").to_ndarray()
                frames += 1
    return time.perf_counter() - start, frames


def naive_window(ds: LeRobotDataset, ep, start: int, horizon: int, size: int) -> dict:
    """One window, item by item: each frame's row read from parquet and its image decoded after a seek."""
    rows, images = [], []
    for i in range(start, start + horizon):
        row = pq.read_table(ep.data_path, filters=[("episode_index", "=", ep.index), ("frame_index", "=", i)])
        rows.append(row.to_pylist()[0])
        for cam in ds.video_keys:
            seg = ep.videos[cam]
            t = seg.from_timestamp + rows[-1]["timestamp"]
            with av.open(str(seg.path)) as c:
                s = c.streams.video[0]
                c.seek(int(max(t - 0.05, 0) / s.time_base), stream=s, backward=True)
                for frame in c.decode(s):
                    if frame.time >= t - 0.5 / ds.fps:
                        images.append(frame.to_ndarray(format="rgb24", width=size, height=size))
                        break
    return {"action": np.array([r["action"] for r in rows]), "image": images[0] if images else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path)
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--codec", default="h264")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--naive-windows", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--image-size", type=int, help="prep's frame side (default: the camera's own size)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/prep.json"))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sigma-bench-prep-"))
    dataset = args.dataset
    if dataset is None:
        dataset = tmp / "dataset"
        subprocess.run([sys.executable, "-m", "sigma_vla.cli.main", "record", "--episodes", str(args.episodes),
                        "--out", str(dataset), "--codec", args.codec, "--workers", "2"], check=True)
    ds = LeRobotDataset(dataset)
    cfg = PrepConfig(image_size=args.image_size or ds.shape(ds.video_keys[0])[0])
    yuv_s, _ = min(pure_decode_seconds(ds) for _ in range(3))
    decode_s, decoded = min(pure_decode_seconds(ds, cfg.image_size) for _ in range(3))
    prep_s = float("inf")
    for r in range(args.repeats):
        start = time.perf_counter()
        meta = run_prep(dataset, tmp / f"shards{r}", cfg, workers=args.workers, progress=False)
        prep_s = min(prep_s, time.perf_counter() - start)
    windows = meta["num_samples"]
    frames_in_prep = windows * len(ds.video_keys)
    rng = np.random.default_rng(0)
    picks = [(ds.episodes[int(rng.integers(len(ds.episodes)))], None) for _ in range(args.naive_windows)]
    start = time.perf_counter()
    for ep, _ in picks:
        naive_window(ds, ep, int(rng.integers(0, ep.length - cfg.horizon + 1)), cfg.horizon, cfg.image_size)
    naive_per_window = (time.perf_counter() - start) / args.naive_windows
    result = {
        "dataset": str(dataset), "episodes": len(ds.episodes), "frames": ds.num_frames,
        "cameras": ds.video_keys, "codec": ds.features[ds.video_keys[0]]["info"].get("video.codec"),
        "workers": args.workers, "windows": windows,
        "prep_seconds": round(prep_s, 3), "prep_windows_per_s": round(windows / prep_s, 1),
        "prep_frames_decoded_per_s": round(frames_in_prep / prep_s, 1),
        "pure_decode_seconds": round(decode_s, 3), "pure_decode_frames": decoded,
        "pure_decode_frames_per_s": round(decoded / decode_s, 1),
        "prep_over_decode": round(prep_s / decode_s, 3),
        "decode_to_yuv_only_seconds": round(yuv_s, 3), "prep_over_yuv_decode": round(prep_s / yuv_s, 3),
        "naive_seconds_per_window": round(naive_per_window, 4),
        "naive_windows_per_s": round(1 / naive_per_window, 2),
        "speedup_over_naive": round(naive_per_window * windows / prep_s, 1),
        "targets": {"prep_over_decode_max": 1.5, "speedup_over_naive_min": 10},
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
