"""Checkpoint directories: RUN/checkpoints/step_XXXXXX/, written atomically, verified before they are trusted, the
last K kept (paper 4.2 training; docs/reliability.md, "Checkpoints").

A checkpoint is built in a temporary sibling directory and renamed into place only once every file is written,
so a directory named `step_XXXXXX` is complete when written; a crash leaves at most a `.tmp-` directory, which the
next save removes. Every directory we write carries `checkpoint.json` with our format tag, and pruning and temp
cleanup only ever touch directories that carry it (never anything we did not write).

Why verify as well: a file can be damaged after it was written (a full disk, a copy cut short, a flipped bit).
The manifest records each file's size and sha256; --resume trusts the newest checkpoint that still matches them,
sets the damaged newer ones aside as `step_XXXXXX.damaged` (renamed, never deleted: the next save of that step
must not collide with them) and says so. Pruning first renames a checkpoint to `.deleting-step_XXXXXX`, then
deletes its files with the manifest last, so a kill mid-way leaves a directory the next prune recognises and
finishes, never a half-deleted `step_` directory.

Layout of one checkpoint:
    model.safetensors + config.json      the model (its own save_pretrained)
    optimizer.safetensors + .json        optimizer state, tensors flattened (flatten_state), the rest in JSON
    scheduler.json                       LR scheduler state
    rng_rank{r}.safetensors + .json      each process's RNG streams (torch as uint8 tensor; python, numpy as JSON)
    task_rank{r}.safetensors + .json     each process's task state, if it has any (Sigma's episode memory)
    trainer_state.json                   step, data position, counters
    checkpoint.json                      format tag, step, {file: {size, sha256}} (written last)

Nested state (optimizer, scheduler, RNG, task) goes to safetensors + JSON without pickle (docs/architecture.md,
"No pickle"): `flatten_state` walks dicts, lists and tuples; every torch tensor goes to a flat {key: tensor} map
for safetensors and leaves a {"__tensor__": key} marker in a JSON skeleton; numpy arrays become JSON lists with
their dtype; dict keys keep their type (optimizer state is keyed by int). `unflatten_state` is the exact inverse.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from sigma_vla.errors import SigmaError
from sigma_vla.outdir import atomic_write_text

FORMAT = "sigma-vla-checkpoint"
MANIFEST = "checkpoint.json"
STEP_DIR = "step_{:06d}"
STEP_RE = re.compile(r"^step_(\d{6,})$")
TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".deleting-"


def checkpoints_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def temp_dir(run_dir: Path, step: int) -> Path:
    return checkpoints_dir(run_dir) / f"{TMP_PREFIX}{STEP_DIR.format(step)}"


def begin(run_dir: Path, step: int) -> Path:
    """Create the (empty) temporary directory for `step`, tagged as ours, removing a stale one of ours first."""
    tmp = temp_dir(run_dir, step)
    if tmp.exists() and _is_ours(tmp):
        _discard(tmp)
    tmp.mkdir(parents=True, exist_ok=False)
    (tmp / MANIFEST).write_text(json.dumps({"format": FORMAT, "step": step, "complete": False}))
    return tmp


def _file_record(path: Path) -> dict[str, Any]:
    """Size and sha256 of one file, read once; fsync'd on the way (the rename that follows must not outrun it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
        os.fsync(fh.fileno())
    return {"size": path.stat().st_size, "sha256": digest.hexdigest()}


def commit(run_dir: Path, step: int, keep_last: int) -> Path:
    """Write the manifest (sizes and checksums), rename the temp directory to `step_XXXXXX`; then prune to the last
    `keep_last`."""
    tmp = temp_dir(run_dir, step)
    files = {p.name: _file_record(p) for p in sorted(tmp.iterdir()) if p.name != MANIFEST}
    manifest = tmp / MANIFEST
    manifest.write_text(json.dumps({"format": FORMAT, "step": step, "complete": True, "files": files}))
    _file_record(manifest)  # fsync
    final = checkpoints_dir(run_dir) / STEP_DIR.format(step)
    if final.exists():  # re-saving the same step (e.g. the final save after a periodic one)
        if not _is_ours(final):
            raise SigmaError("exists and is not a sigma-vla checkpoint; not replacing it (move it away to continue)",
                             file=final)
        _discard(final)
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
    """Complete checkpoints of ours by their manifests (cheap: no checksums), oldest first."""
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


def step_dirs(run_dir: Path) -> list[Path]:
    """Every `step_XXXXXX` directory, complete or not (a fresh run must not write among them)."""
    root = checkpoints_dir(run_dir)
    return sorted(p for p in root.iterdir() if STEP_RE.match(p.name)) if root.is_dir() else []


def checkpoint_step(path: Path) -> int:
    """The step a `step_XXXXXX` directory holds."""
    match = STEP_RE.match(Path(path).name)
    if match is None:
        raise ValueError(f"not a checkpoint directory name: {path}")
    return int(match.group(1))


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = complete_checkpoints(run_dir)
    return found[-1] if found else None


def verify(path: Path) -> str | None:
    """None when the checkpoint matches its manifest (every file's size and sha256), else what is wrong. A manifest
    from before checksums (a list of names) is checked for presence only."""
    manifest = _manifest(path) if path.is_dir() else None
    if manifest is None:
        return f"{MANIFEST} missing or unreadable"
    if not manifest.get("complete") or manifest.get("step") != checkpoint_step(path):
        return f"{MANIFEST} does not describe a complete checkpoint of this step"
    files = manifest.get("files")
    if isinstance(files, list):
        missing = [f for f in files if not (path / f).is_file()]
        return f"{missing[0]} missing" if missing else None
    if not isinstance(files, dict) or not files:
        return f"{MANIFEST} lists no files"
    for name, want in sorted(files.items()):
        file = path / name
        if not file.is_file():
            return f"{name} missing"
        if file.stat().st_size != want.get("size"):
            return f"{name} has {file.stat().st_size} bytes, its manifest says {want.get('size')}"
        if _file_record(file)["sha256"] != want.get("sha256"):
            return f"{name} does not match its sha256 in the manifest"
    return None


