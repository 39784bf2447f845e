"""`sigma experiment`: does Sigma beat plain fine-tuning of its base? Several training seeds, one set of episodes.

For each seed: train Sigma and the control group (the base fine-tuned on the same split, steps and batch), calibrate
Sigma's adapter, then roll out on the same planned episodes (held-out and seen instruction templates) the base,
the control, Sigma, Sigma with tau forced to 0 and Sigma + adapter. The base is trained once, so it is rolled out
once. Every stage is skipped when its output is complete and a killed training resumes from its last checkpoint, so
a killed experiment keeps its finished seeds. Statistics: evaluation/experiment.py.

DIR/ holds experiment_config.json (what was asked), sigma_seedS/ and control_seedS/ (runs), rollout_NAME_SET/
(rollouts.json), experiment.json and experiment.png.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import typer

from sigma_vla.cli.help import DEFAULT_CONFIG
from sigma_vla.errors import SigmaError

CONFIG_FILE, RESULT_FILE, FIGURE_FILE = "experiment_config.json", "experiment.json", "experiment.png"
FORMAT = "sigma-vla-experiment/1"
# experiment policy name -> rollout mode on the run it comes from
ROLLOUT_MODES = {"control": "base", "sigma": "sigma", "sigma_tau0": "sigma-tau0", "sigma_adapter": "sigma+adapter"}


@dataclass(frozen=True)
class ExperimentPlan:
    """What an experiment is; a resumed experiment must ask the same (its seeds may grow)."""

    shards: str
    base: str
    seeds: int
    episodes: int
    steps: int | None  # None: the training config's own steps
    config: str
    rollout_seed: int
    max_steps: int
    paraphrases: str | None = None  # a paraphrase table both groups train with (processing/paraphrase.py)


def check_options(seeds: int, episodes: int, workers: int, steps: int | None, max_steps: int) -> None:
    for name, value in (("--seeds", seeds), ("--episodes", episodes), ("--workers", workers),
                        ("--max-steps", max_steps), ("--steps", 1 if steps is None else steps)):
        if value < 1:
            raise SigmaError(f"must be >= 1, got {value}", field=name)


def check_inputs(shards: Path, base: Path) -> None:
    """The shards carry the actions of exactly this base: Sigma's residuals are over them, the control starts from it."""
    from sigma_vla.interop.fingerprint import fingerprint

    meta_file = shards / "meta.json"
    if not meta_file.is_file():
        raise SigmaError("not a shard directory (meta.json missing); run `sigma prep`", file=shards)
    if not (base / "config.json").is_file():
        raise SigmaError("not a base-policy directory (config.json missing); run `sigma train-base`", file=base)
    try:
        record = json.loads(meta_file.read_text()).get("base_actions") or {}
    except (OSError, ValueError, AttributeError) as err:
        raise SigmaError(f"unreadable ({err})", file=meta_file) from None
    if not record.get("fingerprint"):
        raise SigmaError("the shards hold no base actions; run `sigma base-actions SHARDS --base BASE`",
                         file=meta_file, field="base_actions")
    if record["fingerprint"] != fingerprint(base):
        raise SigmaError(f"the shards' base actions come from another base (fingerprint "
                         f"{str(record['fingerprint'])[:12]}..., this base {fingerprint(base)[:12]}...); rerun "
                         "`sigma base-actions` with this base", file=meta_file, field="base_actions.fingerprint")


def check_paraphrases(path: Path) -> None:
    """A paraphrase table may not teach a held-out template: the held-out set would then be seen in training."""
    from sigma_vla.processing.paraphrase import read_table
    from sigma_vla.sim.instructions import TEMPLATES

    held_out = {t.text for t in TEMPLATES if t.held_out}
    for task, text in read_table(path):
        if text in held_out or task in held_out:
            raise SigmaError(f"holds the held-out template {text if text in held_out else task!r}: the held-out "
                             "set would be seen in training", file=path, field="text")


