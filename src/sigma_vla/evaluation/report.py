"""`sigma report`: one self-contained HTML page (every image embedded as a data URI) a person reads to decide
whether Sigma helps: loss dynamics (paper Table 1), MSE per group and time scale with 95% intervals, CHECK A/B,
predicted vs ground-truth trajectories, tau and the adapter scale over an episode, and closed-loop success with
an animation. A small script at the end marks whether every image loaded (the browser test reads it).
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sigma_vla.errors import SigmaError  # noqa: E402

GROUP_LABELS = {"base_untuned": "base (untuned)", "base_finetuned": "base (fine-tuned)", "sigma_tau0": "Sigma tau=0",
                "sigma": "Sigma", "sigma_adapter": "Sigma + adapter"}
SCALE_LABELS = {"vector": "vector", "chunk": "chunk", "traj": "trajectory"}


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _img(src: str, alt: str) -> str:
    return f'<img src="{src}" alt="{html.escape(alt)}">'


def find_inputs(root: Path) -> dict[str, Path | list[Path] | None]:
    """Locate a run's logs, the eval report and rollouts under a demo directory or a run directory."""
    def first(*cands):
        return next((c for c in cands if c.exists()), None)

    return {
        "train_log": first(root / "train_log.csv", root / "run" / "train_log.csv"),
        "eval": first(root / "sigma_eval_report.json", root / "eval" / "sigma_eval_report.json"),
        "rollouts": sorted(root.glob("rollout*/rollouts.json")) + sorted(root.glob("rollouts/*/rollouts.json")),
    }


def loss_section(train_log: Path | None) -> str:
    if train_log is None:
        return "<p>No training log found.</p>"
    import tempfile

    from sigma_vla.evaluation.loss_plot import plot_losses

    with tempfile.TemporaryDirectory() as tmp:  # the report never writes into the run directory
        png = plot_losses(train_log.parent, Path(tmp) / "loss_dynamics.png")
        src = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()
    return _img(src, "loss dynamics")


def mse_figure(report: dict) -> str:
    groups = report["groups"]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for ax, scale in zip(axes, SCALE_LABELS):
        names = list(groups)
        vals = [groups[g][f"avg_mse_{scale}"] for g in names]
        ax.bar(range(len(names)), vals, color=["#999", "#bbb", "#8ab", "#37c", "#15a"][: len(names)])
        for i, g in enumerate(names):
            rel = groups[g].get("relative_to_base_untuned", {}).get(scale)
            if rel:
                ax.text(i, vals[i], f"{100 * rel['change']:+.0f}%\n[{100 * rel['ci95_low']:+.0f},"
                        f"{100 * rel['ci95_high']:+.0f}]", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(names)), [GROUP_LABELS.get(g, g) for g in names], rotation=30, ha="right",
                      fontsize=8)
        ax.set_title(f"MSE {SCALE_LABELS[scale]} (raw units)")
    return _png(fig)


def trajectory_figure(examples: list[dict]) -> str | None:
    if not examples:
        return None
    fig, axes = plt.subplots(1, len(examples), figsize=(3.2 * len(examples), 3), squeeze=False)
    for ax, ex in zip(axes[0], examples):
        for key, style in (("ground_truth", "k-"), ("base_untuned", "--"), ("sigma", "-"), ("sigma_adapter", ":")):
            if key in ex:
                ax.plot([step[0] for step in ex[key]], style, label=GROUP_LABELS.get(key, key))
        ax.set_title(f"episode {ex['episode_index']}, frame {ex['frame_index']}", fontsize=8)
        ax.set_xlabel("step")
    axes[0][0].set_ylabel("action dim 0")
    axes[0][0].legend(fontsize=7)
    return _png(fig)


def table(rows: list[dict], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))


