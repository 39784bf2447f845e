"""One rule for every command that writes a directory, and atomic writes that never take a user's file name
(docs/reliability.md, "Output directories"); also the names of a run's CSV logs, which training writes and
evaluation reads.

A directory is ours when it carries our marker file `.sigma-vla.json` ({"format": "sigma-vla-output/1",
"kind": ...}), which a command writes before anything else. A command writes only into
- a path that does not exist yet (it is created and marked),
- an empty directory (it is marked),
- a directory carrying our marker of the same kind, whose every entry has a name that kind writes (its own earlier
  output, to resume or to finish).
Anything else is refused with one line naming the first file that is not ours, and nothing in it is touched. A
directory written before the marker existed is adopted when its entries all have our names and its manifest
(`meta.json`, `run.json`, ...) carries our tag.

Temporary files are `.NAME.RANDOM.sigma-tmp` siblings renamed into place: never `NAME.tmp`, a name a user may own.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import secrets
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Callable

from sigma_vla.errors import SigmaError
from sigma_vla.layout import BASE_INFO, RUN_ENTRIES, RUN_FILE

MARKER = ".sigma-vla.json"
LOCK = ".sigma-vla.lock"  # writer_lock: the PID of the process writing the directory
FORMAT = "sigma-vla-output/1"
TMP_SUFFIX = ".sigma-tmp"
TMP_GLOB = f".*{TMP_SUFFIX}"
@dataclass(frozen=True)
class Kind:
    """What one kind of output directory holds: its entries' name patterns, and the manifest (file, key, values)
    that proves a directory written before the marker existed is ours (values None: the key's presence)."""

    names: tuple[str, ...]
    manifest: tuple[str, str, tuple[str, ...] | None]


KINDS: dict[str, Kind] = {
    "shards": Kind(("meta.json", "shard_*.safetensors"), ("meta.json", "format", ("sigma-vla-shards/1",))),
    "run": Kind(RUN_ENTRIES, (RUN_FILE, "kind", ("sigma", "base"))),
    "base": Kind((*RUN_ENTRIES, "config.json", "model.safetensors", BASE_INFO), (BASE_INFO, "split", None)),
    "eval": Kind(("sigma_eval_report.json",), ("sigma_eval_report.json", "groups", None)),
    "rollout": Kind(("rollouts.json", "episode_*.gif"), ("rollouts.json", "episodes_detail", None)),
    "experiment": Kind(("experiment_config.json", "experiment.json", "experiment.png", "sigma_seed*", "control_seed*",
                        "rollout_*"), ("experiment_config.json", "format", ("sigma-vla-experiment/1",))),
}


# ---- atomic writes --------------------------------------------------------------------------------------------
def temp_path(path: Path) -> Path:
    """A fresh, reserved temp sibling of `path` (created empty with O_EXCL: no other writer can hold the name)."""
    path = Path(path)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TMP_SUFFIX}")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """write(tmp) then rename tmp -> path: `path` is always either the old or the complete new file."""
    tmp = temp_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_dir(path: Path, write: Callable[[Path], Any]) -> None:
    """write(tmp_dir) then rename it to `path`: a reader sees the old or the complete new directory (a model of
    several files, such as a LeRobot checkpoint). A directory cannot replace another in one rename, so an old one
    is renamed aside first and deleted after; a kill in between leaves it as a temp directory beside `path`."""
    import shutil

    path, tmp = Path(path), temp_path(path)
    os.unlink(tmp)
    tmp.mkdir()
    try:
        write(tmp)
        old = None
        if path.exists():
            old = temp_path(path)
            os.unlink(old)
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


JSON_CAP = 4 * 2**20  # bytes: a run's JSON files are a few KB; anything this large is not ours


def read_capped(path: str | Path, cap: int = JSON_CAP) -> str:
    """A small text file read as untrusted: a regular file (not a FIFO, device or directory, which would block or
    never end), at most `cap` bytes, UTF-8. Errors are one line naming the file (docs/reliability.md, "A run is read
    as untrusted")."""
    import stat

    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as err:
        raise SigmaError(f"cannot read: {err.strerror or err}", file=path) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SigmaError("not a regular file (a FIFO, device or directory); refusing to read it", file=path)
        if info.st_size > cap:
            raise SigmaError(f"is {info.st_size} bytes, more than the {cap} this file can be", file=path)
        data = os.read(fd, cap + 1)
    finally:
        os.close(fd)
    if len(data) > cap:
        raise SigmaError(f"is more than the {cap} bytes this file can be", file=path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SigmaError(f"not UTF-8 text (byte {err.start})", file=path) from None


def read_json(path: str | Path, cap: int = JSON_CAP) -> Any:
    """read_capped, then JSON; a syntax error or absurd nesting is one line naming the file."""
    text = read_capped(path, cap)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as err:
        raise SigmaError(f"not valid JSON: {str(err).splitlines()[0] if str(err) else type(err).__name__}",
                         file=path) from None


def read_csv(path: Path) -> list[dict[str, str]]:
    """A CSV log (TRAIN_LOG, VAL_LOG) as one dict per row."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# ---- the rule -------------------------------------------------------------------------------------------------
def _first_file(entry: Path) -> Path:
    """The entry itself, or for a directory the first file inside it (the error names a file, not a folder)."""
    if entry.is_dir() and not entry.is_symlink():
        for path in sorted(entry.rglob("*")):
            if not path.is_dir():
                return path
    return entry


def _read_marker(out: Path) -> dict[str, Any] | None:
    path = out / MARKER
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise SigmaError("not a sigma-vla marker (unreadable or foreign); refusing to touch this directory",
                         file=path)
    return data


def _ours_by_name(entry: Path, kind: Kind) -> bool:
    return any(fnmatchcase(entry.name, p) for p in (*kind.names, MARKER, LOCK, TMP_GLOB))


def _legacy_manifest_ok(out: Path, kind: Kind) -> bool:
    """A directory from before the marker: its manifest carries our tag (our names alone prove nothing)."""
    name, key, values = kind.manifest
    try:
        data = json.loads((out / name).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and key in data and (values is None or data[key] in values)


def _check_writable(out: Path) -> None:
    """Before any slow work: the directory, or the nearest existing ancestor that would hold it, can be written."""
    probe = out
    while not probe.exists() and not probe.is_symlink() and probe != probe.parent:
        probe = probe.parent
    if probe.is_symlink() and not probe.exists():
        raise SigmaError("is a dangling symbolic link; choose another --out", file=probe)
    if not probe.is_dir():
        what = "exists and is not a directory" if probe == out else "is a file: no directory can be made under it"
        raise SigmaError(f"{what}; choose another --out", file=probe)
    if not os.access(probe, os.W_OK | os.X_OK):
        raise SigmaError("cannot write here (permission denied or read-only)", file=probe)


def check_dir(out: str | Path, kind: str) -> str:
    """'new' (does not exist), 'empty', or 'ours' (our marker of this kind; every entry has our names).
    Read-only: raises SigmaError naming the first file that is not ours (or the path that cannot be written),
    and touches nothing."""
    out, spec = Path(out), KINDS[kind]
    _check_writable(out)
    if not out.exists():
        return "new"
    entries = sorted(out.iterdir())
    if not entries:
        return "empty"
    marker = _read_marker(out)
    if marker is not None and marker.get("kind") != kind:
        raise SigmaError(f"holds a sigma-vla {marker.get('kind')!r} directory, not a {kind!r} one; choose another "
                         "--out", file=out)
    foreign = [e for e in entries if not _ours_by_name(e, spec)]
    if marker is None and not foreign and not _legacy_manifest_ok(out, spec):
        foreign = [e for e in entries if not fnmatchcase(e.name, TMP_GLOB)] or entries
    if foreign:
        why = (f"a sigma-vla {kind} directory writes no such file" if marker is not None
               else f"its directory carries no {MARKER} marker")
        raise SigmaError(f"not ours ({why}); refusing to overwrite or delete it: choose a new or empty --out",
                         file=_first_file(foreign[0]))
    return "ours"


def claim_dir(out: str | Path, kind: str) -> bool:
    """check_dir, then create and mark the directory; returns whether it was created here. A path that cannot be
    written (read-only, under a file) is a one-line SigmaError naming it."""
    out = Path(out)
    state = check_dir(out, kind)
    try:
        if state == "new":
            out.mkdir(parents=True)
        if state != "ours" or _read_marker(out) is None:  # adopt a pre-marker directory of ours too
            atomic_write_text(out / MARKER, json.dumps({"format": FORMAT, "kind": kind}) + "\n")
    except OSError as err:
        raise SigmaError(f"cannot write the output directory: {err.strerror or err}", file=err.filename or out) \
            from None
    remove_temp_files(out)
    return state == "new"


def release_dir(out: str | Path, created: bool) -> None:
    """Undo claim_dir after a failed fresh start: the marker goes, and the directory too if we created it and it
    is empty again (anything else in it stays)."""
    out = Path(out)
    with contextlib.suppress(OSError):
        (out / MARKER).unlink()
        if created and not any(out.iterdir()):
            out.rmdir()


def remove_temp_files(out: Path) -> list[Path]:
    """Our leftover temp files and directories (atomic_dir) in a directory we own (a kill between write and
    rename leaves one)."""
    import shutil

    removed = []
    for path in Path(out).glob(TMP_GLOB):
        with contextlib.suppress(OSError):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
    return removed


@contextlib.contextmanager
def writer_lock(out: str | Path):
    """One writer per directory: an advisory lock (flock) on OUT/.sigma-vla.lock while a command writes OUT. A
    second writer gets a one-line error naming the holder's PID. The kernel drops the lock with its process, so a
    killed writer never leaves a stale lock (docs/reliability.md, "One writer per run")."""
    import fcntl

    path = Path(out) / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise SigmaError(f"another sigma process (PID {holder}) is writing here; wait for it to finish or choose "
                         "another --out", file=out) from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
