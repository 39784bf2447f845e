"""`sigma prep`: a LeRobot dataset -> windowed, filtered training shards (paper 4.1).

Pipeline: open and check the dataset (columns of every episode, video headers) before anything is written;
assign splits by episode; count the windows each episode keeps; then, in parallel over episodes, gather windows
and decode the frames at their starts; write fixed-size shards atomically in episode order; finally meta.json.
A killed run resumes: the samples held by complete shards are skipped (episodes wholly before the resume point
are not even decoded), so the final shards equal those of an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing as mp
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from sigma_vla.data.lerobot import ACTION_KEY, STATE_KEY, LeRobotDataset
from sigma_vla.data.schema import META_FILE, SHARD_PATTERN, SPLIT_CODES
from sigma_vla.data.shards import ShardWriter, atomic_write_text, shard_num_samples, shard_paths
from sigma_vla.data.validate import check_columns, tolerance, video_times
from sigma_vla.data.video import decode_frames, probe_video
from sigma_vla.data.windows import assign_splits, episode_windows, pad_steps, parse_split
from sigma_vla.errors import SigmaError, first_line
from sigma_vla.outdir import check_dir, claim_dir, release_dir
from sigma_vla.progress import Progress


@dataclass(frozen=True)
class PrepConfig:
    horizon: int = 16  # paper 4.1: horizon_T = 16
    chunk: int = 8  # our choice: path B's chunk is the first C actions of the window
    min_action_norm: float = 0.0  # paper filters near-static windows; 0 keeps all (data units differ per robot)
    image_size: int | None = None  # S; None: the recording's own up to MAX_DEFAULT_SIDE, set by run_prep
    state_only: bool = False
    split: str = "train:0.8,val:0.1,test:0.1"
    shard_size: int = 256
    stride: int = 1
    seed: int = 0  # seeds the episode -> split shuffle
    pad_end: bool = False  # True: windows at every frame, the last action repeated (data/windows.py; the demo)
    # Episodes whose task is this text are the base's demonstrations and form the base split; the other episodes
    # are cut by `split` (the demo: the generic twins of `sigma record --paired`). None: off.
    base_task: str | None = None

    def __post_init__(self):
        if self.horizon < 1:
            raise SigmaError(f"horizon must be >= 1, got {self.horizon}", field="--horizon")
        if not 1 <= self.chunk <= self.horizon:
            raise SigmaError(f"chunk must be in [1, horizon={self.horizon}], got {self.chunk}", field="--chunk")
        if self.image_size is not None and self.image_size < 8:
            raise SigmaError(f"image size must be >= 8, got {self.image_size}", field="--image-size")
        if self.shard_size < 1 or self.stride < 1:
            raise SigmaError("shard size and stride must be >= 1", field="--shard-size")
        if not 0 <= self.min_action_norm < math.inf:  # NaN fails this too: it would silently drop every window
            raise SigmaError(f"must be a finite number >= 0, got {self.min_action_norm}", field="--min-action-norm")
        if self.seed < 0:
            raise SigmaError(f"must be >= 0, got {self.seed}", field="--seed")
        if not all(math.isfinite(v) for v in parse_split(self.split).values()):  # NaN passes the sum check
            raise SigmaError(f"fractions must be finite numbers, got {self.split!r}", field="--split")


# The side recorded for a dataset without cameras (prepped --state-only): no frame is decoded, so it is unused.
NO_CAMERA_SIDE = 128
# The default side never exceeds this: a 640 x 480 recording preps at 128 px (what the models read), not 480.
MAX_DEFAULT_SIDE = 128


def frame_side(ds: LeRobotDataset) -> int | None:
    """The recording's own frame size as one square side: its smallest camera's shorter side, so no axis of any
    camera is upscaled; None without cameras."""
    sides = [min(ds.frame_size(key)) for key in ds.camera_keys]
    return min(sides) if sides else None


def with_image_size(ds: LeRobotDataset, cfg: PrepConfig) -> PrepConfig:
    """cfg with its side: the one asked, or the recording's own up to MAX_DEFAULT_SIDE (never upscaled)."""
    if cfg.image_size is not None:
        return cfg
    side = frame_side(ds)
    return replace(cfg, image_size=NO_CAMERA_SIDE if side is None else min(side, MAX_DEFAULT_SIDE))


