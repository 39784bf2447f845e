"""The one resolver: every command turns `--base DIR|lerobot:REF`, a Sigma run's base, and a base on its own (a
`train-base` directory or a `--finetune-base` run) into a loaded, checked BasePolicy here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sigma_vla.bases.lerobot import lerobot_base
from sigma_vla.bases.policy import BasePolicy, load_base_policy
from sigma_vla.errors import SigmaError
from sigma_vla.interop import lerobot as lerobot_refs
from sigma_vla.interop.fingerprint import fingerprint
from sigma_vla.layout import MODEL_DIR, POLICY_FILE, RUN_FILE
from sigma_vla.runs.spec import LEROBOT_FORMAT, read_run_spec, resolve_base


def load_base(reference: str | Path, spec: dict[str, Any], field: str = "--base",
              spec_file: Any = "meta.json") -> tuple[BasePolicy, str, str]:
    """(base, fingerprint, recorded source) for `--base`: a `lerobot:` reference read with the shards' spec, or an
    embedded base directory (`sigma train-base`)."""
    if lerobot_refs.is_lerobot_ref(str(reference)):
        source = lerobot_refs.canonical(str(reference), field)
        base = lerobot_base(source, spec, field, spec_file)
        return base, fingerprint(lerobot_refs.resolve(source, field)), source
    directory = Path(reference)
    return load_base_policy(directory), fingerprint(directory), str(directory.resolve())


def load_run_base(run: Path, spec: dict[str, Any]) -> BasePolicy:
    """The base a Sigma run corrects: RUN/base, or the reference its policy.json records, fingerprint checked."""
    where = resolve_base(Path(run), spec)
    if not where:
        raise SigmaError("no base policy recorded; retrain the run over a base", file=Path(run) / POLICY_FILE,
                         field="base")
    if lerobot_refs.is_lerobot_ref(where):
        return lerobot_base(str(where), spec, "base.ref", Path(run) / POLICY_FILE)
    return load_base_policy(where)


def load_base_run(directory: Path, spec: dict[str, Any], meta: dict[str, Any] | None = None) -> BasePolicy:
    """A base on its own: a fine-tuned LeRobot base (policy.json "model", its fingerprint checked) or an embedded
    base (`train-base` directory, or a `--finetune-base` run of one). meta: the shards it is evaluated on, whose
    normalisation and tasks a LeRobot base reads (the units the replayed windows are in)."""
    record = spec.get("model") or {}
    if record.get("format") != LEROBOT_FORMAT:
        return load_base_policy(directory)
    path, model_dir = Path(directory) / POLICY_FILE, Path(directory) / str(record.get("path") or MODEL_DIR)
    if not (model_dir / "config.json").is_file():
        raise SigmaError("no fine-tuned model (model/config.json); did `sigma train --finetune-base` finish?",
                         file=directory)
    ref = lerobot_refs.PREFIX + str(model_dir.resolve())
    lerobot_refs.check_fingerprint(ref, record.get("fingerprint"), path, "model")
    if meta is not None:
        spec = {**spec, "normalization": meta.get("normalization") or spec["normalization"],
                "tasks": meta.get("tasks")}
    return lerobot_base(ref, spec, "model.path", path)


def load_finetuned_base(run: Path | None, meta: dict[str, Any] | None = None) -> BasePolicy | None:
    """`sigma eval --finetuned-base RUN`: the control group's model, or None."""
    if run is None:
        return None
    run = Path(run)
    if not (run / POLICY_FILE).is_file():  # a run from before policy.json: always an embedded base
        return load_base_policy(run / MODEL_DIR)
    return load_base_run(run, read_run_spec(run, {}, run / RUN_FILE), meta)
