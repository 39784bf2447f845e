"""The loss dynamics of a run (paper 4.4, Table 1's columns as curves): `sigma plot-losses RUN` and the HTML report.

It only reads what the trainer wrote (RUN/train_log.csv, RUN/val_log.csv; names in sigma_vla.outdir), so evaluation
draws a run without importing the trainer (docs/architecture.md, Layers).
"""

from __future__ import annotations

from pathlib import Path

from sigma_vla.errors import SigmaError
from sigma_vla.layout import PLOT_FILE, TRAIN_LOG, VAL_LOG
from sigma_vla.outdir import read_csv


def _column(rows: list[dict[str, str]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in rows:
        if r.get(key) not in (None, ""):
            xs.append(float(r["step"]))
            ys.append(float(r[key]))
    return xs, ys


def plot_losses(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Four panels of the loss dynamics (Table 1 as curves): action losses and val loss, TSAC terms, curriculum
    weights, tau_rms and hard_ratio. Returns the PNG path (default RUN/loss_dynamics.png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    if not (run_dir / TRAIN_LOG).exists():
        raise SigmaError("no training log here (run `sigma train` first)", file=run_dir / TRAIN_LOG)
    rows = read_csv(run_dir / TRAIN_LOG)
    if not rows:
        raise SigmaError("the training log has no rows yet", file=run_dir / TRAIN_LOG)
    val = read_csv(run_dir / VAL_LOG) if (run_dir / VAL_LOG).exists() else []
    panels = [
        ("action loss", [(rows, "loss"), (rows, "L_act"), (rows, "L_act_hard"), (val, "val_loss")], True, "loss"),
        ("TSAC terms", [(rows, "L_sem"), (rows, "L_int"), (rows, "L_tau")], False, "loss"),
        ("curriculum weights", [(rows, "w_sem"), (rows, "w_int"), (rows, "w_tau")], False, "weight"),
        ("telepathy", [(rows, "tau_rms"), (rows, "hard_ratio")], False, "rms of tau / hard fraction"),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    for ax, (title, series, log_y, y_label) in zip(axes.flat, panels):
        for source, key in series:
            xs, ys = _column(source, key)
            if xs:
                ax.plot(xs, ys, label=key, marker="o" if len(xs) < 20 else None)
        if log_y and all(y > 0 for s, k in series for y in _column(s, k)[1]):
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylabel(y_label)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Loss dynamics: {run_dir.name}")
    fig.tight_layout()
    out = Path(out) if out else run_dir / PLOT_FILE
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