def upscale_warning(ds: LeRobotDataset, size: int | None) -> str | None:
    """One line when S x S frames are larger than a camera's recorded frames in height or width; else None."""
    if size is None:
        return None
    small = [f"{key} {h}x{w}" for key in ds.camera_keys for h, w in [ds.frame_size(key)] if size > min(h, w)]
    if not small:
        return None
    return (f"--image-size {size} is larger than the recording's frames ({', '.join(small)}): frames are upscaled "
            "(leave --image-size out to keep the recording's size)")


def episode_splits(ds: LeRobotDataset, cfg: PrepConfig) -> dict[int, str]:
    """Episode index -> split: the base task's episodes to base, the rest cut by the fractions (held-out templates
    always to test). A base episode that is the twin of a val or test episode (`sigma record --paired`: the same
    `sigma/seed`) is left out: it would show the base the block position the evaluation holds out."""
    base = {e.index for e in ds.episodes if cfg.base_task is not None and cfg.base_task in e.tasks}
    if cfg.base_task is not None and not base:
        raise SigmaError(f"no episode has the task {cfg.base_task!r}", file=ds.root, field="--base-task")
    held_out = {e.index for e in ds.episodes if e.extra.get("sigma/held_out")}
    rest = [e.index for e in ds.episodes if e.index not in base]
    splits = assign_splits(rest, parse_split(cfg.split), cfg.seed, held_out)
    seed = {e.index: e.extra.get("sigma/seed") for e in ds.episodes}
    evaluated = {seed[e] for e, s in splits.items() if s != "train" and seed[e] is not None}
    return {**splits, **{e: "base" for e in base if seed[e] is None or seed[e] not in evaluated}}


def fingerprint(ds: LeRobotDataset) -> str:
    """Content hash of the metadata plus the name and size of every data file: changes when the dataset does."""
    h = hashlib.sha256()
    for path in sorted((ds.root / "meta").rglob("*")):
        if path.is_file():
            h.update(str(path.relative_to(ds.root)).encode())
            h.update(path.read_bytes())
    for path in sorted({ep.data_path for ep in ds.episodes}):
        h.update(f"{path.relative_to(ds.root)}:{path.stat().st_size if path.exists() else -1}".encode())
    return h.hexdigest()[:16]


def check_out_dir(out: Path, params: dict) -> str:
    """'fresh', 'resume' or 'complete'. The one rule of sigma_vla.outdir decides what is ours: a directory holding
    anything else is refused and kept (never deleted)."""
    if check_dir(out, "shards") != "ours":
        return "fresh"
    meta_path = out / META_FILE
    if not meta_path.exists():
        if shard_paths(out):
            raise SigmaError("shards without meta.json: not a prep of ours to resume", file=out)
        return "fresh"
    try:
        meta = json.loads(meta_path.read_text())
    except (ValueError, OSError) as err:
        raise SigmaError(f"unreadable ({first_line(err)}): not a prep to resume; use a new --out",
                         file=meta_path) from None
    if not isinstance(meta, dict) or meta.get("params") != params:
        raise SigmaError("holds a prep of another dataset or other parameters; use a new --out", file=meta_path,
                         field="params")
    return "complete" if meta.get("status") == "complete" else "resume"


def _check_kept(cfg: PrepConfig, counts: dict[int, int], stats: dict) -> None:
    """Zero windows is not a result: say which option dropped them all."""
    if sum(counts.values()):
        return
    if stats["windows_dropped_static"]:
        raise SigmaError(f"drops all {stats['windows_dropped_static']} windows (their mean action norm is below "
                         f"{cfg.min_action_norm:g})", field="--min-action-norm")
    raise SigmaError(f"no episode is as long as the horizon ({cfg.horizon} frames); lower --horizon or pass "
                     "--pad-end", field="--horizon")


def _resume_point(out: Path, shard_size: int) -> int:
    """Samples held by the complete shards at the start of the sequence (shard 0, 1, ... with no gap); a trailing
    partial shard is rewritten. Our writes are atomic, so an unreadable shard was damaged afterwards: its
    SigmaError names it."""
    done = 0
    for i, path in enumerate(shard_paths(out)):
        if path.name != SHARD_PATTERN.format(i):
            break
        n = shard_num_samples(path)
        done += n
        if n != shard_size:
            break
    return done - done % shard_size


def _split_counts(splits: dict[int, str]) -> dict[str, int]:
    return {name: sum(1 for s in splits.values() if s == name) for name in SPLIT_CODES}


def _normalization(ds: LeRobotDataset, columns: dict[int, dict], episodes: list[int]) -> dict:
    """Mean/std/min/max of state and action over the frames of the given (training) episodes."""
    out = {}
    for name, key in (("robot_state", "state"), ("action", "action")):
        x = np.concatenate([columns[e][key] for e in episodes]).astype(np.float64)
        out[name] = {"mean": x.mean(0).tolist(), "std": np.maximum(x.std(0), 1e-6).tolist(),
                     "min": x.min(0).tolist(), "max": x.max(0).tolist()}
    return out


