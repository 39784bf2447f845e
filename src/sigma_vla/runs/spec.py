"""A run's own policy.json and base/: what makes a run directory the deployable model (docs/architecture.md,
"Data flow"). policy.json holds everything inference needs besides the weights and names the base the run corrects:
RUN/base by relative path for an embedded base, a reference and fingerprint otherwise. Everything here is read as
untrusted (docs/reliability.md, "A run is read as untrusted"); runs from before policy.json are rebuilt from their
shards' meta.json.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from sigma_vla.data.shards import meta_dims, read_meta
from sigma_vla.errors import SigmaError
from sigma_vla.interop.fingerprint import fingerprint, model_dir
from sigma_vla.interop.lerobot import PREFIX as LEROBOT_PREFIX
from sigma_vla.interop.lerobot import check_fingerprint
from sigma_vla.layout import BASE_DIR, BASE_INFO, MODEL_DIR, POLICY_FILE, RUN_FILE
from sigma_vla.outdir import atomic_write, atomic_write_text, read_json

SPEC_FORMAT = "sigma-vla-policy/1"
MODEL_FILES = ("config.json", "model.safetensors")  # what fingerprint hashes and load_base_policy reads
LEROBOT_FORMAT = "lerobot"
REQUIRED = ("normalization", "cameras", "image_size", "fps", "state_dim", "action_dim", "horizon", "chunk")


def spec_from_meta(meta: dict[str, Any], text: dict[str, Any] | None = None) -> dict[str, Any]:
    """policy.json's fields from a shards directory's meta.json (the train split's statistics)."""
    if "normalization" not in meta:
        raise SigmaError("normalization statistics missing", file="meta.json", field="normalization")
    horizon, chunk = meta_dims(meta)
    return {"format": SPEC_FORMAT, "normalization": meta["normalization"],
            "cameras": list(meta.get("cameras") or []), "image_size": int(meta["params"]["image_size"]),
            "fps": float((meta.get("dataset") or {}).get("fps", 10.0)), "state_dim": int(meta["state_dim"]),
            "action_dim": int(meta["action_dim"]), "horizon": horizon, "chunk": chunk, "text": text or {},
            "base": None}


def write_policy_file(run: Path, spec: dict[str, Any]) -> Path:
    path = Path(run) / POLICY_FILE
    atomic_write_text(path, json.dumps(spec, indent=1) + "\n")
    return path


def base_record(run: Path, meta: dict[str, Any]) -> dict[str, Any] | None:
    """The base whose actions the shards hold (meta.json["base_actions"]), made portable: an embedded base directory
    is copied into RUN/base ({"path": "base", "fingerprint"}); anything else is kept as {"ref", "fingerprint"}.
    None when the shards record no base (base actions written from Python without a source)."""
    record = meta.get("base_actions") or {}
    source, recorded = record.get("base"), record.get("fingerprint")
    if not source:
        return None
    if str(source).startswith(LEROBOT_PREFIX):  # a LeRobot checkpoint: reloaded by its reference, never copied
        return {"ref": str(source), "fingerprint": recorded}
    kept = _model_dir(Path(run) / BASE_DIR)
    if kept is not None and recorded and fingerprint(kept) == recorded:  # a resumed run: already copied
        return {"path": BASE_DIR, "fingerprint": recorded, "source": str(source)}
    found = _model_dir(Path(source))
    if found is None:  # a LeRobot path or hub id, or an embedded base that is gone: keep the name
        return {"ref": str(source), "fingerprint": recorded}
    # The directory changed since `sigma base-actions`: copying it would serve another base than the one whose
    # actions this run learned residuals over.
    _check_unchanged(found, recorded, f"base {source}", "the shards' base actions were written by {want}; "
                     "rerun `sigma base-actions`", "meta.json", "base_actions.fingerprint")
    copy_base(found, Path(run) / BASE_DIR)
    return {"path": BASE_DIR, "fingerprint": recorded or fingerprint(found), "source": str(source)}


def _model_dir(path: Path) -> Path | None:
    """The embedded base's model directory at `path` (a `train-base` directory or its model/), else None."""
    d = model_dir(path)
    return d if all((d / name).is_file() for name in MODEL_FILES) else None


def copy_base(src: Path, dst: Path) -> None:
    """config.json + model.safetensors into dst, each atomically (a resumed run copies them again, unchanged)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        atomic_write(dst / name, lambda tmp, name=name: shutil.copyfile(src / name, tmp))


# ---- reading ----------------------------------------------------------------------------------------------------
def read_run_spec(directory: Path, info: dict[str, Any], info_file: Path) -> dict[str, Any]:
    """RUN/policy.json, or for a run written before it existed the same record rebuilt from the training shards'
    meta.json (with its base record); one line when neither is readable."""
    path = Path(directory) / POLICY_FILE
    if path.exists() or path.is_symlink():  # present but not a readable regular file: an error, not the fallback
        return _checked_spec(path)
    shards = info.get("shards")
    if not shards:
        raise SigmaError(f"no {POLICY_FILE} and no shards recorded", file=info_file, field="shards")
    try:
        meta = read_meta(shards)
    except SigmaError as err:
        raise SigmaError(f"no {POLICY_FILE} (a run from before portable runs) and its training shards are not "
                         f"readable ({err.one_line()}); restore them or retrain", file=path) from None
    spec = spec_from_meta(meta)
    record = meta.get("base_actions") or {}
    source = record.get("base")
    # the shards recorded which base wrote their actions: the older run's base is checked against it
    spec["base"] = {"ref": source, "fingerprint": record.get("fingerprint")} if source else None
    return spec


def _checked_spec(path: Path) -> dict[str, Any]:
    spec = read_json(path)
    if not isinstance(spec, dict) or spec.get("format") != SPEC_FORMAT:
        raise SigmaError(f"not a {SPEC_FORMAT} file", file=path, field="format")
    for key in REQUIRED:
        if key not in spec:
            raise SigmaError("missing", file=path, field=key)
    _check_types(spec, path)
    return spec


SPEC_LIMITS = {"image_size": 4096, "state_dim": 4096, "action_dim": 4096, "horizon": 4096, "chunk": 4096}


def _check_types(spec: dict[str, Any], path: Path) -> None:
    """policy.json is read as untrusted: every field a policy is built from has its type and a bound."""
    for key, limit in SPEC_LIMITS.items():
        value = spec[key]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
            raise SigmaError(f"must be an integer in [1, {limit}], got {value!r:.40}", file=path, field=key)
    if spec["chunk"] > spec["horizon"]:
        raise SigmaError(f"chunk {spec['chunk']} exceeds horizon {spec['horizon']}", file=path, field="chunk")
    cams = spec["cameras"]
    if not isinstance(cams, list) or len(cams) > 16 or not all(isinstance(c, str) and 0 < len(c) <= 200
                                                                for c in cams):
        raise SigmaError(f"must be a list of at most 16 camera names, got {cams!r:.40}", file=path, field="cameras")
    fps = spec["fps"]
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps <= 1000:
        raise SigmaError(f"must be a number in (0, 1000], got {fps!r:.40}", file=path, field="fps")
    if not isinstance(spec["normalization"], dict):
        raise SigmaError("must be an object", file=path, field="normalization")
    if spec.get("base") is not None and not isinstance(spec["base"], dict):
        raise SigmaError(f"must be an object or null, got {type(spec['base']).__name__}", file=path, field="base")


def resolve_base(directory: Path, spec: dict[str, Any]) -> Path | str | None:
    """The base a Sigma run names: RUN/base (checked by fingerprint), a recorded reference that is a local directory
    with the recorded fingerprint, or a `lerobot:` reference (its fingerprint checked when it is a local directory;
    interop/lerobot.py loads it). None when the run names no base."""
    record, path = spec.get("base"), Path(directory) / POLICY_FILE
    if not record:
        return None
    if not isinstance(record, dict):
        raise SigmaError(f"must be an object, got {type(record).__name__}", file=path, field="base")
    if not isinstance(record.get("fingerprint"), str) or not record["fingerprint"]:
        raise SigmaError("no fingerprint recorded, so the base cannot be checked; retrain the run", file=path,
                         field="base.fingerprint")
    ref = str(record.get("ref") or "")
    if not record.get("path") and not ref.startswith(LEROBOT_PREFIX) and path.exists():
        raise SigmaError(f"names a base outside the run ({ref!r:.60}); a run's embedded base lives in RUN/base "
                         "(retrain, or copy the base there and name it by base.path)", file=path, field="base.ref")
    if not record.get("path") and ref.startswith(LEROBOT_PREFIX):
        check_fingerprint(ref, record.get("fingerprint"), path, "base")
        return ref
    if record.get("path"):
        where, field = _inside(Path(directory), record["path"], path, "base.path"), "base.path"
    else:
        where, field = Path(str(record.get("ref"))), "base.ref"
    found = _model_dir(where)
    if found is None:
        raise SigmaError(f"base {where} is not a base-policy directory (config.json + model.safetensors)",
                         file=path, field=field)
    _check_unchanged(found, record.get("fingerprint"), f"base {where}", "the run was trained over {want}", path,
                     "base.fingerprint")
    return found


def _inside(directory: Path, relative: Any, file: Path, field: str) -> Path:
    """A path a run's file names must stay inside the run, symbolic links resolved (docs/reliability.md, "A run is
    read as untrusted"): a run never reads a directory the user did not name."""
    if not isinstance(relative, str) or Path(relative).is_absolute():
        raise SigmaError(f"must be a path relative to the run, got {relative!r}", file=file, field=field)
    where = directory / relative
    root = directory.resolve()
    if not where.resolve().is_relative_to(root):
        raise SigmaError(f"{relative!r} leads outside the run directory; refusing to read it", file=file, field=field)
    for d in (where, where / MODEL_DIR):
        if d.exists() and not d.resolve().is_relative_to(root):
            raise SigmaError(f"{relative!r} leads outside the run directory; refusing to read it", file=file,
                             field=field)
    return where


def _check_unchanged(directory: Path, want: str | None, name: str, recorded: str, file: Any, field: str) -> None:
    """One line when an embedded base's files no longer have the recorded fingerprint (nothing recorded: no check)."""
    have = fingerprint(directory) if want else None
    if want and have != want:
        raise SigmaError(f"{name} has fingerprint {have}, {recorded.format(want=want)}", file=file, field=field)


def check_shards_match(spec: dict[str, Any], meta: dict[str, Any], spec_file: Path) -> None:
    """New shards evaluated with a run must have the run's shapes; fields a shard format lacks are not compared
    (the paper's .pt shards carry no cameras list)."""
    params = meta.get("params") or {}
    theirs = {"state_dim": meta.get("state_dim"), "action_dim": meta.get("action_dim"),
              "cameras": meta.get("cameras"), "image_size": params.get("image_size"),
              "horizon": params.get("horizon"), "chunk": params.get("chunk")}
    for key, value in theirs.items():
        if value is not None and spec.get(key) is not None and value != spec[key]:
            raise SigmaError(f"the run has {key} {spec[key]!r}, the shards' meta.json {value!r}", file=spec_file,
                             field=key)


# ---- a fine-tuned LeRobot base ----------------------------------------------------------------------------------
def lerobot_model_record(source: str, source_fingerprint: str | None) -> dict[str, Any]:
    """policy.json's "model" of a fine-tuned LeRobot base: RUN/model by relative path (the run stays portable),
    its fingerprint once training completes (update_model_record), and the checkpoint it started from."""
    return {"format": LEROBOT_FORMAT, "path": "model", "fingerprint": None, "source": source,
            "source_fingerprint": source_fingerprint}


def update_model_record(run: Path) -> None:
    """Record RUN/model's fingerprint in RUN/policy.json (after the trainer wrote the final model)."""
    spec = _checked_spec(Path(run) / POLICY_FILE)
    record = spec.get("model") or {}
    spec["model"] = {**record, "fingerprint": fingerprint(Path(run) / record.get("path", "model"))}
    write_policy_file(run, spec)


# ---- a run or base directory ------------------------------------------------------------------------------------
def read_run_info(directory: Path) -> tuple[dict[str, Any], Path]:
    """(run.json, or base_info.json of a `train-base` directory, and that file): one line when neither is there."""
    directory = Path(directory)
    name = RUN_FILE if (directory / RUN_FILE).is_file() else BASE_INFO
    if not (directory / name).is_file():
        raise SigmaError(f"not a run or base directory ({RUN_FILE} missing, no {BASE_INFO})", file=directory)
    info = read_json(directory / name)
    if not isinstance(info, dict):
        raise SigmaError("not a JSON object", file=directory / name)
    return info, directory / name


def run_kind(directory: Path) -> str:
    """"sigma" for a Sigma run, "base" for a base directory or a fine-tuned-base run."""
    info, file = read_run_info(directory)
    return "sigma" if file.name == RUN_FILE and info.get("kind") == "sigma" else "base"


def read_sigma_run(directory: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(run.json, the run's policy spec) of a Sigma run; errors name the file and field."""
    run_file = Path(directory) / RUN_FILE
    if not run_file.exists():
        raise SigmaError(f"not a run directory ({RUN_FILE} missing)", file=run_file)
    info = read_json(run_file)
    if not isinstance(info, dict) or info.get("kind") != "sigma":
        got = info.get("kind") if isinstance(info, dict) else type(info).__name__
        raise SigmaError(f"expected a Sigma run, found kind {got!r}", file=run_file, field="kind")
    return info, read_run_spec(Path(directory), info, run_file)
