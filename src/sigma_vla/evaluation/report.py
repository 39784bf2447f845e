"""`sigma report`: one self-contained HTML page (every image embedded as a data URI) a person reads to decide
whether Sigma helps. A header says what was trained on what (runs, dataset, steps, date, version) and whether a
quick demo made it (a smoke test); then loss dynamics (paper Table 1), the offline replay (MSE per group and time
scale with 95% intervals, CHECK A/B, predicted vs ground-truth trajectories) and the closed loop (rates with
intervals, splits, the same episode under every policy, tau and the adapter scale). Each section opens with a
sentence saying what it shows. What the page reads is found by its files (report_inputs.py).
"""

from __future__ import annotations

import base64
import datetime
import html
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sigma_vla.errors import SigmaError  # noqa: E402
from sigma_vla.evaluation.metrics import replay_episodes  # noqa: E402
from sigma_vla.evaluation.report_inputs import (Inputs, dataset_facts, find_inputs, rollout_name,  # noqa: E402
                                                rollout_source, run_facts)
from sigma_vla.outdir import read_json  # noqa: E402

GROUP_LABELS = {"base_untuned": "base (untuned)", "base_finetuned": "base (fine-tuned)", "sigma_tau0": "Sigma tau=0",
                "sigma": "Sigma", "sigma_adapter": "Sigma + adapter"}
SCALE_LABELS = {"vector": "vector", "chunk": "chunk", "traj": "trajectory"}
SIGMA_GROUPS = ("sigma", "sigma_adapter")  # the groups where tau and the text alignment mean something
MAX_TRAJECTORIES = 4  # subplots in the row of example windows (more would crowd their tick labels)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _img(src: str, alt: str) -> str:
    return f'<img src="{src}" alt="{html.escape(alt)}">'


def _says(text: str) -> str:
    """The sentence under a section's title that says what it shows."""
    return f'<p class="says">{text}</p>'


def table(rows: list[dict], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(v) -> str:
    if v is None:
        return ""
    return f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))


# ---- header ---------------------------------------------------------------------------------------------------
def header_section(inputs: Inputs) -> str:
    """What was trained on what, and when; a quick demo's page says first that its numbers mean nothing."""
    import sigma_vla

    parts = []
    if inputs.quick:
        parts.append('<p class="smoke"><b>Smoke test.</b> A <code>sigma demo --quick</code> made these outputs: a '
                     "few episodes and training steps, to show that every stage runs. Its numbers do not say whether "
                     "Sigma helps; run <code>sigma demo</code> or <code>sigma experiment</code> for that.</p>")
    made = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    parts.append(f"<p>{html.escape(str(inputs.root.resolve()))}; page made {made} by sigma-vla "
                 f"{html.escape(sigma_vla.__version__)}.</p>")
    facts = [run_facts(r) for r in inputs.runs]
    if facts:
        columns = [c for c in facts[0] if c != "shards" and any(f.get(c) is not None for f in facts)]
        parts.append(table(facts, columns))
        data = dataset_facts(next((f["shards"] for f in facts if f.get("shards")), None))
        if data:
            parts.append(table([data], [c for c in data if data[c] is not None]))
    return "\n".join(parts)


# ---- loss dynamics --------------------------------------------------------------------------------------------
def loss_section(run: Path | None) -> str:
    from sigma_vla.layout import TRAIN_LOG

    if run is None or not (run / TRAIN_LOG).is_file():
        return "<p>No training log found.</p>"
    import tempfile

    from sigma_vla.evaluation.loss_plot import plot_losses

    with tempfile.TemporaryDirectory() as tmp:  # the report never writes into the run directory
        png = plot_losses(run, Path(tmp) / "loss_dynamics.png")
        src = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()
    return (_says(f"The losses of <code>{html.escape(run.name)}</code> per training step: the action loss (with the "
                  "hard windows' share and the validation loss), the TSAC terms of the semantic and intent heads and "
                  "of tau, the curriculum's weights on them, and the size of tau.")
            + _img(src, "loss dynamics"))


