"""Offline evaluation (paper 5-6) as plain functions: load a split's windows (our shards or the paper's .pt shards),
replay them through the five groups (replay.py), and write sigma_eval_report.json. `sigma eval` and `sigma demo`
call these; so can a user, without the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from sigma_vla.bases.resolve import load_finetuned_base
from sigma_vla.data.schema import SPLIT_CODES
from sigma_vla.data.shards import load_shards, read_meta
from sigma_vla.errors import SigmaError
from sigma_vla.evaluation.metrics import HardThresholds, build_report, check_a
from sigma_vla.evaluation.pt_shards import load_pt_shards
from sigma_vla.evaluation.replay import replay
from sigma_vla.inference.adapter import AdapterConfig
from sigma_vla.inference.policy import calibrate_adapter, load_adapter_config, load_run_model
from sigma_vla.layout import POLICY_FILE, RUN_FILE
from sigma_vla.outdir import atomic_write_text, check_dir, claim_dir, release_dir
from sigma_vla.processing.action_triple import BASE_ACTION, has_actions
from sigma_vla.processing.recipe import shard_transform, sigma_text
from sigma_vla.processing.transforms import Normalizer
from sigma_vla.runs.spec import check_shards_match, read_run_spec


def load_eval_data(shards: Path, split: str):
    """Stacked windows of one split plus meta: our safetensors shards, or the paper's .pt shards."""
    shards = Path(shards)
    if any(shards.glob("shard_*.pt")) and not any(shards.glob("shard_*.safetensors")):
        data, meta = load_pt_shards(shards)
        if not has_actions(data, BASE_ACTION):
            raise SigmaError("these .pt shards carry no base_action_* (the untuned base's offline actions); add "
                             "them to the samples or prep the source dataset with `sigma prep`", file=shards,
                             field="base_action_vector")
        return data, meta
    meta = read_meta(shards)
    data = load_shards(shards)
    keep = data["split"] == SPLIT_CODES[split]
    if "pad_steps" in data:  # the paper's protocol replays full windows only (data/windows.py)
        keep &= data["pad_steps"] == 0
    idx = torch.nonzero(keep).squeeze(1)
    if not len(idx):
        raise SigmaError(f"split {split!r} has no windows", file=shards / "meta.json", field="split")
    if not has_actions(data, BASE_ACTION):
        raise SigmaError("no base actions in the shards; run `sigma base-actions` first", file=shards,
                         field="base_action_vector")
    return {k: v[idx] for k, v in data.items()}, meta


def run_eval(run: Path, shards: Path, out: Path, split: str = "test", batch_size: int = 32,
             finetuned_base: Path | None = None, n_boot: int = 1000, progress: bool = True) -> dict:
    """`sigma eval`: replay one split of SHARDS through the five groups and write OUT/sigma_eval_report.json."""
    run, shards, out = Path(run), Path(shards), Path(out)
    check_dir(out, "eval")  # the one output rule (sigma_vla.outdir): refused before the slow part
    model = load_run_model(run)
    data, meta = load_eval_data(shards, split)
    _check_run_matches(run, meta)
    transform = shard_transform(meta, sigma_text(model.config))
    norm = Normalizer.from_meta(meta)
    res = replay(model, data, transform, norm.unaction, batch_size, load_finetuned_base(finetuned_base, meta),
                 load_adapter_config(run), progress=progress)
    heads = check_a(dict(model.head_named_parameters()))
    report = build_report(res, meta, heads, HardThresholds(), n_boot)
    report.update(run=str(run), shards=str(shards), split=split, batch_size=batch_size,
                  finetuned_base=str(finetuned_base) if finetuned_base else None)
    created = claim_dir(out, "eval")
    try:
        atomic_write_text(out / "sigma_eval_report.json", json.dumps(report, indent=1))
    except OSError:  # a full disk: leave no empty report directory behind
        release_dir(out, created)
        raise
    return report


def calibrate_run(run: Path, shards: Path) -> AdapterConfig:
    """`sigma calibrate`: fit the adapter's ranges (paper 4.3) to the run on SHARDS' train windows and write
    RUN/adapter.json; evaluation, rollouts and the server then gate alike."""
    model = load_run_model(run)
    data, meta = load_eval_data(shards, "train")
    _check_run_matches(Path(run), meta)
    return calibrate_adapter(run, model, data, shard_transform(meta, sigma_text(model.config)))


def _check_run_matches(run: Path, meta: dict) -> None:
    """A run carries its own shapes (RUN/policy.json): any shards of the same robot evaluate it, and others are
    refused in one line. State, actions and base actions are normalised with the evaluated shards' statistics, the
    units their base actions were written in."""
    if (run / POLICY_FILE).is_file():
        spec = read_run_spec(run, {}, run / RUN_FILE)
        check_shards_match(spec, meta, run / POLICY_FILE)
        ours = (spec.get("base") or {}).get("fingerprint") if isinstance(spec.get("base"), dict) else None
        theirs = (meta.get("base_actions") or {}).get("fingerprint")
        if ours and theirs and ours != theirs:  # the "untuned base" row would be another base's
            raise SigmaError(f"the shards' base actions come from base {str(theirs)[:16]}, the run was trained over "
                             f"base {str(ours)[:16]}; rerun `sigma base-actions` with the run's base (RUN/base)",
                             file="meta.json", field="base_actions.fingerprint")


def format_table(report: dict) -> str:
    """Per group: MSE at three scales (raw units) and the change against the untuned base with its 95% interval."""
    lines = [f"{'group':16s} {'mse_vec':>10s} {'mse_chunk':>10s} {'mse_traj':>10s}   change vs untuned base "
             f"(95% CI over episodes)"]
    for g, s in report["groups"].items():
        rel = s.get("relative_to_base_untuned")
        change = "" if rel is None else "  ".join(
            f"{k} {100 * v['change']:+.0f}% [{100 * v['ci95_low']:+.0f}, {100 * v['ci95_high']:+.0f}]"
            for k, v in rel.items())
        lines.append(f"{g:16s} {s['avg_mse_vector']:10.4f} {s['avg_mse_chunk']:10.4f} {s['avg_mse_traj']:10.4f}   "
                     f"{change}")
    return "\n".join(lines)