# ---- per-episode work (runs in worker processes) ------------------------------------------------------------
_WORKER_DS: LeRobotDataset | None = None


def _worker_init(root: str) -> None:
    global _WORKER_DS
    _WORKER_DS = LeRobotDataset(root)


def episode_samples(ds: LeRobotDataset, ep_index: int, cfg: PrepConfig, split: str,
                    skip: int = 0, cols: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """All kept windows of one episode as sample arrays (first dim W), minus the first `skip` of them.
    `cols`: the episode's columns when the caller already read them (the serial path reuses the scan's)."""
    ep = next(e for e in ds.episodes if e.index == ep_index)
    cols = cols if cols is not None else ds.episode_columns(ep)
    starts, windows, avg, mx, _ = episode_windows(cols["action"], cfg.horizon, cfg.min_action_norm, cfg.stride,
                                                  cfg.pad_end)
    starts, windows, avg, mx = starts[skip:], windows[skip:], avg[skip:], mx[skip:]
    w, s = len(starts), cfg.image_size
    cams = [] if cfg.state_only or not w else ds.camera_keys
    frames = [decode_frames(ep.videos[cam].path, video_times(ep, cam, cols["timestamp"][starts]),
                            tolerance(ds.fps), size=s) for cam in cams]  # V x (W, S, S, 3)
    if not frames:
        vision = np.empty((w, len(ds.camera_keys) if not cfg.state_only else 0, 3, s, s), dtype=np.uint8)
    else:  # a view where possible: the shard writer's concatenation makes the one contiguous copy
        stacked = frames[0][:, None] if len(frames) == 1 else np.stack(frames, axis=1)  # (W, V, S, S, 3)
        vision = stacked.transpose(0, 1, 4, 2, 3)  # (W, V, 3, S, S)
    return {
        "vision_inputs": vision,
        "robot_state": cols["state"][starts],  # (W, Ds)
        "gt_action_vector": windows[:, 0],  # (W, Da)
        "gt_action_chunk": np.ascontiguousarray(windows[:, : cfg.chunk]),  # (W, C, Da)
        "gt_action_trajectory": windows,  # (W, T, Da)
        "avg_action_l2": avg,
        "max_action_l2": mx,
        "episode_index": np.full(w, ep.index, dtype=np.int64),
        "frame_index": cols["frame_index"][starts],
        "task_index": cols["task_index"][starts],
        "split": np.full(w, SPLIT_CODES[split], dtype=np.int64),
        "pad_steps": pad_steps(len(cols["action"]), starts, cfg.horizon),
    }


def _worker_episode(job: tuple[int, PrepConfig, str, int]) -> dict[str, np.ndarray]:
    ep_index, cfg, split, skip = job
    return episode_samples(_WORKER_DS, ep_index, cfg, split, skip)


# ---- the whole run ----------------------------------------------------------------------------------------
def _scan(ds: LeRobotDataset, cfg: PrepConfig, progress: bool) -> tuple[dict[int, dict], dict[int, int], dict]:
    """Check every episode's columns and video headers; count kept windows. Nothing is written yet."""
    if not ds.episodes or ds.num_frames == 0:
        raise SigmaError("empty dataset: no episodes or no frames", file=ds.root / "meta")
    if cfg.state_only is False:
        if not ds.camera_keys:
            raise SigmaError("dataset declares no cameras; use --state-only", file=ds.info_path, field="features")
        for path in sorted({ep.videos[c].path for ep in ds.episodes for c in ds.video_keys}):
            if not path.exists():
                raise SigmaError("video file missing (pass --state-only to prep without cameras)", file=path)
            probe_video(path)  # corrupt files fail here, before any shard exists
    columns, counts = {}, {}
    stats = {"windows_total": 0, "windows_dropped_static": 0, "episodes_too_short": 0}
    for ep in Progress(ds.episodes, desc="scan", unit="ep", enabled=progress, leave=False):
        cols = ds.episode_columns(ep)
        check_columns(ds, ep, cols)
        starts, _, _, _, dropped = episode_windows(cols["action"], cfg.horizon, cfg.min_action_norm, cfg.stride,
                                                   cfg.pad_end)
        columns[ep.index] = cols
        counts[ep.index] = len(starts)
        stats["windows_total"] += len(starts) + dropped
        stats["windows_dropped_static"] += dropped
        stats["episodes_too_short"] += int(ep.length < cfg.horizon and not cfg.pad_end)
    return columns, counts, stats


def run_prep(dataset: str | Path, out: str | Path, cfg: PrepConfig, workers: int = 1,
             progress: bool = True) -> dict:
    """Run (or resume) a prep; returns the meta.json contents (params.image_size: the side used)."""
    ds = LeRobotDataset(dataset)
    cfg = with_image_size(ds, cfg)
    out = Path(out)
    params = {"dataset": str(ds.root.resolve()), "fingerprint": fingerprint(ds), **asdict(cfg)}
    state = check_out_dir(out, params)
    if state == "complete":
        return json.loads((out / META_FILE).read_text())
    columns, counts, stats = _scan(ds, cfg, progress)
    _check_kept(cfg, counts, stats)
    splits = episode_splits(ds, cfg)
    counts = {e: n if e in splits else 0 for e, n in counts.items()}  # left out: no windows
    created = claim_dir(out, "shards")
    writer = None
    try:
        meta = _meta(ds, cfg, params, columns, counts, stats, splits)
        atomic_write_text(out / META_FILE, json.dumps({**meta, "status": "in_progress"}, indent=1))
        done = _resume_point(out, cfg.shard_size)
        writer = ShardWriter(out, cfg.shard_size, start_samples=done)
        jobs, offset = [], 0
        for ep in ds.episodes:
            n = counts[ep.index]
            if offset + n > done and n:
                jobs.append((ep.index, cfg, splits[ep.index], max(0, done - offset)))
            offset += n
        _write_all(ds, jobs, writer, workers, progress, columns)
    except SigmaError:
        # Bad input found mid-run (say a corrupt video): a fresh run removes only what it wrote. A resumed run keeps
        # its state; a crash or an interrupt is not caught: complete shards stay, and rerunning resumes after them.
        if state == "fresh":
            for path in [*(writer.written if writer else []), out / META_FILE]:
                path.unlink(missing_ok=True)
            release_dir(out, created)
        raise
    meta["num_shards"] = len(shard_paths(out))
    atomic_write_text(out / META_FILE, json.dumps({**meta, "status": "complete"}, indent=1))
    return {**meta, "status": "complete"}


def _write_all(ds: LeRobotDataset, jobs: list, writer: ShardWriter, workers: int, progress: bool,
               columns: dict[int, dict]) -> None:
    bar = Progress(total=len(jobs), desc="prep", unit="ep", enabled=progress)
    try:
        if workers <= 1:
            for samples in (episode_samples(ds, *job, cols=columns[job[0]]) for job in jobs):
                writer.add(samples)
                bar.update(1)
        else:
            ctx = mp.get_context("spawn")  # torch may be imported in the parent; fork would be unsafe
            with ctx.Pool(workers, initializer=_worker_init, initargs=(str(ds.root),)) as pool:
                for samples in pool.imap(_worker_episode, jobs):
                    writer.add(samples)
                    bar.update(1)
        writer.close()
    finally:
        bar.close()


def _meta(ds, cfg, params, columns, counts, stats, splits) -> dict:
    train = [e for e, s in splits.items() if s == "train"] or list(splits)
    per_split = {name: sum(counts[e] for e, s in splits.items() if s == name) for name in SPLIT_CODES}
    return {
        "format": "sigma-vla-shards/1",
        "params": params,
        "dataset": {"path": params["dataset"], "fingerprint": params["fingerprint"], "codebase_version": ds.version,
                    "fps": ds.fps, "robot_type": ds.robot_type},
        "cameras": [] if cfg.state_only else ds.camera_keys,
        "state_dim": ds.shape(STATE_KEY)[0],
        "action_dim": ds.shape(ACTION_KEY)[0],
        "episodes": {"total": len(ds.episodes), "per_split": _split_counts(splits),
                     "left_out": len(ds.episodes) - len(splits)},
        "episode_splits": {str(e): s for e, s in sorted(splits.items())},
        "held_out_rule": "episodes whose instruction template is held out are always in the test split",
        "episode_info": {str(ep.index): ep.extra for ep in ds.episodes if ep.extra},
        "windows": {**stats, "kept": sum(counts.values()), "per_split": per_split},
        "num_samples": sum(counts.values()),
        "tasks": [ds.tasks.get(i, "") for i in range(max(ds.tasks, default=-1) + 1)],
        "normalization": _normalization(ds, columns, train),
        "normalization_from": "train" if any(s == "train" for s in splits.values()) else "all",
    }
