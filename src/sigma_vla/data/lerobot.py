"""Read local LeRobot datasets (codebase_version v2.1 and v3.0) natively, without the `lerobot` package.

Why native: LeRobot's releases pin torch and torchvision below what this project runs on (DESIGN 6), while its
on-disk format is plain JSON + parquet + mp4. Everything here is column-wise (pyarrow -> numpy); no per-row
Python loops. Bad input raises SigmaError naming the file and the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sigma_vla.errors import SigmaError, first_line

SUPPORTED_VERSIONS = ("v2.1", "v3.0")
STATE_KEY = "observation.state"
ACTION_KEY = "action"
BOOKKEEPING = ("timestamp", "frame_index", "episode_index", "index", "task_index")


@dataclass(frozen=True)
class VideoSegment:
    """Where one episode's frames of one camera live: a file and the time range inside it."""

    path: Path
    from_timestamp: float
    to_timestamp: float


@dataclass
class Episode:
    index: int
    length: int
    tasks: list[str]
    data_path: Path
    videos: dict[str, VideoSegment] = field(default_factory=dict)
    extra: dict[str, object] = field(default_factory=dict)  # e.g. sigma/zone, sigma/template_id (our recorder)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SigmaError("file not found (is this a LeRobot dataset root?)", file=path) from None
    except json.JSONDecodeError as err:
        raise SigmaError(f"invalid JSON ({err.msg} at line {err.lineno})", file=path) from None


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        raise SigmaError("file not found", file=path)
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise SigmaError(f"invalid JSON on line {n}: {err.msg}", file=path) from None
    return rows


def read_parquet(path: Path, columns: list[str] | None = None) -> pa.Table:
    """Read a parquet file, turning a missing, truncated or foreign file into a one-line SigmaError."""
    if not path.exists():
        raise SigmaError("file not found", file=path)
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowInvalid, OSError) as err:
        raise SigmaError(f"unreadable parquet (truncated or corrupt?): {first_line(err)}", file=path) from None
    except KeyError as err:
        raise SigmaError("column missing", file=path, field=str(err)) from None


def column_to_numpy(table: pa.Table, name: str, path: Path, width: int | None = None) -> np.ndarray:
    """A column as a numpy array: scalars -> (N,), fixed or variable lists of equal length -> (N, width)."""
    if name not in table.column_names:
        raise SigmaError("feature declared in info.json but absent from the data", file=path, field=name)
    col = table.column(name).combine_chunks()
    if pa.types.is_fixed_size_list(col.type) or pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        lengths = col.value_lengths().to_numpy(zero_copy_only=False) if not pa.types.is_fixed_size_list(
            col.type) else np.full(len(col), col.type.list_size)
        flat = col.flatten().to_numpy(zero_copy_only=False)
        w = int(lengths[0]) if len(lengths) else (width or 0)
        if len(lengths) and (lengths != w).any():
            raise SigmaError("rows have different vector lengths", file=path, field=name)
        if width is not None and w != width:
            raise SigmaError(f"shape ({w},) does not match declared shape ({width},)", file=path, field=name)
        return flat.reshape(len(col), w)
    arr = col.to_numpy(zero_copy_only=False)
    if width is not None and width != 1:
        raise SigmaError(f"scalar column but declared shape ({width},)", file=path, field=name)
    return arr