def resume_point(run_dir: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """(the newest checkpoint that verifies, [(newer step directory, what is wrong with it)]). Read-only."""
    root = checkpoints_dir(run_dir)
    steps = sorted(((int(m.group(1)), p) for p in (root.iterdir() if root.is_dir() else [])
                    if (m := STEP_RE.match(p.name)) and p.is_dir()), reverse=True)
    rejected = []
    for _, path in steps:
        problem = verify(path)
        if problem is None:
            return path, rejected
        rejected.append((path, problem))
    return None, rejected


def set_aside(path: Path) -> Path:
    """Rename a damaged checkpoint out of the way (`step_XXXXXX.damaged`, `.damaged-2`, ...); nothing is deleted."""
    for n in range(1, 1000):
        target = path.with_name(f"{path.name}.damaged" + (f"-{n}" if n > 1 else ""))
        if not target.exists():
            os.replace(path, target)
            return target
    raise SigmaError("too many damaged copies of this checkpoint set aside; remove some", file=path)


def _discard(path: Path) -> None:
    """Delete a directory of ours so that a kill at any moment leaves something the next prune finishes: rename it
    to `.deleting-NAME` first, then delete its files with the manifest last, then the directory."""
    trash = path if path.name.startswith(TRASH_PREFIX) else path.with_name(f"{TRASH_PREFIX}{path.name}")
    if trash != path:
        if trash.exists():
            _discard(trash)  # an earlier kill left it: finish that first
        os.replace(path, trash)
    for file in sorted(trash.iterdir(), key=lambda p: p.name == MANIFEST):
        file.unlink()
    trash.rmdir()


def _finish_discards(root: Path) -> list[Path]:
    """Directories a kill left mid-deletion: finished when they still carry our manifest or are empty; anything
    else in such a directory was not written by us, and it stays."""
    done = []
    for path in root.glob(f"{TRASH_PREFIX}*") if root.is_dir() else []:
        if path.is_dir() and (_is_ours(path) or not any(path.iterdir())):
            _discard(path)
            done.append(path)
    return done


def prune(run_dir: Path, keep_last: int) -> list[Path]:
    """Delete our complete checkpoints beyond the newest `keep_last` (0 keeps all), our stale temp dirs, and what
    a kill left mid-deletion."""
    root = checkpoints_dir(run_dir)
    removed = _finish_discards(root)
    done = complete_checkpoints(run_dir)
    if keep_last > 0:
        for path in done[:-keep_last]:
            _discard(path)
            removed.append(path)
    newest = checkpoint_step(done[-1]) if done else -1
    for path in root.glob(f"{TMP_PREFIX}step_*") if root.is_dir() else []:
        step = _manifest(path).get("step", -1) if _is_ours(path) else None
        if step is not None and step <= newest:  # a crashed or superseded save of ours
            _discard(path)
            removed.append(path)
    return removed


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(Path(path), json.dumps(data, indent=2))


# ---- nested state <-> safetensors + JSON ---------------------------------------------------------------------
def flatten_state(obj: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], Any]:
    """(tensors for safetensors, JSON-able skeleton) of a nested state."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(x: Any, key: str) -> Any:
        if isinstance(x, torch.Tensor):
            tensors[key] = x.detach().cpu().contiguous().clone()
            return {"__tensor__": key}
        if isinstance(x, np.ndarray):
            return {"__ndarray__": x.tolist(), "dtype": str(x.dtype)}
        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, dict):
            return {"__dict__": [[k, walk(v, f"{key}/{k}")] for k, v in x.items()]}
        if isinstance(x, tuple):
            return {"__tuple__": [walk(v, f"{key}/{i}") for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [walk(v, f"{key}/{i}") for i, v in enumerate(x)]
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        raise TypeError(f"cannot store {type(x).__name__} at {key!r} without pickle")

    return tensors, walk(obj, prefix or "state")


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of flatten_state."""
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    if not isinstance(skeleton, dict):
        return skeleton
    if "__tensor__" in skeleton:
        return tensors[skeleton["__tensor__"]]
    if "__ndarray__" in skeleton:
        return np.asarray(skeleton["__ndarray__"], dtype=skeleton["dtype"])
    if "__tuple__" in skeleton:
        return tuple(unflatten_state(v, tensors) for v in skeleton["__tuple__"])
    if "__dict__" in skeleton:
        return {k: unflatten_state(v, tensors) for k, v in skeleton["__dict__"]}
    raise ValueError(f"unknown state skeleton node {sorted(skeleton)}")


def save_state(state: Any, directory: Path, name: str) -> None:
    """`name.safetensors` (only if there are tensors) + `name.json`."""
    tensors, skeleton = flatten_state(state, name)
    if tensors:
        save_file(tensors, str(directory / f"{name}.safetensors"))
    (directory / f"{name}.json").write_text(json.dumps(skeleton))


def load_state(directory: Path, name: str) -> Any:
    skeleton = json.loads((directory / f"{name}.json").read_text())
    path = directory / f"{name}.safetensors"
    tensors = load_file(str(path)) if path.exists() else {}
    return unflatten_state(skeleton, tensors)


def rng_state() -> dict[str, Any]:
    """This process's RNG streams: torch CPU (a uint8 tensor), CUDA if present, python and numpy."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate(),
                             "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
