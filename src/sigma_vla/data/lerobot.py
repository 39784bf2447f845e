"""Read local LeRobot datasets (codebase_version v2.1 and v3.0) natively, without the `lerobot` package.

Why native (docs/architecture.md, "Native LeRobot formats"): LeRobot's releases pin torch and torchvision below
what this project runs on, while its on-disk format is plain JSON + parquet + mp4. Everything here is column-wise
(pyarrow -> numpy); no per-row Python loops. Bad input raises SigmaError naming the file and the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sigma_vla.data.info_schema import (SUPPORTED_VERSIONS, as_dict, as_int, as_number, as_str, format_path,
                                        validate_info)
from sigma_vla.errors import SigmaError, first_line

__all__ = ["SUPPORTED_VERSIONS", "LeRobotDataset", "Episode", "VideoSegment", "read_parquet", "column_to_numpy"]
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


def _read_text(path: Path, missing: str = "file not found") -> str:
    """A metadata file's text: missing, a directory, or not UTF-8 is a one-line SigmaError."""
    if not path.exists():
        raise SigmaError(missing, file=path)
    if not path.is_file():
        raise SigmaError("is a directory, expected a file", file=path)
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise SigmaError(f"not UTF-8 text (byte {err.start})", file=path) from None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(_read_text(path, "file not found (is this a LeRobot dataset root?)"))
    except json.JSONDecodeError as err:
        raise SigmaError(f"invalid JSON ({err.msg} at line {err.lineno})", file=path) from None


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    for n, line in enumerate(_read_text(path).splitlines(), start=1):
        if line.strip():
            try:
                rows.append(as_dict(json.loads(line), path, f"line {n}"))
            except json.JSONDecodeError as err:
                raise SigmaError(f"invalid JSON on line {n}: {err.msg}", file=path) from None
    return rows


def read_parquet(path: Path, columns: list[str] | None = None) -> pa.Table:
    """Read a parquet file, turning a missing, truncated or foreign file into a one-line SigmaError."""
    if not path.exists():
        raise SigmaError("file not found", file=path)
    if not path.is_file():  # pyarrow would read a directory as an (empty) dataset
        raise SigmaError("is a directory, expected a parquet file", file=path)
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as err:
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


def _tasks(row: dict, path: Path) -> list[str]:
    tasks = row.get("tasks") or []
    if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
        raise SigmaError("must be a list of strings", file=path, field="tasks")
    return tasks


def check_column_type(dtype: pa.DataType, path: Path, name: str) -> None:
    """State and action hold numbers (scalars or lists of them), the bookkeeping columns integers (timestamp: any
    number): a column of strings is refused here, not by a failed conversion later."""
    inner = dtype.value_type if pa.types.is_list(dtype) or pa.types.is_large_list(dtype) or \
        pa.types.is_fixed_size_list(dtype) else dtype
    numeric = pa.types.is_integer(inner) or pa.types.is_floating(inner)
    if name in (STATE_KEY, ACTION_KEY, "timestamp"):
        ok = numeric and (inner is dtype or name != "timestamp")
    else:
        ok = inner is dtype and pa.types.is_integer(dtype)
    if not ok:
        want = "numbers" if name in (STATE_KEY, ACTION_KEY) else "a number" if name == "timestamp" else "integers"
        raise SigmaError(f"column of {dtype} values, expected {want}", file=path, field=name)