class LeRobotDataset:
    """A local LeRobot dataset: metadata, episodes, tasks, stats, per-episode columns and video segments."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise SigmaError("dataset directory not found", file=self.root)
        self.info_path = self.root / "meta" / "info.json"
        self.info = _read_json(self.info_path)
        self.version = str(self.info.get("codebase_version", ""))
        if self.version not in SUPPORTED_VERSIONS:
            raise SigmaError(f"unsupported codebase_version {self.version!r} (supported: "
                             f"{', '.join(SUPPORTED_VERSIONS)})", file=self.info_path, field="codebase_version")
        for key in ("fps", "features"):
            if key not in self.info:
                raise SigmaError("required field missing", file=self.info_path, field=key)
        self.fps = float(self.info["fps"])
        self.features: dict[str, dict] = self.info["features"]
        for key in (STATE_KEY, ACTION_KEY):
            if key not in self.features:
                raise SigmaError("required feature not declared", file=self.info_path, field=f"features.{key}")
        self.tasks = self._load_tasks()
        self.episodes = self._load_episodes()
        self._table_cache: tuple[Path, pa.Table] | None = None

    # ---- metadata -------------------------------------------------------------------------------------------
    @property
    def robot_type(self) -> str:
        return str(self.info.get("robot_type") or "unknown")

    @property
    def camera_keys(self) -> list[str]:
        return [k for k, f in self.features.items() if f.get("dtype") in ("video", "image")]

    @property
    def video_keys(self) -> list[str]:
        return [k for k, f in self.features.items() if f.get("dtype") == "video"]

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(int(s) for s in self.features[key].get("shape", ()))

    @property
    def num_frames(self) -> int:
        return int(sum(ep.length for ep in self.episodes))

    @cached_property
    def stats(self) -> dict:
        path = self.root / "meta" / "stats.json"
        return _read_json(path) if path.exists() else {}

    def _load_tasks(self) -> dict[int, str]:
        if self.version == "v3.0":
            path = self.root / "meta" / "tasks.parquet"
            table = read_parquet(path)
            if "task_index" not in table.column_names:
                raise SigmaError("column missing", file=path, field="task_index")
            names = [c for c in table.column_names if c != "task_index"]
            text_col = "task" if "task" in names else (names[0] if names else None)
            if text_col is None:
                raise SigmaError("no task string column (expected the index column or 'task')", file=path)
            idx = table.column("task_index").to_pylist()
            return dict(zip(idx, table.column(text_col).to_pylist()))
        rows = _read_jsonl(self.root / "meta" / "tasks.jsonl")
        return {int(r["task_index"]): str(r["task"]) for r in rows}

    def _load_episodes(self) -> list[Episode]:
        episodes = self._load_episodes_v30() if self.version == "v3.0" else self._load_episodes_v21()
        return sorted(episodes, key=lambda e: e.index)

    def _load_episodes_v30(self) -> list[Episode]:
        ep_dir = self.root / "meta" / "episodes"
        files = sorted(ep_dir.glob("chunk-*/file-*.parquet"))
        if not files:
            raise SigmaError("no episode metadata files (meta/episodes/chunk-*/file-*.parquet)", file=ep_dir)
        data_tpl = self.info.get("data_path", "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet")
        video_tpl = self.info.get("video_path")
        episodes = []
        for path in files:
            table = read_parquet(path)
            rows = table.drop_columns([c for c in table.column_names if c.startswith("stats/")]).to_pylist()
            for r in rows:
                for key in ("episode_index", "length", "data/chunk_index", "data/file_index"):
                    if key not in r:
                        raise SigmaError("column missing", file=path, field=key)
                data_path = self.root / data_tpl.format(chunk_index=r["data/chunk_index"],
                                                        file_index=r["data/file_index"])
                videos = {}
                for cam in self.video_keys:
                    pre = f"videos/{cam}/"
                    if video_tpl is None or pre + "chunk_index" not in r:
                        raise SigmaError("video location missing for a declared camera", file=path,
                                         field=pre + "chunk_index")
                    vpath = self.root / video_tpl.format(video_key=cam, chunk_index=r[pre + "chunk_index"],
                                                         file_index=r[pre + "file_index"])
                    videos[cam] = VideoSegment(vpath, float(r[pre + "from_timestamp"]),
                                               float(r[pre + "to_timestamp"]))
                extra = {k: v for k, v in r.items() if k.startswith("sigma/")}
                episodes.append(Episode(int(r["episode_index"]), int(r["length"]), list(r.get("tasks") or []),
                                        data_path, videos, extra))
        return episodes

    def _load_episodes_v21(self) -> list[Episode]:
        rows = _read_jsonl(self.root / "meta" / "episodes.jsonl")
        chunks = int(self.info.get("chunks_size", 1000))
        data_tpl = self.info.get("data_path",
                                 "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet")
        video_tpl = self.info.get("video_path")
        episodes = []
        for r in rows:
            ep, chunk = int(r["episode_index"]), int(r["episode_index"]) // chunks
            videos = {}
            for cam in self.video_keys:
                if video_tpl is None:
                    raise SigmaError("video_path template missing", file=self.info_path, field="video_path")
                vpath = self.root / video_tpl.format(episode_chunk=chunk, video_key=cam, episode_index=ep)
                videos[cam] = VideoSegment(vpath, 0.0, float(r["length"]) / self.fps)
            tasks = r.get("tasks") or []
            episodes.append(Episode(ep, int(r["length"]), list(tasks),
                                    self.root / data_tpl.format(episode_chunk=chunk, episode_index=ep), videos))
        return episodes

    # ---- data ---------------------------------------------------------------------------------------------
    def _table(self, path: Path) -> pa.Table:
        """The data file's columns we use, cached for the last file (v3.0 packs many episodes in one file)."""
        if self._table_cache is None or self._table_cache[0] != path:
            cols = [STATE_KEY, ACTION_KEY, *BOOKKEEPING]
            table = read_parquet(path)
            for name in cols:
                if name not in table.column_names:
                    raise SigmaError("feature declared in info.json but absent from the data", file=path,
                                     field=name)
            self._table_cache = (path, table.select(cols))
        return self._table_cache[1]

    def episode_columns(self, ep: Episode) -> dict[str, np.ndarray]:
        """State, action and bookkeeping of one episode, sorted by frame_index (paper 4.1)."""
        table = self._table(ep.data_path)
        episode_col = table.column("episode_index").to_numpy()
        rows = np.flatnonzero(episode_col == ep.index)
        sub = table.take(pa.array(rows)) if len(rows) != len(table) else table
        out = {
            "state": column_to_numpy(sub, STATE_KEY, ep.data_path, self.shape(STATE_KEY)[0]).astype(np.float32),
            "action": column_to_numpy(sub, ACTION_KEY, ep.data_path, self.shape(ACTION_KEY)[0]).astype(np.float32),
            "timestamp": column_to_numpy(sub, "timestamp", ep.data_path).astype(np.float64),
            "frame_index": column_to_numpy(sub, "frame_index", ep.data_path).astype(np.int64),
            "task_index": column_to_numpy(sub, "task_index", ep.data_path).astype(np.int64),
        }
        order = np.argsort(out["frame_index"], kind="stable")
        return {k: v[order] for k, v in out.items()}
