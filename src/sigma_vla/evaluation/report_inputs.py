"""What `sigma report` reads, found by its files and not by folder names: runs (run.json, base_info.json or
train_log.csv), offline replays (sigma_eval_report.json) and rollouts (rollouts.json), in ROOT or one or two levels
under it; or the eval and rollout directories the user names. Also the facts the page's header states about a run
(docs/architecture.md, "Data flow"). Everything here only reads; JSON is read as untrusted (outdir.read_json).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sigma_vla.errors import SigmaError
from sigma_vla.layout import BASE_INFO, DEMO_FILE, RUN_FILE, SUMMARY, TRAIN_CONFIG, TRAIN_LOG
from sigma_vla.outdir import read_json

EVAL_FILE, ROLLOUT_FILE = "sigma_eval_report.json", "rollouts.json"
RUN_FILES = (RUN_FILE, BASE_INFO, TRAIN_LOG)  # any of them makes a directory a run
DEPTH = 2  # ROOT itself and the directories one and two levels under it


@dataclass
class Inputs:
    """What one report shows: the runs found (the first one's losses are drawn), one offline replay, every rollout,
    and whether a `sigma demo --quick` wrote them. `unused` lists what was found but is not shown."""

    root: Path
    runs: list[Path] = field(default_factory=list)
    eval: Path | None = None
    rollouts: list[Path] = field(default_factory=list)
    quick: bool = False
    unused: list[Path] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.runs or self.eval or self.rollouts)


def _is_run(d: Path) -> bool:
    return any((d / name).is_file() for name in RUN_FILES)


def scan_dirs(root: Path, depth: int = DEPTH) -> list[Path]:
    """ROOT and the directories under it down to `depth`, sorted; hidden ones are skipped, and so is everything
    inside a run (a Sigma run's own copy of its base is part of that run, not another one)."""
    found, level = [root], [root]
    for _ in range(depth):
        nxt = []
        for d in level:
            if d is not root and _is_run(d):
                continue
            try:
                nxt += sorted(c for c in d.iterdir() if c.is_dir() and not c.name.startswith("."))
            except OSError:
                continue
        found += nxt
        level = nxt
    return found


def _given(path: Path, name: str, option: str) -> Path:
    """--eval / --rollouts: a directory holding NAME, or the file itself."""
    file = path if path.name == name else path / name
    if not file.is_file():
        raise SigmaError(f"no {name} here", file=path, field=option)
    return file


def _primary_first(runs: list[Path], eval_file: Path | None) -> list[Path]:
    """The run whose losses the page draws goes first: the run the replay evaluated, else the first Sigma run."""
    named = None
    if eval_file is not None:
        report = read_json(eval_file)
        named = report.get("run") if isinstance(report, dict) else None
    if named and Path(named).is_dir() and _is_run(Path(named)):
        mine = next((r for r in runs if r.resolve() == Path(named).resolve()), Path(named))
        return [mine, *[r for r in runs if r != mine]]
    sigma = [r for r in runs if run_facts(r).get("what") == "Sigma run"]
    return sigma[:1] + [r for r in runs if r not in sigma[:1]]


def is_quick(root: Path, runs: list[Path]) -> bool:
    """A `sigma demo --quick` marks its directory (DEMO_FILE); looked for in ROOT, above it and above each run."""
    for d in {root, root.parent, *(r.parent for r in runs)}:
        marker = d / DEMO_FILE
        if marker.is_file():
            data = read_json(marker)
            if isinstance(data, dict) and data.get("quick"):
                return True
    return False


def find_inputs(root: Path, eval_dir: Path | None = None, rollout_dirs: list[Path] | None = None) -> Inputs:
    """Everything the report can show under ROOT; --eval and --rollouts replace the search for their kind."""
    root = Path(root)
    if not root.is_dir():
        raise SigmaError("not found (or not a directory)", file=root)
    dirs = scan_dirs(root)
    evals = [_given(Path(eval_dir), EVAL_FILE, "--eval")] if eval_dir else \
        [d / EVAL_FILE for d in dirs if (d / EVAL_FILE).is_file()]
    rollouts = [_given(Path(d), ROLLOUT_FILE, "--rollouts") for d in rollout_dirs] if rollout_dirs else \
        [d / ROLLOUT_FILE for d in dirs if (d / ROLLOUT_FILE).is_file()]
    runs = _primary_first([d for d in dirs if _is_run(d)], evals[0] if evals else None)
    return Inputs(root, runs, evals[0] if evals else None, rollouts, is_quick(root, runs), evals[1:])


def found_lines(inputs: Inputs) -> list[str]:
    """What `sigma report` prints: where it looked, then one line per thing found."""
    lines = [f"looked in {inputs.root.resolve()} and {DEPTH} levels under it"]
    for i, run in enumerate(inputs.runs):
        facts = run_facts(run)
        drawn = " (its losses drawn)" if i == 0 and (run / TRAIN_LOG).is_file() else ""
        lines.append(f"  {facts.get('what') or 'run'}: {run}{drawn}")
    if inputs.eval:
        lines.append(f"  offline replay: {inputs.eval}")
    lines += [f"  also found {p} (not shown: pass --eval DIR to choose)" for p in inputs.unused]
    lines += [f"  rollout: {p} ({rollout_name(p, _json(p))})" for p in inputs.rollouts]
    if inputs.quick:
        lines.append(f"  {DEMO_FILE}: a quick demo (smoke test)")
    return lines


# ---- facts about a run ----------------------------------------------------------------------------------------
def _json(path: Path) -> dict[str, Any]:
    """A JSON object, or {} when the file is missing; a damaged file is one line naming it."""
    if not path.is_file():
        return {}
    data = read_json(path)
    return data if isinstance(data, dict) else {}


def _when(path: Path) -> str | None:
    if not path.is_file():
        return None
    return datetime.datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y-%m-%d %H:%M")


def run_facts(run: Path) -> dict[str, Any]:
    """The header's row for a run: what it is, experiment, backbone, steps, batch size, seed, shards, when it
    finished. A value the run does not record is None (the page leaves it blank)."""
    info, base_info = _json(run / RUN_FILE), _json(run / BASE_INFO)
    config, summary = _json(run / TRAIN_CONFIG), _json(run / SUMMARY)
    kind = info.get("kind")
    what = "Sigma run" if kind == "sigma" else "control run (base fine-tuned)" if kind == "base" else \
        "base (train-base)" if base_info else None
    backbone = ((info.get("model_config") or {}).get("backbone") or {}) if kind == "sigma" else {}
    return {"run": run.name, "what": what, "experiment": info.get("experiment"),
            "backbone": backbone.get("ref") or backbone.get("kind"),
            "steps": summary.get("steps", config.get("steps", base_info.get("steps"))),
            "batch size": config.get("batch_size"), "seed": config.get("seed"),
            "shards": info.get("shards") or base_info.get("shards"),
            "finished": _when(run / SUMMARY) or _when(run / TRAIN_LOG)}


def dataset_facts(shards: str | None) -> dict[str, Any]:
    """The shards a run trained on: path, the source dataset, and episodes per split (from SHARDS/meta.json)."""
    if not shards:
        return {}
    meta = _json(Path(shards) / "meta.json")
    episodes = meta.get("episodes") or {}
    per_split = episodes.get("per_split") if isinstance(episodes, dict) else None
    return {"shards": shards, "dataset": (meta.get("dataset") or {}).get("path"),
            "episodes": episodes.get("total") if isinstance(episodes, dict) else None,
            "per split": ", ".join(f"{k} {v}" for k, v in per_split.items()) if isinstance(per_split, dict) else None}


# ---- a rollout's policy ---------------------------------------------------------------------------------------
def _source_dir(rollouts: Path, source: str) -> Path | None:
    """The directory rollouts.json names as its policy's source: absolute, or relative to where the rollout ran
    (tried against the rollout's own ancestors)."""
    path = Path(source)
    cands = [path] if path.is_absolute() else [Path.cwd() / path, *(a / path for a in rollouts.resolve().parents)]
    return next((c for c in cands if c.is_dir()), None)


def rollout_name(path: Path, summary: dict[str, Any]) -> str:
    """The policy as rollouts.json records it ("policy", "source"), not the folder's name: "base" is told apart
    as untuned (a base directory, or a Sigma run's own base) or fine-tuned (a `--finetune-base` run)."""
    mode = str(summary.get("policy") or "unknown policy")
    if mode != "base" or not summary.get("source"):
        return mode
    src = _source_dir(path, str(summary["source"]))
    if src is None:
        return mode
    kind = _json(src / RUN_FILE).get("kind")
    return "base (fine-tuned)" if kind == "base" else "base (untuned)"


def rollout_source(summary: dict[str, Any]) -> str | None:
    """The folder name of the run a rollout drove (tells seeds and runs apart on the page)."""
    source = summary.get("source")
    return Path(str(source)).name if source else None
