"""Write a LeRobot v3.0 dataset natively, in the layout LeRobot itself loads (docs/architecture.md, "Native LeRobot
formats").

Layout (checked against huggingface/lerobot's v3.0 code and the real fixture tests/fixtures/so101_real_v30):

    meta/info.json                                  codebase_version, fps, features, path templates, totals
    meta/stats.json                                 per-feature min/max/mean/std/count/q01..q99
    meta/tasks.parquet                              task string as the pandas index, task_index column
    meta/episodes/chunk-000/file-000.parquet        one row per episode: indices, video time ranges, stats/*
    data/chunk-000/file-000.parquet                 one row per frame: vectors as fixed_size_list<float>
    videos/{camera}/chunk-000/file-000.mp4          every episode of a camera, one after the other

Frame i of an episode is presented at from_timestamp + i / fps in its camera file: episodes are encoded into
one continuous stream whose frame pts are the running frame count in a 1/fps time base, so no re-timing is
needed when concatenating. Files stay below the v3.0 size limits at our sizes, so every episode lives in
chunk 0, file 0 (the indices are still written per episode, so readers need no special case).

Writes are atomic: everything goes to a hidden temp dir next to `out` and is renamed into place by `finish()`;
an `out` that exists and is not empty is refused, and nothing we did not write is ever deleted.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sigma_vla.data.lerobot_stats import (
    STAT_KEYS,
    episode_image_stats,
    image_stats_from_histogram,
    numeric_stats,
    to_jsonable,
)
from sigma_vla.errors import SigmaError

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_FILES_SIZE_MB = 100
VIDEO_FILES_SIZE_MB = 500
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
# codec name in info.json -> PyAV encoder, with LeRobot's choices: a keyframe every 2 frames for cheap seeks.
CODECS: dict[str, tuple[str, dict[str, str]]] = {
    "av1": ("libsvtav1", {"g": "2", "crf": "30"}),
    "h264": ("libx264", {"g": "2", "crf": "23"}),
}
PIX_FMT = "yuv420p"
STATE, ACTION = "observation.state", "action"
INDEX_FEATURES: tuple[tuple[str, str], ...] = (("timestamp", "float32"), ("frame_index", "int64"),
                                               ("episode_index", "int64"), ("index", "int64"),
                                               ("task_index", "int64"))


@dataclass(frozen=True)
class DatasetSpec:
    """What every episode of the dataset carries. `extra_columns` are additional episodes-parquet columns
    (LeRobot ignores unknown ones); every episode must give a value for each."""

    fps: int
    robot_type: str
    state_names: tuple[str, ...]
    action_names: tuple[str, ...]
    camera_keys: tuple[str, ...]  # e.g. ("observation.images.front",)
    image_size: tuple[int, int]  # (H, W)
    codec: str = "av1"
    extra_columns: tuple[tuple[str, pa.DataType], ...] = ()

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise SigmaError(f"unknown codec {self.codec!r} (choose from {', '.join(CODECS)})", field="codec")
        if self.fps <= 0:
            raise SigmaError(f"fps must be positive, got {self.fps}", field="fps")
        h, w = self.image_size
        if h < 16 or w < 16 or h % 2 or w % 2:
            raise SigmaError(f"image size must be even and >= 16, got {h}x{w}", field="image_size")


@dataclass
class EpisodeRecord:
    """One episode: T frames of state, action and camera images, its task string and extra column values."""

    state: np.ndarray  # (T, Ds) float32
    action: np.ndarray  # (T, Da) float32
    frames: dict[str, np.ndarray]  # camera key -> (T, H, W, 3) uint8
    task: str
    extra: dict[str, Any] = field(default_factory=dict)


WRITER_PID = ".sigma-writer-pid"  # inside a writer's temp dir: which process owns it


def remove_stale_temp_dirs(out: Path) -> list[Path]:
    """Temp dirs of earlier writers of `out` that were killed (kill -9 skips every cleanup): siblings named
    `.OUT.tmp-*` holding our PID file, whose process is gone. Anything else of that name is not ours and stays."""
    removed = []
    for tmp in Path(out).parent.glob(f".{Path(out).name}.tmp-*"):
        try:
            pid = int((tmp / WRITER_PID).read_text())
        except (OSError, ValueError):
            continue
        try:
            os.kill(pid, 0)
            continue  # still writing
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # another user's live process
        shutil.rmtree(tmp, ignore_errors=True)
        removed.append(tmp)
    return removed


def check_output_dir(out: Path) -> None:
    """Refuse an `out` that exists and is not an empty directory (we never overwrite or delete user files)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "is a file" if not out.is_dir() else "exists and is not empty"
        raise SigmaError(f"output directory {what}; choose a new path or empty it first", file=out,
                         field="out")


