"""Video frames through PyAV (AV1 via libdav1d, H.264), located by time as LeRobot does.

A frame for a dataset row is the one whose presentation time is within half a frame of
`from_timestamp + timestamp` (LeRobot's own rule). Decoding is sequential from the nearest keyframe before the first
requested time, which is what makes prep close to pure decode speed: we never seek per frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from sigma_vla.errors import SigmaError, first_line


@dataclass(frozen=True)
class VideoInfo:
    codec: str
    width: int
    height: int
    fps: float
    duration: float  # seconds, from the container or the stream
    frames: int  # as declared by the container (0 when unknown)


def _open(path: Path):
    if not path.exists():
        raise SigmaError("video file missing", file=path)
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as err:
        raise SigmaError(f"video unreadable (corrupt?): {first_line(err)}", file=path) from None
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


class VideoCursor:
    """An open video decoded forward. LeRobot v3.0 packs many episodes into one file, in time order, so prep asks
    for episode after episode further along the same file: the cursor continues decoding where it stopped instead
    of reopening and seeking (it seeks only when asked for an earlier time)."""

    def __init__(self, path: Path):
        self.path = path
        self.container = _open(path)
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        # One reformatter for the whole file: it caches the swscale context. frame.to_ndarray(width=, height=)
        # builds a new one per frame, which made colour conversion + resize 20-50x slower than decoding.
        self.reformatter = VideoReformatter()
        self._frames = None  # the decode iterator
        self._peek = None  # the next frame not yet passed

    def close(self) -> None:
        self.container.close()

    def _next(self):
        if self._peek is not None:
            frame, self._peek = self._peek, None
            return frame
        return next(self._frames, None)

    def _restart_at(self, t: float) -> None:
        if t > 0 and self.stream.time_base is not None:
            self.container.seek(int(t / self.stream.time_base), stream=self.stream, backward=True)
        else:
            self.container.seek(0)
        self._frames, self._peek = self.container.decode(self.stream), None

    def frames_at(self, timestamps: np.ndarray, tolerance: float, size: int | None) -> np.ndarray:
        ts = np.asarray(timestamps, dtype=np.float64)
        order = np.argsort(ts, kind="stable")
        wanted, n, j = ts[order], len(ts), 0
        out: np.ndarray | None = None
        if n and (self._frames is None or (self._peek is not None and wanted[0] < self._peek.time - tolerance)):
            self._restart_at(wanted[0] - tolerance)
        try:
            while j < n:
                frame = self._next()
                if frame is None:
                    break
                if frame.time is None:
                    raise SigmaError("video frames carry no timestamps", file=self.path)
                if wanted[j] < frame.time - tolerance:
                    self._peek = frame  # passed a requested time without a frame close enough
                    break
                while j < n and abs(wanted[j] - frame.time) <= tolerance:
                    img = self.reformatter.reformat(frame, width=size, height=size, format="rgb24").to_ndarray()
                    if out is None:
                        out = np.empty((n, *img.shape), dtype=np.uint8)
                    out[order[j]] = img
                    j += 1
                if j == n:
                    self._peek = frame  # the next episode may start on this very frame
        except av.error.FFmpegError as err:
            raise SigmaError(f"video decode failed (corrupt?): {first_line(err)}", file=self.path) from None
        if j < n:
            raise SigmaError(f"no frame within {tolerance:.4f} s of t={wanted[j]:.4f} s (video truncated, or "
                             f"timestamps do not match it)", file=self.path)
        return out if out is not None else np.empty((0, size or 0, size or 0, 3), dtype=np.uint8)


_CURSOR: VideoCursor | None = None  # this process's open video (prep works through one file at a time)


def decode_frames(path: Path, timestamps: np.ndarray, tolerance: float, size: int | None = None) -> np.ndarray:
    """Frames at the given times (seconds in the file) as (n, H, W, 3) uint8, resized to size x size if given.

    Raises SigmaError naming the file when the file is missing or corrupt, or when a requested time has no frame
    within `tolerance` (a truncated video, or timestamps that do not match the video).
    """
    global _CURSOR
    if _CURSOR is None or _CURSOR.path != path:
        if _CURSOR is not None:
            _CURSOR.close()
        _CURSOR = None
        _CURSOR = VideoCursor(path)
    try:
        return _CURSOR.frames_at(timestamps, tolerance, size)
    except SigmaError:
        _CURSOR.close()  # a failed file is reopened from scratch next time
        _CURSOR = None
        raise


def count_frames(path: Path) -> int:
    """Decode every frame once (the pure-decode baseline of benchmarks/prep.py)."""
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return sum(1 for _ in container.decode(stream))
