"""Video frames through PyAV (AV1 via libdav1d, H.264), located by time as LeRobot does.

A frame for a dataset row is the one whose presentation time is within half a frame of
`from_timestamp + timestamp` (DESIGN 4). Decoding is sequential from the nearest keyframe before the first
requested time, which is what makes prep close to pure decode speed: we never seek per frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from sigma_vla.errors import SigmaError


@dataclass(frozen=True)
class VideoInfo:
    codec: str
    width: int
    height: int
    fps: float
    duration: float  # seconds, from the container or the stream
    frames: int  # as declared by the container (0 when unknown)


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _open(path: Path):
    if not path.exists():
        raise SigmaError("video file missing", file=path)
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as err:
        raise SigmaError(f"video unreadable (corrupt?): {_first_line(err)}", file=path) from None
    if not container.streams.video:
        container.close()
        raise SigmaError("no video stream in file", file=path)
    return container


def probe_video(path: Path) -> VideoInfo:
    """Codec, size, rate and duration from the container header (no decoding)."""
    with _open(path) as container:
        stream = container.streams.video[0]
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = 0.0
        rate = stream.average_rate or stream.guessed_rate or 0
        return VideoInfo(stream.codec_context.name, stream.codec_context.width, stream.codec_context.height,
                         float(rate), duration, int(stream.frames or 0))


def decode_frames(path: Path, timestamps: np.ndarray, tolerance: float, size: int | None = None) -> np.ndarray:
    """Frames at the given times (seconds in the file) as (n, H, W, 3) uint8, resized to size x size if given.

    Raises SigmaError naming the file when the file is missing or corrupt, or when a requested time has no frame
    within `tolerance` (a truncated video, or timestamps that do not match the video).
    """
    ts = np.asarray(timestamps, dtype=np.float64)
    order = np.argsort(ts, kind="stable")
    wanted = ts[order]
    n = len(wanted)
    out: np.ndarray | None = None
    j = 0
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            if n and wanted[0] - tolerance > 0 and stream.time_base is not None:
                container.seek(int((wanted[0] - tolerance) / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                t = frame.time
                if t is None:
                    raise SigmaError("video frames carry no timestamps", file=path)
                if wanted[j] < t - tolerance:
                    break  # we passed a requested time without a frame close enough
                while j < n and abs(wanted[j] - t) <= tolerance:
                    img = (frame.to_ndarray(format="rgb24", width=size, height=size) if size
                           else frame.to_ndarray(format="rgb24"))
                    if out is None:
                        out = np.empty((n, *img.shape), dtype=np.uint8)
                    out[order[j]] = img
                    j += 1
                if j == n:
                    break
        except av.error.FFmpegError as err:
            raise SigmaError(f"video decode failed (corrupt?): {_first_line(err)}", file=path) from None
    if j < n:
        raise SigmaError(f"no frame within {tolerance:.4f} s of t={wanted[j]:.4f} s (video truncated, or "
                         f"timestamps do not match it)", file=path)
    if out is None:  # n == 0
        side = size or 0
        out = np.empty((0, side, side, 3), dtype=np.uint8)
    return out


def count_frames(path: Path) -> int:
    """Decode every frame once (the pure-decode baseline of benchmarks/prep.py)."""
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return sum(1 for _ in container.decode(stream))