def open_experiment(out: Path, plan: ExperimentPlan) -> None:
    """Claim DIR and record the plan, or check that a resumed DIR asked the same."""
    from sigma_vla.outdir import atomic_write_text, claim_dir

    claim_dir(out, "experiment")
    path = out / CONFIG_FILE
    if path.exists():
        try:
            before = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise SigmaError(f"unreadable ({err})", file=path) from None
        for key, value in asdict(plan).items():
            if key != "seeds" and before.get(key) != value:
                flag = "SHARDS" if key == "shards" else "--" + key.replace("_", "-")
                raise SigmaError(f"this experiment was started with {key} {before.get(key)!r}, asked {value!r}; "
                                 "use the same value or another --out", file=path, field=flag)
    atomic_write_text(path, json.dumps({"format": FORMAT, **asdict(plan)}, indent=2) + "\n")


def _stage(text: str, done: bool = False) -> float:
    typer.secho(f"== {text}{' (done, skipped)' if done else ''}", bold=True)
    return time.perf_counter()


def train_seed(plan: ExperimentPlan, out: Path, seed: int, progress: bool) -> tuple[Path, Path]:
    """Sigma and the control group of one training seed (resumed from a checkpoint if a run was killed)."""
    from sigma_vla.evaluation.offline import calibrate_run
    from sigma_vla.layout import ADAPTER_FILE
    from sigma_vla.training.checkpoint import step_dirs
    from sigma_vla.training.run import finetune_base, train_sigma

    overrides = {"seed": seed, **({"steps": plan.steps} if plan.steps else {}),
                 **({"paraphrases": plan.paraphrases} if plan.paraphrases else {})}
    sigma, control = out / f"sigma_seed{seed}", out / f"control_seed{seed}"
    for label, run, fit in (
            ("Sigma", sigma, lambda resume: train_sigma(Path(plan.shards), sigma, plan.config, overrides,
                                                        resume=resume, progress=progress)),
            ("the control group (base fine-tuned)", control,
             lambda resume: finetune_base(Path(plan.shards), control, Path(plan.base), plan.config, overrides,
                                          resume=resume, progress=progress))):
        done = (run / "model" / "config.json").is_file()
        start = _stage(f"seed {seed}: train {label} -> {run}", done)
        if not done:
            result = fit(bool(step_dirs(run)))
            typer.echo(f"{result.steps} steps ({time.perf_counter() - start:.0f} s)")
    if not (sigma / ADAPTER_FILE).is_file():
        calibrate_run(sigma, Path(plan.shards))
    return sigma, control


def roll_out(plan: ExperimentPlan, out: Path, name: str, source: Path, mode: str, templates: str, workers: int,
             progress: bool) -> dict:
    """One policy on one instruction set; an existing rollouts.json is kept (resume)."""
    from sigma_vla.evaluation.rollout import RolloutJob, format_summary, plan_episodes, run_rollouts
    from sigma_vla.inference.policy import load_policy

    target = out / f"rollout_{name}_{templates}"
    done = (target / "rollouts.json").is_file()
    start = _stage(f"closed loop: {name}, {plan.episodes} episodes, {templates} templates -> {target}", done)
    if done:
        return json.loads((target / "rollouts.json").read_text())
    size = load_policy(source, mode).config.image_size  # a bad run fails here, in one line, before any worker
    job = RolloutJob(str(source), mode, 1, size, plan.max_steps)
    s = run_rollouts(job, plan_episodes(plan.episodes, plan.rollout_seed, templates), target, animations=0,
                     workers=workers, progress=progress, label=name)
    typer.echo(f"{format_summary(name, s)} ({time.perf_counter() - start:.0f} s)")
    return s