class LeRobotDataset:
    """A local LeRobot dataset: metadata, episodes, tasks, stats, per-episode columns and video segments."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise SigmaError("dataset directory not found", file=self.root)
        self.info_path = self.root / "meta" / "info.json"
        # the schema first: nothing below reads a field whose type and range it has not checked
        self.info = validate_info(_read_json(self.info_path), self.info_path, STATE_KEY, ACTION_KEY)
        self.version = self.info["codebase_version"]
        self.fps = float(self.info["fps"])
        self.features: dict[str, dict] = self.info["features"]
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
        return tuple(int(s) for s in self.features[key]["shape"])  # checked by the schema

    def frame_size(self, key: str) -> tuple[int, int]:
        """A camera's (height, width) as info.json declares it: (height, width, channels), or in the order its
        `names` give (some recordings list channels first)."""
        shape, names = self.shape(key), self.features[key].get("names")
        if isinstance(names, list) and len(names) == len(shape) and "height" in names and "width" in names:
            return shape[names.index("height")], shape[names.index("width")]
        return shape[0], shape[1]

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
            pairs = zip(table.column("task_index").to_pylist(), table.column(text_col).to_pylist())
        else:
            path = self.root / "meta" / "tasks.jsonl"
            pairs = ((r.get("task_index"), r.get("task")) for r in _read_jsonl(path))
        return {as_int(i, path, "task_index"): as_str(t, path, "task") for i, t in pairs}

    def _load_episodes(self) -> list[Episode]:
        episodes = self._load_episodes_v30() if self.version == "v3.0" else self._load_episodes_v21()
        return sorted(episodes, key=lambda e: e.index)

    def _load_episodes_v30(self) -> list[Episode]:
        ep_dir = self.root / "meta" / "episodes"
        files = sorted(ep_dir.glob("chunk-*/file-*.parquet"))
        if not files:
            raise SigmaError("no episode metadata files (meta/episodes/chunk-*/file-*.parquet)", file=ep_dir)
        episodes = []
        for path in files:
            table = read_parquet(path)
            rows = table.drop_columns([c for c in table.column_names if c.startswith("stats/")]).to_pylist()
            for r in rows:
                for key in ("episode_index", "length", "data/chunk_index", "data/file_index"):
                    if key not in r:
                        raise SigmaError("column missing", file=path, field=key)
                index = {k: as_int(r[k], path, k) for k in ("data/chunk_index", "data/file_index")}
                data_path = format_path(self.root, self.info["data_path"], path, "data_path",
                                        chunk_index=index["data/chunk_index"], file_index=index["data/file_index"])
                videos = {cam: self._segment_v30(r, cam, path) for cam in self.video_keys}
                extra = {k: v for k, v in r.items() if k.startswith("sigma/")}
                episodes.append(Episode(as_int(r["episode_index"], path, "episode_index"),
                                        as_int(r["length"], path, "length"), _tasks(r, path), data_path, videos,
                                        extra))
        return episodes

    def _segment_v30(self, r: dict, cam: str, path: Path) -> VideoSegment:
        """Where one camera's frames of one episode live (v3.0 episodes row)."""
        pre = f"videos/{cam}/"
        for key in ("chunk_index", "file_index", "from_timestamp", "to_timestamp"):
            if pre + key not in r:
                raise SigmaError("video location missing for a declared camera", file=path, field=pre + key)
        vpath = format_path(self.root, self.info["video_path"], path, pre + "chunk_index", video_key=cam,
                            chunk_index=as_int(r[pre + "chunk_index"], path, pre + "chunk_index"),
                            file_index=as_int(r[pre + "file_index"], path, pre + "file_index"))
        return VideoSegment(vpath, as_number(r[pre + "from_timestamp"], path, pre + "from_timestamp", minimum=0),
                            as_number(r[pre + "to_timestamp"], path, pre + "to_timestamp", minimum=0))

    def _load_episodes_v21(self) -> list[Episode]:
        path = self.root / "meta" / "episodes.jsonl"
        chunks = int(self.info.get("chunks_size", 1000))
        episodes = []
        for r in _read_jsonl(path):
            ep = as_int(r.get("episode_index"), path, "episode_index")
            length = as_int(r.get("length"), path, "length")
            where = {"episode_chunk": ep // chunks, "episode_index": ep}
            videos = {cam: VideoSegment(format_path(self.root, self.info["video_path"], self.info_path, "video_path",
                                                    video_key=cam, **where), 0.0, length / self.fps)
                      for cam in self.video_keys}
            data_path = format_path(self.root, self.info["data_path"], self.info_path, "data_path", **where)
            episodes.append(Episode(ep, length, _tasks(r, path), data_path, videos))
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
                check_column_type(table.schema.field(name).type, path, name)
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