def _vector(values: np.ndarray, dtype: pa.DataType) -> pa.FixedSizeListArray:
    """(N, D) numpy -> fixed_size_list<dtype>[D], the layout LeRobot writes for vector features."""
    flat = pa.array(np.ascontiguousarray(values).reshape(-1), type=dtype)
    return pa.FixedSizeListArray.from_arrays(flat, values.shape[1])


def _hf_feature(dtype: str, shape: tuple[int, ...]) -> dict:
    value = {"dtype": dtype, "_type": "Value"}
    return value if shape == (1,) else {"feature": value, "length": shape[0], "_type": "List"}


class _VideoEncoder:
    """One camera's file: frames appended episode after episode, pts = running frame count at 1/fps."""

    def __init__(self, path: Path, codec: str, fps: int, height: int, width: int):
        import av

        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints a banner at info level otherwise
        encoder, options = CODECS[codec]
        path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(path), "w")
        self._stream = self._container.add_stream(encoder, rate=fps, options=dict(options))
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, PIX_FMT
        self._stream.time_base = Fraction(1, fps)
        self._av = av
        self.frames = 0

    def add(self, frames: np.ndarray) -> None:
        for img in frames:
            frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            frame.pts = self.frames
            self.frames += 1
            self._container.mux(self._stream.encode(frame))

    def close(self) -> None:
        if self._container is not None:
            self._container.mux(self._stream.encode())  # flush
            self._container.close()
            self._container = None

    def abort(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # noqa: BLE001  (the file is being discarded anyway)
                pass
            self._container = None


class LeRobotV30Writer:
    """Streams episodes into a LeRobot v3.0 dataset: frames go straight to the video encoders, rows and
    per-episode stats are kept in memory (small), everything else is written by `finish()`."""

    def __init__(self, out: Path, spec: DatasetSpec):
        self.out = Path(out)
        self.spec = spec
        check_output_dir(self.out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_dirs(self.out)
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.tmp-", dir=self.out.parent))
        (self._tmp / WRITER_PID).write_text(str(os.getpid()))
        h, w = spec.image_size
        self._videos = {
            k: _VideoEncoder(self._tmp / VIDEO_PATH.format(video_key=k, chunk_index=0, file_index=0),
                             spec.codec, spec.fps, h, w) for k in spec.camera_keys}
        self._columns: dict[str, list[np.ndarray]] = {k: [] for k in (STATE, ACTION, "task_index", "episode")}
        self._episodes: list[dict[str, Any]] = []
        self._histograms: dict[str, list[tuple[np.ndarray, int]]] = {k: [] for k in spec.camera_keys}
        self._tasks: dict[str, int] = {}
        self._frames = 0
        self._done = False

    # ---- episodes -----------------------------------------------------------------------------------------
    def _validate(self, ep: EpisodeRecord) -> int:
        n = len(ep.state)
        s = self.spec
        if n == 0:
            raise SigmaError("episode has no frames", field="length")
        if ep.state.shape != (n, len(s.state_names)) or ep.action.shape != (n, len(s.action_names)):
            raise SigmaError(f"state {ep.state.shape} / action {ep.action.shape} do not match "
                             f"({n}, {len(s.state_names)}) / ({n}, {len(s.action_names)})", field=STATE)
        for key in s.camera_keys:
            frames = ep.frames.get(key)
            if frames is None or frames.shape != (n, *s.image_size, 3) or frames.dtype != np.uint8:
                got = None if frames is None else (frames.shape, str(frames.dtype))
                raise SigmaError(f"expected ({n}, {s.image_size[0]}, {s.image_size[1]}, 3) uint8, got {got}",
                                 field=key)
        missing = {name for name, _ in s.extra_columns} - set(ep.extra)
        if missing:
            raise SigmaError(f"episode lacks extra columns {sorted(missing)}", field="extra")
        return n

    def add_episode(self, ep: EpisodeRecord) -> int:
        """Append one episode; returns its episode_index."""
        n = self._validate(ep)
        index = len(self._episodes)
        task_index = self._tasks.setdefault(ep.task, len(self._tasks))
        row: dict[str, Any] = {
            "episode_index": index, "tasks": [ep.task], "length": n,
            "data/chunk_index": 0, "data/file_index": 0,
            "dataset_from_index": self._frames, "dataset_to_index": self._frames + n,
        }
        stats: dict[str, dict[str, np.ndarray]] = {
            ACTION: numeric_stats(ep.action.astype(np.float32)),
            STATE: numeric_stats(ep.state.astype(np.float32)),
        }
        for key, enc in self._videos.items():
            start = enc.frames
            enc.add(ep.frames[key])
            row.update({f"videos/{key}/chunk_index": 0, f"videos/{key}/file_index": 0,
                        f"videos/{key}/from_timestamp": start / self.spec.fps,
                        f"videos/{key}/to_timestamp": enc.frames / self.spec.fps})
            stats[key], hist, sampled = episode_image_stats(ep.frames[key])
            self._histograms[key].append((hist, sampled))
        frame_index = np.arange(n, dtype=np.int64)
        stats.update({"timestamp": numeric_stats((frame_index / self.spec.fps).astype(np.float32)),
                      "frame_index": numeric_stats(frame_index),
                      "episode_index": numeric_stats(np.full(n, index, np.int64)),
                      "index": numeric_stats(np.arange(self._frames, self._frames + n, dtype=np.int64)),
                      "task_index": numeric_stats(np.full(n, task_index, np.int64))})
        row["stats"] = stats
        row["extra"] = {name: ep.extra[name] for name, _ in self.spec.extra_columns}
        self._episodes.append(row)
        self._columns[STATE].append(ep.state.astype(np.float32))
        self._columns[ACTION].append(ep.action.astype(np.float32))
        self._columns["task_index"].append(np.full(n, task_index, np.int64))
        self._columns["episode"].append(np.full(n, index, np.int64))
        self._frames += n
        return index

    # ---- finish -------------------------------------------------------------------------------------------
    def finish(self) -> Path:
        """Close the videos, write the metadata and data files, and rename the dataset into place."""
        try:
            if not self._episodes:
                raise SigmaError("no episodes to write", file=self.out)
            for enc in self._videos.values():
                enc.close()
            stats = self._write_data()
            self._write_episodes()
            self._write_tasks()
            (self._tmp / "meta" / "stats.json").write_text(json.dumps(to_jsonable(stats), indent=4))
            (self._tmp / "meta" / "info.json").write_text(json.dumps(self._info(), indent=4))
            self._rename_into_place()
            self._done = True
        except BaseException:
            self.abort()
            raise
        return self.out

    def abort(self) -> None:
        """Drop everything written so far (only our own temp dir)."""
        self._done = True
        for enc in self._videos.values():
            enc.abort()
        if self._tmp.exists():
            shutil.rmtree(self._tmp)

    def __enter__(self) -> LeRobotV30Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._done:  # an exception, or finish() never called
            self.abort()

    def _rename_into_place(self) -> None:
        check_output_dir(self.out)  # someone may have written there while we recorded
        if self.out.exists():
            self.out.rmdir()  # empty, checked above
        (self._tmp / WRITER_PID).unlink()
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self._tmp, 0o777 & ~umask)  # mkdtemp's 0700 would make a shared dataset unreadable to others
        os.rename(self._tmp, self.out)

    def _write_data(self) -> dict[str, dict[str, np.ndarray]]:
        """The frames parquet; returns dataset-wide stats (numeric exact, images from summed histograms)."""
        state = np.concatenate(self._columns[STATE])
        action = np.concatenate(self._columns[ACTION])
        episode = np.concatenate(self._columns["episode"])
        frame_index = np.concatenate([np.arange(r["length"], dtype=np.int64) for r in self._episodes])
        cols = {
            ACTION: action, STATE: state, "timestamp": (frame_index / self.spec.fps).astype(np.float32),
            "frame_index": frame_index, "episode_index": episode,
            "index": np.arange(self._frames, dtype=np.int64),
            "task_index": np.concatenate(self._columns["task_index"]),
        }
        arrays = [_vector(action, pa.float32()), _vector(state, pa.float32()),
                  *(pa.array(cols[name]) for name, _ in INDEX_FEATURES)]
        table = pa.Table.from_arrays(arrays, names=list(cols))
        hf = {"info": {"features": {k: _hf_feature(f["dtype"], tuple(f["shape"]))
                                    for k, f in self._features().items() if f["dtype"] != "video"}}}
        table = table.replace_schema_metadata({"huggingface": json.dumps(hf)})
        path = self._tmp / DATA_PATH.format(chunk_index=0, file_index=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        stats = {name: numeric_stats(values) for name, values in cols.items()}
        for key, parts in self._histograms.items():
            hist = np.sum([h for h, _ in parts], axis=0)
            stats[key] = image_stats_from_histogram(hist, sum(c for _, c in parts))
        return {k: stats[k] for k in self._features()}  # info.json's feature order

    def _write_episodes(self) -> None:
        rows = self._episodes
        fixed = ["episode_index", "length", "data/chunk_index", "data/file_index", "dataset_from_index",
                 "dataset_to_index"]
        columns: dict[str, pa.Array] = {}
        for name in fixed[:1]:
            columns[name] = pa.array([r[name] for r in rows], pa.int64())
        columns["tasks"] = pa.array([r["tasks"] for r in rows], pa.list_(pa.string()))
        for name in fixed[1:]:
            columns[name] = pa.array([r[name] for r in rows], pa.int64())
        for key in self.spec.camera_keys:
            for suffix, typ in (("chunk_index", pa.int64()), ("file_index", pa.int64()),
                                ("from_timestamp", pa.float64()), ("to_timestamp", pa.float64())):
                name = f"videos/{key}/{suffix}"
                columns[name] = pa.array([r[name] for r in rows], typ)
        for feat, spec in self._features().items():
            is_int = spec["dtype"] == "int64"
            for stat in STAT_KEYS:
                values = [np.asarray(r["stats"][feat][stat]).tolist() for r in rows]
                typ = pa.int64() if stat == "count" or (is_int and stat in ("min", "max")) else pa.float64()
                if spec["dtype"] == "video" and stat != "count":
                    typ = pa.list_(pa.list_(typ))  # (3, 1, 1)
                columns[f"stats/{feat}/{stat}"] = pa.array(values, pa.list_(typ))
        columns["meta/episodes/chunk_index"] = pa.array([0] * len(rows), pa.int64())
        columns["meta/episodes/file_index"] = pa.array([0] * len(rows), pa.int64())
        for name, typ in self.spec.extra_columns:
            columns[name] = pa.array([r["extra"][name] for r in rows], typ)
        path = self._tmp / EPISODES_PATH.format(chunk_index=0, file_index=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(columns), path)

    def _write_tasks(self) -> None:
        """Task strings as the (unnamed) pandas index, like LeRobot's DataFrame.to_parquet."""
        tasks = sorted(self._tasks, key=self._tasks.get)
        table = pa.table({"task_index": pa.array([self._tasks[t] for t in tasks], pa.int64()),
                          "__index_level_0__": pa.array(tasks, pa.string())})
        pandas_meta = {
            "index_columns": ["__index_level_0__"],
            "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode",
                                "numpy_type": "object", "metadata": {"encoding": "UTF-8"}}],
            "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
                         "numpy_type": "int64", "metadata": None},
                        {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode",
                         "numpy_type": "object", "metadata": None}],
            "attributes": {}, "creator": {"library": "pyarrow", "version": pa.__version__},
            "pandas_version": "2.3.3",
        }
        pq.write_table(table.replace_schema_metadata({"pandas": json.dumps(pandas_meta)}),
                       self._tmp / "meta" / "tasks.parquet")

    # ---- info.json ----------------------------------------------------------------------------------------
    def _features(self) -> dict[str, dict[str, Any]]:
        s = self.spec
        h, w = s.image_size
        feats: dict[str, dict[str, Any]] = {
            ACTION: {"dtype": "float32", "names": list(s.action_names), "shape": [len(s.action_names)]},
            STATE: {"dtype": "float32", "names": list(s.state_names), "shape": [len(s.state_names)]},
        }
        for key in s.camera_keys:
            feats[key] = {"dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"],
                          "info": {"video.height": h, "video.width": w, "video.codec": s.codec,
                                   "video.pix_fmt": PIX_FMT, "video.is_depth_map": False, "video.fps": s.fps,
                                   "video.channels": 3, "has_audio": False}}
        for name, dtype in INDEX_FEATURES:
            feats[name] = {"dtype": dtype, "shape": [1], "names": None}
        return feats

    def _info(self) -> dict[str, Any]:
        n = len(self._episodes)
        return {
            "codebase_version": CODEBASE_VERSION, "robot_type": self.spec.robot_type, "total_episodes": n,
            "total_frames": self._frames, "total_tasks": len(self._tasks), "chunks_size": CHUNKS_SIZE,
            "data_files_size_in_mb": DATA_FILES_SIZE_MB, "video_files_size_in_mb": VIDEO_FILES_SIZE_MB,
            "fps": self.spec.fps, "splits": {"train": f"0:{n}"}, "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if self.spec.camera_keys else None, "features": self._features(),
        }
