"""The one fingerprint of "which model": what shards and runs record so a base or backbone is never swapped
silently (docs/reliability.md, "No silent mix-ups")."""

from __future__ import annotations

import hashlib
from pathlib import Path

from sigma_vla.errors import SigmaError
from sigma_vla.outdir import read_json

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
OUR_KIND_PREFIX = "sigma-vla/"


def model_dir(path: str | Path) -> Path:
    """A model directory, or a training directory whose final model is in model/: the one place that says so."""
    path = Path(path)
    if not (path / CONFIG_FILE).is_file() and (path / "model" / CONFIG_FILE).is_file():
        return path / "model"
    return path


def fingerprint(directory: str | Path) -> str:
    """16 hex digits of sha256 over a model directory. One of ours (config.json of a sigma-vla kind) hashes its
    config and weights; any other checkpoint (LeRobot's) every JSON and safetensors file with its name, read in
    blocks (a pi0.5 is several GB). The two ways are what earlier versions recorded, so their runs still match."""
    directory = model_dir(directory)
    digest = hashlib.sha256()
    if _is_ours(directory):
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            _update(digest, directory / name)
        return digest.hexdigest()[:16]
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.suffix in (".json", ".safetensors"):
            digest.update(path.name.encode())
            _update(digest, path)
    return digest.hexdigest()[:16]


def _is_ours(directory: Path) -> bool:
    if not (directory / CONFIG_FILE).is_file() or not (directory / WEIGHTS_FILE).is_file():
        return False
    try:
        config = read_json(directory / CONFIG_FILE)
    except SigmaError:  # damaged: hashed as ours, so the recorded fingerprint no longer matches and says so
        return True
    return isinstance(config, dict) and str(config.get("kind", "")).startswith(OUR_KIND_PREFIX)


def _update(digest, path: Path) -> None:
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
