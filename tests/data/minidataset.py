"""Miniature LeRobot datasets (v2.1 and v3.0) with real H.264/AV1 videos, written for tests.

Frame i of an episode is a flat gray image of level frame_level(episode, i), so a test can tell from the pixels
which frame the reader decoded.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

CAM = "observation.images.front"


def frame_level(episode: int, i: int) -> int:
    return (20 + 6 * i + 50 * episode) % 240


def _encode(path: Path, levels: list[int], fps: int, size: int, codec: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264" if codec == "h264" else "libsvtav1", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, fps)
        for i, level in enumerate(levels):
            frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), level, np.uint8), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _vec(values: np.ndarray) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(values.ravel(), pa.float32()), values.shape[1])


def _episode_arrays(ep: int, length: int, first_index: int, rng) -> dict:
    t = np.arange(length)
    state = np.stack([np.sin(t / 5 + ep), np.cos(t / 7), t / 10.0], 1).astype(np.float32)  # (F, 3)
    action = (rng.normal(size=(length, 2)) + 1).astype(np.float32)  # (F, 2)
    return {"observation.state": _vec(state), "action": _vec(action),
            "timestamp": pa.array((t / FPS).astype(np.float32)), "frame_index": pa.array(t, pa.int64()),
            "episode_index": pa.array(np.full(length, ep), pa.int64()),
            "index": pa.array(first_index + t, pa.int64()), "task_index": pa.array(np.full(length, ep % 2), pa.int64())}


FPS = 10
TASKS = ["put the block left", "put the block right"]


def _info(version: str, lengths: list[int], size: int, codec: str) -> dict:
    v3 = version == "v3.0"
    return {
        "codebase_version": version, "robot_type": "toy", "fps": FPS, "chunks_size": 1000,
        "total_episodes": len(lengths), "total_frames": sum(lengths), "total_tasks": len(TASKS),
        "splits": {"train": f"0:{len(lengths)}"},
        "data_path": ("data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet" if v3
                      else "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"),
        "video_path": ("videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4" if v3
                       else "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"),
        "features": {
            "observation.state": {"dtype": "float32", "shape": [3], "names": None},
            "action": {"dtype": "float32", "shape": [2], "names": None},
            CAM: {"dtype": "video", "shape": [size, size, 3], "names": ["height", "width", "channels"],
                  "info": {"video.codec": codec, "video.height": size, "video.width": size, "video.fps": FPS}},
            **{k: {"dtype": "int64" if k != "timestamp" else "float32", "shape": [1], "names": None}
               for k in ("timestamp", "frame_index", "episode_index", "index", "task_index")},
        },
    }


def write_mini_dataset(root: Path, version: str = "v3.0", lengths=(24, 30, 12, 27), size: int = 32,
                       codec: str = "h264", seed: int = 0) -> Path:
    """A dataset of len(lengths) episodes with one camera; returns its root."""
    rng = np.random.default_rng(seed)
    (root / "meta").mkdir(parents=True)
    (root / "meta/info.json").write_text(json.dumps(_info(version, list(lengths), size, codec)))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).tolist()
    tables = [pa.table(_episode_arrays(ep, n, s, rng)) for ep, (n, s) in enumerate(zip(lengths, starts))]
    if version == "v3.0":
        _write_v30(root, tables, list(lengths), starts, size, codec)
    else:
        _write_v21(root, tables, list(lengths), size, codec)
    return root


def _write_v30(root, tables, lengths, starts, size, codec) -> None:
    (root / "data/chunk-000").mkdir(parents=True)
    pq.write_table(pa.concat_tables(tables), root / "data/chunk-000/file-000.parquet")
    levels = [frame_level(ep, i) for ep, n in enumerate(lengths) for i in range(n)]
    _encode(root / f"videos/{CAM}/chunk-000/file-000.mp4", levels, FPS, size, codec)
    from_ts = [s / FPS for s in starts]
    episodes = pa.table({
        "episode_index": pa.array(range(len(lengths)), pa.int64()),
        "tasks": pa.array([[TASKS[ep % 2]] for ep in range(len(lengths))]),
        "length": pa.array(lengths, pa.int64()),
        "data/chunk_index": pa.array([0] * len(lengths), pa.int64()),
        "data/file_index": pa.array([0] * len(lengths), pa.int64()),
        "dataset_from_index": pa.array(starts, pa.int64()),
        "dataset_to_index": pa.array([s + n for s, n in zip(starts, lengths)], pa.int64()),
        f"videos/{CAM}/chunk_index": pa.array([0] * len(lengths), pa.int64()),
        f"videos/{CAM}/file_index": pa.array([0] * len(lengths), pa.int64()),
        f"videos/{CAM}/from_timestamp": pa.array(from_ts),
        f"videos/{CAM}/to_timestamp": pa.array([f + n / FPS for f, n in zip(from_ts, lengths)]),
    })
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    pq.write_table(episodes, root / "meta/episodes/chunk-000/file-000.parquet")
    pq.write_table(pa.table({"task_index": pa.array([0, 1], pa.int64()), "__index_level_0__": TASKS}),
                   root / "meta/tasks.parquet")


def _write_v21(root, tables, lengths, size, codec) -> None:
    (root / "data/chunk-000").mkdir(parents=True)
    for ep, table in enumerate(tables):
        pq.write_table(table, root / f"data/chunk-000/episode_{ep:06d}.parquet")
        _encode(root / f"videos/chunk-000/{CAM}/episode_{ep:06d}.mp4",
                [frame_level(ep, i) for i in range(lengths[ep])], FPS, size, codec)
    lines = [json.dumps({"episode_index": ep, "tasks": [TASKS[ep % 2]], "length": n}) for ep, n in enumerate(lengths)]
    (root / "meta/episodes.jsonl").write_text("\n".join(lines) + "\n")
    (root / "meta/tasks.jsonl").write_text(
        "\n".join(json.dumps({"task_index": i, "task": t}) for i, t in enumerate(TASKS)) + "\n")