# ---- offline replay -------------------------------------------------------------------------------------------
def mse_figure(report: dict) -> str:
    groups = report["groups"]
    names = list(groups)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, scale in zip(axes, SCALE_LABELS):
        vals = [groups[g][f"avg_mse_{scale}"] for g in names]
        ax.bar(range(len(names)), vals, color=["#999", "#bbb", "#8ab", "#37c", "#15a"][: len(names)])
        for i, g in enumerate(names):
            rel = groups[g].get("relative_to_base_untuned", {}).get(scale)
            if rel:
                ax.text(i, vals[i], f"{100 * rel['change']:+.0f}%\n[{100 * rel['ci95_low']:+.0f},"
                        f"{100 * rel['ci95_high']:+.0f}]", ha="center", va="bottom", fontsize=7)
        ax.set_ylim(0, 1.45 * max(vals))  # room for the labels above the bars, below the title
        ax.set_xticks(range(len(names)), [GROUP_LABELS.get(g, g) for g in names], rotation=30, ha="right",
                      fontsize=8)
        ax.set_title(f"{SCALE_LABELS[scale]}", pad=8)
        ax.set_ylabel("MSE (raw action units)")
    fig.tight_layout()
    return _png(fig)


def trajectory_figure(examples: list[dict]) -> str | None:
    examples = examples[:MAX_TRAJECTORIES]
    if not examples:
        return None
    fig, axes = plt.subplots(1, len(examples), figsize=(3.4 * len(examples), 3), squeeze=False)
    for ax, ex in zip(axes[0], examples):
        for key, style in (("ground_truth", "k-"), ("base_untuned", "--"), ("sigma", "-"), ("sigma_adapter", ":")):
            if key in ex:
                ax.plot([step[0] for step in ex[key]], style, label=GROUP_LABELS.get(key, key))
        ax.set_title(f"episode {ex['episode_index']}, frame {ex['frame_index']}", fontsize=8)
        ax.set_xlabel("step of the window", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("action dim 0 (raw units)", fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def eval_section(path: Path | None) -> str:
    if path is None:
        return "<p>No sigma_eval_report.json found.</p>"
    report = read_json(path)
    groups = report["groups"]
    n = replay_episodes(report)
    parts = [_says(
        f"The <code>{html.escape(str(report.get('split', 'test')))}</code> windows of the shards replayed through "
        "every group, the same windows for each: the frozen base (untuned), the control (the base fine-tuned), "
        "Sigma with tau = 0, Sigma, and Sigma with the risk-gated adapter. The error is the MSE in raw action units "
        "at three time scales (vector: the next action; chunk: the first C; trajectory: the whole window); lower "
        "is better. Over each bar: the change against the untuned base with its 95% interval over "
        f"{n if n is not None else 'the'} episodes (windows of one episode are resampled together)."
        + (" <b>Fewer than 5 episodes: the intervals mean little.</b>" if n is not None and n < 5 else "")),
        _img(mse_figure(report), "MSE per group and time scale")]
    rows = [{"group": GROUP_LABELS.get(g, g), "windows": s["num_samples"], "MSE vector": s["avg_mse_vector"],
             "MSE chunk": s["avg_mse_chunk"], "MSE trajectory": s["avg_mse_traj"],
             "hard fraction": s.get("hard_sample_fraction")} for g, s in groups.items()]
    parts.append(table(rows, list(rows[0])))
    sigma_rows = [{"group": GROUP_LABELS[g], "mean ||tau||": groups[g].get("avg_tau_l2"),
                   "semantic-text alignment": groups[g].get("avg_semantic_text_alignment")}
                  for g in SIGMA_GROUPS if g in groups]
    if sigma_rows:
        parts.append(_says("Sigma's telepathy factor on those windows: its mean size, and the cosine between the "
                           "semantic memory and the instruction's text embedding (the base has neither).")
                     + table(sigma_rows, list(sigma_rows[0])))
    parts.append(check_a_section(groups))
    parts.append(check_b_section(groups))
    traj = trajectory_figure(report.get("examples", []))
    if traj:
        parts.append("<h3>Predicted vs ground-truth trajectories</h3>"
                     + _says("The first action dimension over a few test windows: the ground truth, the base and "
                             "Sigma's corrected actions.") + _img(traj, "trajectories"))
    return "\n".join(parts)


def check_b_section(groups: dict) -> str:
    """CHECK B: every group's per-batch errors in one table; tau and alignment only where Sigma made them."""
    blank = {"tau_l2": None, "sem_align": None}
    rows = [{"group": GROUP_LABELS.get(g, g), **row, **({} if g in SIGMA_GROUPS else blank)}
            for g, s in groups.items() for row in s.get("check_b") or []]
    if not rows:
        return ""
    return ("<h3>CHECK B: the errors of every 20th batch</h3>"
            + _says("The per-batch errors behind the averages (paper tables 2 and 3): an average carried by a few "
                    "batches shows here.") + table(rows, list(rows[0])))


def check_a_section(groups: dict) -> str:
    """CHECK A: a fingerprint of the telepathy heads' weights (one row when every group has the same)."""
    rows = [{"group": GROUP_LABELS.get(g, g), **s["check_a"]} for g, s in groups.items() if s.get("check_a")]
    if not rows:
        return ""
    same = all({k: v for k, v in r.items() if k != "group"} == {k: v for k, v in rows[0].items() if k != "group"}
               for r in rows)
    if same:
        rows = [{**rows[0], "group": "every group"}]
    verdict = "They agree." if same else "<b>They differ: the groups did not replay the same weights.</b>"
    return ("<h3>CHECK A: the telepathy heads' weights</h3>"
            + _says("Count, mean, spread and rms of the heads' weights in the checkpoint the groups replay: a "
                    "fingerprint to compare between reports (the same numbers, the same heads). Every group must "
                    f"show the same. {verdict}")
            + table(rows, list(rows[0])))


# ---- closed loop ----------------------------------------------------------------------------------------------
def _rate(s: dict, name: str) -> str:
    lo, hi = s.get(f"{name}_ci95", [0.0, 1.0])
    return f"{s.get(f'{name}_rate', 0.0):.0%} [{lo:.0%}-{hi:.0%}]"


def _animation(gif: Path, caption: str) -> str:
    src = "data:image/gif;base64," + base64.b64encode(gif.read_bytes()).decode()
    return (f'<figure><img class="anim" src="{src}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def policy_labels(paths: list[Path], summaries: list[dict]) -> list[str]:
    """The policy each rollouts.json records; the run's folder is added where one policy came from several runs
    (seeds)."""
    names = [rollout_name(p, s) for p, s in zip(paths, summaries)]
    sources = [rollout_source(s) for s in summaries]
    runs_of = {n: {src for m, src in zip(names, sources) if m == n} for n in names}
    return [f"{n} ({src})" if src and len(runs_of[n]) > 1 else n for n, src in zip(names, sources)]


def tau_figure(label: str, detail: dict) -> str:
    fig, ax = plt.subplots(figsize=(5.5, 2.6))
    ax.plot(detail["tau_norms"], label="||tau||")
    ax.set_xlabel("re-plan")
    ax.set_ylabel("||tau||")
    if any(x != 1.0 for x in detail.get("adapter_scales") or []):  # the adapter acted (it is 1 without one)
        ax2 = ax.twinx()
        ax2.plot(detail["adapter_scales"], "r--", label="adapter scale")
        ax2.set_ylabel("adapter scale", color="r")
    ax.set_title(f"{label}: episode 0 ({detail['instruction'][:40]})", fontsize=8)
    fig.tight_layout()
    return _img(_png(fig), "tau norm and adapter scale over an episode")


def rollout_section(paths: list[Path]) -> str:
    """The closed-loop table (every rate with its Wilson interval), the splits by instruction kind, template and
    zone, and the first episode of every policy side by side (the same seed and instruction)."""
    if not paths:
        return "<p>No rollouts found.</p>"
    from sigma_vla.evaluation.rollout import RATES

    summaries = [read_json(p) for p in paths]
    runs = list(zip(policy_labels(paths, summaries), summaries))
    rows = [{"policy": name, "episodes": s["episodes"], **{r.replace("_", " "): _rate(s, r) for r in RATES},
             "final distance (cm)": 100 * s.get("mean_final_distance_m", 0.0), "mean steps": s.get("mean_length")}
            for name, s in runs]
    least = min(s["episodes"] for _, s in runs)
    parts = [_says(
        "Episodes in the SO-101 simulator on seeds no recording used; policies rolled out with the same seed and "
        "templates ran the same planned episodes. grasped: the jaw closed on the block; lifted: it left the table; "
        "placed: it was put down; placed in zone: put down in the zone the instruction names; success: released "
        "at rest within 3 cm of its goal. Each rate has its 95% Wilson interval over episodes."
        + (f" <b>{least} episodes: the intervals are wide; one training run is one sample.</b>" if least < 50 else "")),
        table(rows, list(rows[0]))]
    for split in ("kind", "templates", "zone"):
        split_rows = [{"policy": name, split: group, "episodes": g["episodes"],
                       "placed in zone": _rate(g, "placed_in_zone"), "success": _rate(g, "success")}
                      for name, s in runs for group, g in (s.get("by") or {}).get(split, {}).items()]
        if split_rows:
            parts.append(f"<h3>By {split}</h3>" + table(split_rows, list(split_rows[0])))
    figures = []
    for (name, s), p in zip(runs, paths):
        detail = s.get("episodes_detail") or []
        gif = p.parent / "episode_000.gif"
        if detail and gif.is_file():
            d = detail[0]
            verdict = "in zone" if d.get("placed_in_zone") else "lifted" if d.get("lifted") else "not lifted"
            figures.append(_animation(gif, f"{name}: {verdict}"))
    if figures:
        d = runs[0][1]["episodes_detail"][0]
        parts.append(f"<h3>The same episode under every policy: \"{html.escape(d['instruction'])}\" "
                     f"(zone {html.escape(d['zone'])}, seed {d['seed']})</h3>" + "".join(figures))
    taus = [(name, s["episodes_detail"][0]) for name, s in runs
            if s.get("episodes_detail") and any(s["episodes_detail"][0].get("tau_norms") or [])]
    if taus:  # a base has no tau to show
        parts.append("<h3>tau and the adapter over an episode</h3>"
                     + _says("The size of Sigma's telepathy factor at each re-plan of the first episode, and the "
                             "risk-gated adapter's scale on its correction (1: applied as is; below 1: damped).")
                     + "".join(tau_figure(name, d) for name, d in taus))
    return "\n".join(parts)


STYLE = ("body{font-family:sans-serif;max-width:1300px;margin:2em auto;color:#222}table{border-collapse:collapse;"
         "margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
         "img{max-width:100%;margin:.5em 0}img.anim{width:256px;image-rendering:pixelated}"
         "figure{display:inline-block;margin:.5em}figcaption{font-size:12px}p.says{color:#444;max-width:70em}"
         "p.smoke{background:#fff3cd;border:1px solid #e0c060;padding:.6em 1em}")
# Marks whether every image loaded, for the browser test; hidden, it is not part of what a reader sees.
CHECK_IMAGES = ("<p id='image-status' hidden>images loaded: unknown</p>"
                "<script>window.addEventListener('load',()=>{const imgs=[...document.images];"
                "const ok=imgs.filter(i=>i.complete&&i.naturalWidth>0).length;"
                "document.getElementById('image-status').textContent=`images loaded: ${ok}/${imgs.length}`;});"
                "</script>")


def write_report(inputs: Inputs, out: Path) -> Path:
    """The page for what find_inputs found, written atomically to OUT."""
    from sigma_vla.outdir import atomic_write_text

    if inputs.empty:
        raise SigmaError("no run, sigma_eval_report.json or rollouts.json here or 2 levels under it (name them "
                         "with --eval DIR / --rollouts DIR)", file=inputs.root)
    body = (f"<h1>Sigma report</h1>{header_section(inputs)}"
            f"<h2>Loss dynamics (paper Table 1)</h2>{loss_section(inputs.runs[0] if inputs.runs else None)}"
            f"<h2>Offline replay on held-out episodes</h2>{eval_section(inputs.eval)}"
            f"<h2>Closed loop in the simulator</h2>{rollout_section(inputs.rollouts)}")
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>Sigma report</title><style>{STYLE}</style>" \
           f"</head><body>{body}{CHECK_IMAGES}</body></html>"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, page)
    return out


def build_report(root: Path, out: Path, eval_dir: Path | None = None,
                 rollout_dirs: list[Path] | None = None) -> Path:
    """Find what ROOT holds (or what --eval / --rollouts name) and write the page."""
    return write_report(find_inputs(Path(root), eval_dir, rollout_dirs), out)
