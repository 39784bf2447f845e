"""Validation of a LeRobot dataset, shared by `sigma inspect` (collects every problem) and `sigma prep` (stops at
the first): timestamps monotonic and on the fps grid within half a frame, no NaN/Inf in state or action, declared
shapes, and every declared video present and decodable for its episode's time range."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sigma_vla.data.lerobot import ACTION_KEY, STATE_KEY, Episode, LeRobotDataset
from sigma_vla.data.video import decode_frames, probe_video
from sigma_vla.errors import SigmaError


def tolerance(fps: float) -> float:
    """Half a frame: LeRobot's rule for matching a row's timestamp to a video frame."""
    return 0.5 / fps


def check_columns(ds: LeRobotDataset, ep: Episode, cols: dict[str, np.ndarray]) -> None:
    """Raise SigmaError on the first problem in one episode's state, action and timestamps."""
    path = ep.data_path
    n = len(cols["frame_index"])
    if n != ep.length:
        raise SigmaError(f"episode {ep.index} has {n} rows but its metadata says length {ep.length}",
                         file=path, field="episode_index")
    for key, name in (("state", STATE_KEY), ("action", ACTION_KEY)):
        bad = ~np.isfinite(cols[key]).all(axis=1)
        if bad.any():
            frame = int(cols["frame_index"][np.argmax(bad)])
            raise SigmaError(f"NaN or Inf in episode {ep.index} at frame {frame}", file=path, field=name)
    unknown = np.setdiff1d(cols["task_index"], list(ds.tasks))
    if len(unknown):  # training looks the instruction up by task_index: an unknown one has no text
        frame = int(cols["frame_index"][np.argmax(np.isin(cols["task_index"], unknown))])
        raise SigmaError(f"task_index {int(unknown[0])} in episode {ep.index} at frame {frame} is not in the tasks "
                         f"table ({len(ds.tasks)} tasks)", file=path, field="task_index")
    ts = cols["timestamp"]
    if n > 1 and not (np.diff(ts) > 0).all():
        frame = int(cols["frame_index"][1 + np.argmax(np.diff(ts) <= 0)])
        raise SigmaError(f"timestamps not increasing in episode {ep.index} at frame {frame}",
                         file=path, field="timestamp")
    expected = (cols["frame_index"] - cols["frame_index"][0]) / ds.fps + (ts[0] if n else 0.0)
    off = np.abs(ts - expected)
    if n and off.max() > tolerance(ds.fps):
        frame = int(cols["frame_index"][np.argmax(off)])
        raise SigmaError(f"timestamp off the {ds.fps:g} fps grid by {off.max():.4f} s (tolerance "
                         f"{tolerance(ds.fps):.4f} s) in episode {ep.index} at frame {frame}",
                         file=path, field="timestamp")


def video_times(ep: Episode, cam: str, timestamps: np.ndarray) -> np.ndarray:
    """Times inside the video file for rows of this episode: from_timestamp + timestamp."""
    return ep.videos[cam].from_timestamp + timestamps


def check_video(ds: LeRobotDataset, ep: Episode, cam: str, timestamps: np.ndarray) -> None:
    """The camera's file exists and its first and last frame of this episode decode (cheap, no full decode)."""
    ends = video_times(ep, cam, timestamps[[0, -1]]) if len(timestamps) else np.zeros(0)
    decode_frames(ep.videos[cam].path, ends, tolerance(ds.fps), size=16)


def validate_dataset(ds: LeRobotDataset, check_videos: bool = True) -> list[str]:
    """Every problem found, one line each (a missing video file is reported once, by path)."""
    problems: list[str] = []
    if not ds.episodes:
        problems.append(f"{ds.root}: dataset has no episodes")
    missing: set[Path] = set()
    for ep in ds.episodes:
        try:
            cols = ds.episode_columns(ep)
            check_columns(ds, ep, cols)
        except SigmaError as err:
            problems.append(err.one_line())
            continue
        if not check_videos:
            continue
        for cam in ds.video_keys:
            path = ep.videos[cam].path
            if path in missing:
                continue
            if not path.exists():
                missing.add(path)
                problems.append(SigmaError("video file missing", file=path, field=cam).one_line())
                continue
            try:
                check_video(ds, ep, cam, cols["timestamp"])
            except SigmaError as err:
                problems.append(f"{err.one_line()} (episode {ep.index}, {cam})")
    return problems


def describe(ds: LeRobotDataset) -> dict:
    """What `sigma inspect` prints: version, rate, robot, counts, features, cameras and tasks."""
    cameras = {}
    for cam in ds.camera_keys:
        info = ds.features[cam].get("info", {})
        entry = {"dtype": ds.features[cam].get("dtype"), "shape": list(ds.shape(cam)),
                 "codec": info.get("video.codec"), "width": info.get("video.width"),
                 "height": info.get("video.height")}
        paths = sorted({ep.videos[cam].path for ep in ds.episodes if cam in ep.videos})
        present = [p for p in paths if p.exists()]
        entry["files"] = len(paths)
        entry["files_present"] = len(present)
        if present:
            try:
                probed = probe_video(present[0])
                entry.update(codec=probed.codec, width=probed.width, height=probed.height)
            except SigmaError:
                pass
        cameras[cam] = entry
    return {
        "path": str(ds.root),
        "codebase_version": ds.version,
        "fps": ds.fps,
        "robot_type": ds.robot_type,
        "episodes": len(ds.episodes),
        "frames": ds.num_frames,
        "features": {k: {"dtype": f.get("dtype"), "shape": list(ds.shape(k))} for k, f in ds.features.items()},
        "cameras": cameras,
        "tasks": {str(k): v for k, v in sorted(ds.tasks.items())},
    }
