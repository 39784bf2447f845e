"""Checkpoint directories: RUN/checkpoints/step_XXXXXX/, written atomically, the last K kept (paper 4.2 training).

A checkpoint is built in a temporary sibling directory and renamed into place only once every file is written,
so a directory named `step_XXXXXX` is always complete; a crash leaves at most a `.tmp-` directory, which the next
save removes. Every directory we write carries `checkpoint.json` with our format tag, and pruning and temp cleanup
only ever touch directories that carry it (never anything we did not write).

Layout of one checkpoint:
    model.safetensors + config.json      the model (its own save_pretrained)
    optimizer.safetensors + .json        optimizer state, tensors flattened (state_io), the rest in JSON
    scheduler.json                       LR scheduler state
    rng_rank{r}.safetensors + .json      each process's RNG streams (torch as uint8 tensor; python, numpy as JSON)
    trainer_state.json                   step, data position, counters
    checkpoint.json                      format tag, step, file list (written last)
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

FORMAT = "sigma-vla-checkpoint"
MANIFEST = "checkpoint.json"
STEP_DIR = "step_{:06d}"
STEP_RE = re.compile(r"^step_(\d{6,})$")
TMP_PREFIX = ".tmp-"


def checkpoints_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def temp_dir(run_dir: Path, step: int) -> Path:
    return checkpoints_dir(run_dir) / f"{TMP_PREFIX}{STEP_DIR.format(step)}"


def begin(run_dir: Path, step: int) -> Path:
    """Create the (empty) temporary directory for `step`, tagged as ours, removing a stale one of ours first."""
    tmp = temp_dir(run_dir, step)
    if tmp.exists() and _is_ours(tmp):
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True, exist_ok=False)
    (tmp / MANIFEST).write_text(json.dumps({"format": FORMAT, "step": step, "complete": False}))
    return tmp


def commit(run_dir: Path, step: int, keep_last: int) -> Path:
    """Write the manifest, fsync, rename the temp directory to `step_XXXXXX`; then prune to the last `keep_last`."""
    tmp = temp_dir(run_dir, step)
    files = sorted(p.name for p in tmp.iterdir() if p.name != MANIFEST)
    manifest = tmp / MANIFEST
    manifest.write_text(json.dumps({"format": FORMAT, "step": step, "complete": True, "files": files}))
    for name in files + [MANIFEST]:
        with open(tmp / name, "rb") as fh:
            os.fsync(fh.fileno())
    final = checkpoints_dir(run_dir) / STEP_DIR.format(step)
    if final.exists():  # re-saving the same step (e.g. the final save after a periodic one)
        if not _is_ours(final):
            raise FileExistsError(f"{final} exists and is not a sigma-vla checkpoint; not replacing it")
        shutil.rmtree(final)
    os.replace(tmp, final)
    prune(run_dir, keep_last)
    return final


def _manifest(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == FORMAT else None


def _is_ours(path: Path) -> bool:
    return path.is_dir() and _manifest(path) is not None


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of ours, oldest first."""
    root = checkpoints_dir(run_dir)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = STEP_RE.match(path.name)
        manifest = _manifest(path) if match and path.is_dir() else None
        if manifest and manifest.get("complete") and all((path / f).exists() for f in manifest.get("files", [])):
            found.append((int(match.group(1)), path))
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = complete_checkpoints(run_dir)
    return found[-1] if found else None


def prune(run_dir: Path, keep_last: int) -> list[Path]:
    """Delete our complete checkpoints beyond the newest `keep_last` (0 keeps all) and our stale temp dirs."""
    removed = []
    done = complete_checkpoints(run_dir)
    if keep_last > 0:
        for path in done[:-keep_last]:
            shutil.rmtree(path)
            removed.append(path)
    root = checkpoints_dir(run_dir)
    newest = int(STEP_RE.match(done[-1].name).group(1)) if done else -1
    for path in root.glob(f"{TMP_PREFIX}step_*") if root.is_dir() else []:
        step = _manifest(path).get("step", -1) if _is_ours(path) else None
        if step is not None and step <= newest:  # a crashed or superseded save of ours
            shutil.rmtree(path)
            removed.append(path)
    return removed


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def write_json(path: Path, data: Any) -> None:
    Path(path).write_text(json.dumps(data, indent=2))
