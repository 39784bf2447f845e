"""The schema of a LeRobot `meta/info.json` (v2.1 and v3.0), checked before anything reads it, and the typed
field readers the episode metadata goes through (docs/reliability.md, "Bad input").

Why a schema rather than checks where values are used: every field gets a type and a range once, so a value of
the wrong type (a string fps, a shape ["six"], a features entry that is a string, a path template that leaves the
dataset) stops with one line naming the file and the field instead of a traceback somewhere downstream.
"""

from __future__ import annotations

import math
from pathlib import Path, PurePosixPath, PureWindowsPath
from string import Formatter
from typing import Any

from sigma_vla.errors import SigmaError

SUPPORTED_VERSIONS = ("v2.1", "v3.0")
CAMERA_DTYPES = ("video", "image")
NUMERIC_DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                  "uint64", "bool")
# The placeholders each path template may use, per version (LeRobot's own templates use exactly these).
PLACEHOLDERS = {
    ("v3.0", "data_path"): ("chunk_index", "file_index"),
    ("v3.0", "video_path"): ("video_key", "chunk_index", "file_index"),
    ("v2.1", "data_path"): ("episode_chunk", "episode_index"),
    ("v2.1", "video_path"): ("episode_chunk", "video_key", "episode_index"),
}
DEFAULT_DATA_PATH = {"v3.0": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
                     "v2.1": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"}
COUNTS = ("total_episodes", "total_frames", "total_tasks", "total_videos", "total_chunks")
SIZES_MB = ("data_files_size_in_mb", "video_files_size_in_mb")


# ---- typed field readers (also used for the episodes' metadata) -----------------------------------------------
def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def as_int(value: Any, file: str | Path, field: str, minimum: int | None = 0) -> int:
    """An integer (a whole float such as 3.0 is not one; bool is not one either), >= minimum."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise SigmaError(f"must be an integer, got {_type_name(value)} {value!r:.40}", file=file, field=field)
    value = int(value)
    if minimum is not None and value < minimum:
        raise SigmaError(f"must be >= {minimum}, got {value}", file=file, field=field)
    return value


def as_number(value: Any, file: str | Path, field: str, minimum: float | None = None,
              positive: bool = False) -> float:
    """A finite real number (NaN and infinities are refused), > 0 when positive, >= minimum."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise SigmaError(f"must be a number, got {_type_name(value)} {value!r:.40}", file=file, field=field)
    number = float(value)
    if not math.isfinite(number):
        raise SigmaError(f"must be a finite number, got {number}", file=file, field=field)
    if positive and number <= 0:
        raise SigmaError(f"must be > 0, got {value}", file=file, field=field)
    if minimum is not None and number < minimum:
        raise SigmaError(f"must be >= {minimum}, got {value}", file=file, field=field)
    return number


def as_str(value: Any, file: str | Path, field: str) -> str:
    if not isinstance(value, str):
        raise SigmaError(f"must be a string, got {_type_name(value)}", file=file, field=field)
    return value


def as_dict(value: Any, file: str | Path, field: str | None) -> dict:
    if not isinstance(value, dict):
        raise SigmaError(f"must be a JSON object, got {_type_name(value)}", file=file, field=field)
    return value


# ---- path templates -----------------------------------------------------------------------------------------
def safe_relative(path: str, file: str | Path, field: str) -> str:
    """A path inside the dataset root: relative, no `..` component (a dataset never reads outside itself)."""
    if PurePosixPath(path).is_absolute() or PureWindowsPath(path).is_absolute() or PureWindowsPath(path).drive:
        raise SigmaError(f"must be relative to the dataset root, got the absolute path {path!r}", file=file,
                         field=field)
    if ".." in PurePosixPath(path.replace("\\", "/")).parts:
        raise SigmaError(f"leaves the dataset root ('..' in {path!r})", file=file, field=field)
    return path


def check_template(template: Any, version: str, field: str, file: str | Path) -> str:
    """A path template using only LeRobot's placeholders for this version, with valid format specs."""
    template = as_str(template, file, field)
    allowed = PLACEHOLDERS[(version, field)]
    try:
        names = {name for _, name, _, _ in Formatter().parse(template) if name is not None}
    except ValueError as err:
        raise SigmaError(f"malformed template {template!r}: {err}", file=file, field=field) from None
    unknown = sorted(n for n in names if n not in allowed)
    if unknown:
        raise SigmaError(f"unknown placeholder {{{unknown[0]}}} in {template!r} (allowed: "
                         f"{', '.join('{' + a + '}' for a in allowed)})", file=file, field=field)
    try:
        sample = template.format(**{n: ("cam" if n == "video_key" else 0) for n in allowed})
    except (ValueError, TypeError) as err:
        raise SigmaError(f"bad format in {template!r}: {err}", file=file, field=field) from None
    safe_relative(sample, file, field)
    return template


def format_path(root: Path, template: str, file: str | Path, field: str, **values: Any) -> Path:
    """root / template.format(values), refused when the result leaves the root (values come from metadata)."""
    return root / safe_relative(template.format(**values), file, field)


# ---- info.json -----------------------------------------------------------------------------------------------
def _check_feature(name: str, feature: Any, file: Path) -> None:
    field = f"features.{name}"
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise SigmaError("a feature name may not be empty or contain a path separator", file=file, field=field)
    feature = as_dict(feature, file, field)
    dtype = as_str(feature.get("dtype"), file, f"{field}.dtype")
    shape = feature.get("shape")
    if not isinstance(shape, list) or not shape:
        raise SigmaError(f"must be a non-empty list of positive integers, got {shape!r:.40}", file=file,
                         field=f"{field}.shape")
    for dim in shape:
        as_int(dim, file, f"{field}.shape", minimum=1)
    if dtype in CAMERA_DTYPES and len(shape) != 3:
        raise SigmaError(f"a camera's shape is (height, width, channels), got {shape}", file=file,
                         field=f"{field}.shape")
    if feature.get("names") is not None and not isinstance(feature["names"], (list, dict)):
        raise SigmaError(f"must be null, a list or an object, got {_type_name(feature['names'])}", file=file,
                         field=f"{field}.names")
    if feature.get("info") is not None:
        as_dict(feature["info"], file, f"{field}.info")


def _check_vector(features: dict, key: str, file: Path) -> None:
    """State and action: declared, numeric, one axis (the reader turns them into (N, D) arrays)."""
    if key not in features:
        raise SigmaError("required feature not declared", file=file, field=f"features.{key}")
    dtype, shape = features[key]["dtype"], features[key]["shape"]
    if dtype not in NUMERIC_DTYPES or len(shape) != 1:
        raise SigmaError(f"must be a numeric vector (dtype one of float32, float64, ...; shape [D]), got dtype "
                         f"{dtype!r} shape {shape}", file=file, field=f"features.{key}")


def validate_info(info: Any, file: Path, state_key: str, action_key: str) -> dict:
    """Every field of info.json with its type and range; returns it with the path templates filled in."""
    info = as_dict(info, file, None)
    version = info.get("codebase_version")
    if version not in SUPPORTED_VERSIONS:
        raise SigmaError(f"unsupported codebase_version {version!r:.40} (supported: {', '.join(SUPPORTED_VERSIONS)})",
                         file=file, field="codebase_version")
    for key in ("fps", "features"):
        if key not in info:
            raise SigmaError("required field missing", file=file, field=key)
    as_number(info["fps"], file, "fps", positive=True)
    if info.get("robot_type") is not None:
        as_str(info["robot_type"], file, "robot_type")
    for key in COUNTS:
        if key in info:
            as_int(info[key], file, key)
    if "chunks_size" in info:
        as_int(info["chunks_size"], file, "chunks_size", minimum=1)
    for key in SIZES_MB:
        if key in info:
            as_number(info[key], file, key, positive=True)
    for name, value in as_dict(info.get("splits", {}), file, "splits").items():
        as_str(value, file, f"splits.{name}")
    features = as_dict(info["features"], file, "features")
    for name, feature in features.items():
        _check_feature(name, feature, file)
    for key in (state_key, action_key):
        _check_vector(features, key, file)
    data_path = check_template(info.get("data_path", DEFAULT_DATA_PATH[version]), version, "data_path", file)
    video_path = info.get("video_path")
    if video_path is not None:
        video_path = check_template(video_path, version, "video_path", file)
    elif any(f["dtype"] == "video" for f in features.values()):
        raise SigmaError("video features are declared but video_path is missing", file=file, field="video_path")
    return {**info, "data_path": data_path, "video_path": video_path}