def run_experiment(plan: ExperimentPlan, out: Path, workers: int, progress: bool = True,
                   command: str | None = None) -> dict:
    """Train and roll out every seed, then write experiment.json and experiment.png; returns the JSON record."""
    from sigma_vla.evaluation import experiment as stats
    from sigma_vla.outdir import atomic_write_text

    start = time.perf_counter()
    outcomes: stats.Outcomes = {name: {s: [] for s in stats.SETS} for name in stats.POLICIES}
    base_runs = {s: roll_out(plan, out, "base", Path(plan.base), "base", s, workers, progress) for s in stats.SETS}
    for seed in range(plan.seeds):
        sigma, control = train_seed(plan, out, seed, progress)
        for s in stats.SETS:
            outcomes["base"][s].append(stats.episode_outcomes(base_runs[s]))
            for name, mode in ROLLOUT_MODES.items():
                source = control if name == "control" else sigma
                summary = roll_out(plan, out, f"{name}_seed{seed}", source, mode, s, workers, progress)
                outcomes[name][s].append(stats.episode_outcomes(summary))
    record = {"format": FORMAT, "plan": asdict(plan), **stats.summarize(outcomes),
              "command": command,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": _cpu_name()},
              "wall_s_this_invocation": round(time.perf_counter() - start, 1),
              "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    atomic_write_text(out / RESULT_FILE, json.dumps(record, indent=1) + "\n")
    stats.plot(record, out / FIGURE_FILE, title=f"{plan.seeds} training seeds x {plan.episodes} episodes per set "
                                                f"(pooled rate with 95% interval; dots: one seed each)")
    return record


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def experiment(
    shards: Path = typer.Argument(..., metavar="SHARDS", help="Shard directory with the base's actions."),
    base: Path = typer.Option(..., "--base", metavar="BASE", help="The base-policy directory those actions came from."),
    out: Path = typer.Option(..., "--out", metavar="DIR", help="Where everything goes (resumable)."),
    seeds: int = typer.Option(3, "--seeds", metavar="N", help="Training seeds for Sigma and the control group."),
    episodes: int = typer.Option(100, "--episodes", metavar="N", help="Closed-loop episodes per policy and instruction set."),
    workers: int = typer.Option(2, "--workers", metavar="N", help="Rollout episodes in parallel processes."),
    steps: int = typer.Option(None, "--steps", metavar="N", show_default=False,
                              help="Training steps of Sigma and the control (the --config's own; {default:steps})."),
    config: str = typer.Option(DEFAULT_CONFIG, "--config", metavar="NAME", help="Training experiment:{experiments}"),
    rollout_seed: int = typer.Option(0, "--rollout-seed", metavar="N", help="Which planned episodes (disjoint from recording)."),
    max_steps: int = typer.Option(120, "--max-steps", metavar="N", help="Step limit per episode."),
    paraphrases: Path = typer.Option(None, "--paraphrases", metavar="FILE",
                                     help="JSON lines {task, text}: both groups train with these wordings too "
                                          "(`sigma train --paraphrases`); none may be a held-out template."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars."),
) -> None:
    """Sigma against the fine-tuned base over several training seeds, in closed loop, with paired intervals."""
    from sigma_vla.evaluation.experiment import format_table
    from sigma_vla.sim.so101 import require_simulator
    from sigma_vla.training.registry import get_experiment

    check_options(seeds, episodes, workers, steps, max_steps)
    get_experiment(config)
    require_simulator()
    check_inputs(shards, base)
    if paraphrases is not None:
        check_paraphrases(paraphrases)
    plan = ExperimentPlan(str(shards.resolve()), str(base.resolve()), seeds, episodes, steps, config, rollout_seed,
                          max_steps, str(paraphrases.resolve()) if paraphrases is not None else None)
    from sigma_vla.outdir import writer_lock

    open_experiment(out, plan)
    start = time.perf_counter()
    from sigma_vla.training.trainer import TrainingInterrupted

    command = shlex.join(["sigma", *sys.argv[1:]])
    try:
        with writer_lock(out):  # one experiment per DIR at a time
            record = run_experiment(plan, out, workers, progress, command=command)
    except KeyboardInterrupt as stop:
        where = f" ({stop.describe()})" if isinstance(stop, TrainingInterrupted) else ""
        typer.echo(f"interrupted{where}; every finished stage is kept\nresume with: {command}", err=True)
        raise typer.Exit(130) from None
    typer.echo("\n" + format_table(record))
    typer.secho(f"\nexperiment finished in {time.perf_counter() - start:.0f} s: {out / RESULT_FILE}, "
                f"{out / FIGURE_FILE}", bold=True)