def eval_section(path: Path | None) -> str:
    if path is None:
        return "<p>No sigma_eval_report.json found.</p>"
    report = json.loads(path.read_text())
    parts = [_img(mse_figure(report), "MSE per group and time scale")]
    rows = [{"group": GROUP_LABELS.get(g, g), **{k: s[k] for k in ("num_samples", "avg_mse_vector", "avg_mse_chunk",
             "avg_mse_traj", "avg_tau_l2", "avg_semantic_text_alignment", "hard_sample_fraction")}}
            for g, s in report["groups"].items()]
    parts.append(table(rows, list(rows[0])))
    check_a = [{"group": GROUP_LABELS.get(g, g), **s["check_a"]} for g, s in report["groups"].items()]
    parts.append("<h3>CHECK A: telepathy-head weights (identical across groups)</h3>" + table(check_a, list(check_a[0])))
    for g, s in report["groups"].items():
        if s.get("check_b"):
            parts.append(f"<h3>CHECK B: {GROUP_LABELS.get(g, g)}, every 20th batch</h3>"
                         + table(s["check_b"], list(s["check_b"][0])))
    traj = trajectory_figure(report.get("examples", []))
    if traj:
        parts.append("<h3>Predicted vs ground-truth trajectories (test windows)</h3>" + _img(traj, "trajectories"))
    return "\n".join(parts)


def _rate(s: dict, name: str) -> str:
    lo, hi = s.get(f"{name}_ci95", [0.0, 1.0])
    return f"{s.get(f'{name}_rate', 0.0):.0%} [{lo:.0%}-{hi:.0%}]"


def _animation(gif: Path, caption: str) -> str:
    src = "data:image/gif;base64," + base64.b64encode(gif.read_bytes()).decode()
    return (f'<figure><img class="anim" src="{src}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def rollout_section(paths: list[Path]) -> str:
    """The closed-loop table (every rate with its Wilson interval), the splits by instruction kind, template and
    zone, and the first episode of every policy side by side (the same seed and instruction)."""
    if not paths:
        return "<p>No rollouts found.</p>"
    from sigma_vla.evaluation.rollout import RATES

    runs = [(p.parent.name.removeprefix("rollout_"), json.loads(p.read_text())) for p in paths]
    rows = [{"policy": name, "episodes": s["episodes"], **{r.replace("_", " "): _rate(s, r) for r in RATES},
             "final distance (cm)": 100 * s.get("mean_final_distance_m", 0.0), "steps": s.get("mean_length")}
            for name, s in runs]
    parts = [table(rows, list(rows[0]))]
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
    for name, s in runs:
        detail = s.get("episodes_detail") or []
        if detail and any(detail[0].get("tau_norms") or []):  # the base policy has no tau to show
            fig, ax = plt.subplots(figsize=(5, 2.5))
            ax.plot(detail[0]["tau_norms"], label="||tau||")
            ax2 = ax.twinx()
            ax2.plot(detail[0]["adapter_scales"], "r--", label="adapter scale")
            ax.set_xlabel("re-plan")
            ax.set_title(f"{name}: episode 0 ({detail[0]['instruction'][:40]})", fontsize=8)
            parts.append(_img(_png(fig), "tau norm and adapter scale over an episode"))
    return "\n".join(parts)


STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}table{border-collapse:collapse;"
         "margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
         "img{max-width:100%;margin:.5em 0}img.anim{width:256px;image-rendering:pixelated}"
         "figure{display:inline-block;margin:.5em}figcaption{font-size:12px}")
CHECK_IMAGES = ("<script>window.addEventListener('load',()=>{const imgs=[...document.images];"
                "const ok=imgs.filter(i=>i.complete&&i.naturalWidth>0).length;"
                "document.getElementById('image-status').textContent=`images loaded: ${ok}/${imgs.length}`;});"
                "</script>")


def build_report(root: Path, out: Path) -> Path:
    if not root.exists():
        raise SigmaError("not found", file=root)
    found = find_inputs(root)
    if not any([found["train_log"], found["eval"], found["rollouts"]]):
        raise SigmaError("no train_log.csv, sigma_eval_report.json or rollouts.json under it", file=root)
    body = (f"<h1>Sigma report</h1><p>{html.escape(str(root.resolve()))}</p>"
            f"<h2>Loss dynamics (paper Table 1)</h2>{loss_section(found['train_log'])}"
            f"<h2>Offline replay on held-out episodes</h2>{eval_section(found['eval'])}"
            f"<h2>Closed loop in the simulator</h2>{rollout_section(found['rollouts'])}"
            f"<p id='image-status'>images loaded: unknown</p>")
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>Sigma report</title><style>{STYLE}</style>" \
           f"</head><body>{body}{CHECK_IMAGES}</body></html>"
    out.parent.mkdir(parents=True, exist_ok=True)
    from sigma_vla.outdir import atomic_write_text

    atomic_write_text(out, page)
    return out
