"""`sigma eval`: offline replay of the test windows through the five groups -> sigma_eval_report.json."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from sigma_vla.errors import SigmaError


def load_finetuned_base(run: Path | None):
    if run is None:
        return None
    from sigma_vla.models.base_policy import load_base_policy

    return load_base_policy(run / "model")


def load_eval_data(shards: Path, split: str):
    """Stacked windows of one split plus meta: our safetensors shards, or the paper's .pt shards."""
    import torch

    from sigma_vla.data.schema import SPLIT_CODES

    if any(shards.glob("shard_*.pt")) and not any(shards.glob("shard_*.safetensors")):
        from sigma_vla.evaluation.pt_shards import load_pt_shards

        data, meta = load_pt_shards(shards)
        if "base_action_vector" not in data:
            raise SigmaError("these .pt shards carry no base_action_* (the untuned base's offline actions); add "
                             "them to the samples or prep the source dataset with `sigma prep`", file=shards,
                             field="base_action_vector")
        return data, meta
    from sigma_vla.data.shards import load_shards, read_meta

    meta = read_meta(shards)
    data = load_shards(shards)
    idx = torch.nonzero(data["split"] == SPLIT_CODES[split]).squeeze(1)
    if not len(idx):
        raise SigmaError(f"split {split!r} has no windows", file=shards / "meta.json", field="split")
    if "base_action_vector" not in data:
        raise SigmaError("no base actions in the shards; run `sigma base-actions` first", file=shards,
                         field="base_action_vector")
    return {k: v[idx] for k, v in data.items()}, meta


def run_eval(run: Path, shards: Path, out: Path, split: str = "test", batch_size: int = 32,
             finetuned_base: Path | None = None, n_boot: int = 1000, progress: bool = True) -> dict:
    from sigma_vla.evaluation.metrics import HardThresholds, build_report, check_a
    from sigma_vla.evaluation.replay import replay
    from sigma_vla.inference.policy import load_adapter_config, load_run_model
    from sigma_vla.training.transforms import BatchTransform, Normalizer

    model = load_run_model(run)
    data, meta = load_eval_data(shards, split)
    cfg = model.config.language
    transform = BatchTransform.from_meta(meta, cfg.text_max_len if cfg.text_mode == "tokens" else None)
    norm = Normalizer.from_meta(meta)
    res = replay(model, data, transform, norm.unaction, batch_size, load_finetuned_base(finetuned_base),
                 load_adapter_config(run), progress=progress)
    heads = check_a(dict(model.head_named_parameters()))
    report = build_report(res, meta, heads, HardThresholds(), n_boot)
    report.update(run=str(run), shards=str(shards), split=split, batch_size=batch_size,
                  finetuned_base=str(finetuned_base) if finetuned_base else None)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "sigma_eval_report.json.tmp"
    tmp.write_text(json.dumps(report, indent=1))
    tmp.replace(out / "sigma_eval_report.json")
    return report


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


def evaluate(
    run: Path = typer.Argument(..., help="Sigma run directory (from `sigma train`)."),
    shards: Path = typer.Argument(..., help="Shard directory with base actions (or the paper's .pt shards)."),
    out: Path = typer.Option(..., "--out", help="Where sigma_eval_report.json goes."),
    split: str = typer.Option("test", help="Split to replay."),
    batch_size: int = typer.Option(32, help="Windows per batch."),
    finetuned_base: Path = typer.Option(None, help="Run directory of `sigma train --finetune-base` (control group)."),
    bootstrap: int = typer.Option(1000, help="Bootstrap resamples over episodes for the 95% intervals."),
) -> None:
    """Replay the same windows through base untuned / fine-tuned, Sigma tau=0, Sigma, Sigma + adapter."""
    start = time.perf_counter()
    report = run_eval(run, shards, out, split, batch_size, finetuned_base, bootstrap)
    typer.echo(format_table(report))
    typer.echo(f"report: {out / 'sigma_eval_report.json'} ({time.perf_counter() - start:.0f} s)")


def rollout(
    run: Path = typer.Argument(..., help="Sigma run directory (from `sigma train`)."),
    out: Path = typer.Option(..., "--out", help="Where rollouts.json and the animations go."),
    episodes: int = typer.Option(10, help="Closed-loop episodes."),
    seed: int = typer.Option(0, help="Rollout seed (disjoint from recording seeds)."),
    policy: str = typer.Option("sigma+adapter", help="base | sigma | sigma+adapter."),
    templates: str = typer.Option("held-out", help="Instruction templates: held-out | seen | all."),
    image_size: int = typer.Option(None, help="Camera side (default: the run's training image size)."),
    max_steps: int = typer.Option(300, help="Step limit per episode."),
    animations: int = typer.Option(2, help="Episodes saved as GIF."),
) -> None:
    """Run the policy in the SO-101 simulator on held-out seeds and instruction templates."""
    from sigma_vla.evaluation.rollout import run_rollouts
    from sigma_vla.inference.policy import MODES, load_sigma_policy

    if policy not in MODES:
        raise SigmaError(f"unknown policy {policy!r} (choose {', '.join(MODES)})", field="--policy")
    if templates not in ("held-out", "seen", "all"):
        raise SigmaError(f"unknown template set {templates!r}", field="--templates")
    pol = load_sigma_policy(run, mode=policy)
    s = run_rollouts(pol, episodes, seed, image_size or pol.config.image_size, out, templates, max_steps,
                     animations)
    typer.echo(f"{policy}: success {s['success_rate']:.0%} (95% CI {s['success_ci95'][0]:.0%}-"
               f"{s['success_ci95'][1]:.0%}) over {s['episodes']} episodes, final distance "
               f"{100 * s['mean_final_distance_m']:.1f} cm, length {s['mean_length']:.0f} -> {out / 'rollouts.json'}")


def report(
    root: Path = typer.Argument(..., help="A demo directory or a run directory."),
    out: Path = typer.Option(Path("report.html"), "--out", help="The HTML page to write."),
) -> None:
    """One self-contained HTML page: loss dynamics, replay MSEs with intervals, CHECK A/B, rollouts."""
    from sigma_vla.evaluation.report import build_report

    typer.echo(f"report: {build_report(root, out).resolve()}")
