"""Redraw the README's figures from the JSON they show, so a figure never drifts from its numbers.

    python benchmarks/figures.py [--experiment docs/experiment.json] [--out docs]

Writes docs/experiment.png (`sigma experiment`'s figure, drawn by the same function from the JSON it wrote) and
docs/sigma.png (what Sigma adds to a frozen base: the one picture of the README). Trains and simulates nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sigma_vla.evaluation import experiment as stats
from sigma_vla.outdir import atomic_write

ROOT = Path(__file__).resolve().parents[1]

# (x, y, text, colour) of the boxes; frozen parts grey, what Sigma trains blue, what it outputs green
BOXES = {
    "obs": (0.10, 0.78, "camera frames\n+ robot state", "#eeeeee"),
    "words": (0.10, 0.30, "instruction\n\"the bin is on your\nleft, close to you\"", "#eeeeee"),
    "base": (0.36, 0.78, "frozen base VLA\n(generic instruction)", "#d9d9d9"),
    "mllm": (0.36, 0.30, "MLLM backbone\n+ LoRA", "#cfe2f3"),
    "sem": (0.58, 0.30, "semantic factors,\nmemory m_t, intent\n-> telepathy factor tau", "#cfe2f3"),
    "res": (0.80, 0.30, "telepathy residual\nhead (tau = 0: none)", "#cfe2f3"),
    "sum": (0.80, 0.78, "base + residual\nvector | chunk | trajectory", "#d9ead3"),
}
ARROWS = [("obs", "base"), ("obs", "mllm"), ("words", "mllm"), ("mllm", "sem"), ("sem", "res"), ("res", "sum"),
          ("base", "sum")]


def draw_sigma(path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 3.6))
    ax.set_axis_off()
    ax.set_xlim(0, 1)
    ax.set_ylim(0.05, 1.0)
    boxes = {name: ax.text(x, y, text, ha="center", va="center", fontsize=9,
                           bbox={"boxstyle": "round,pad=0.5", "facecolor": colour, "edgecolor": "#555555"})
             for name, (x, y, text, colour) in BOXES.items()}
    for a, b in ARROWS:
        (xa, ya, *_), (xb, yb, *_) = BOXES[a], BOXES[b]
        # anchors on the boxes' edges (fractions of each box): side to side, bottom to top, or down and across
        if ya == yb:
            start, end = (1, 0.5), (0, 0.5)
        elif xa == xb:
            start, end = ((0.5, 1), (0.5, 0)) if yb > ya else ((0.5, 0), (0.5, 1))
        else:
            start, end = (0.5, 0), (0, 0.5)
        ax.annotate("", xy=end, xycoords=boxes[b], xytext=start, textcoords=boxes[a],
                    arrowprops={"arrowstyle": "->", "color": "#333333", "shrinkA": 6, "shrinkB": 6})
    ax.text(0.5, 0.06, "grey: frozen; blue: what Sigma trains (TRAF + TSAC); green: the actions the robot executes "
                       "(through the risk-gated adapter)", ha="center", fontsize=8, color="#444444")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return path


def draw_experiment(record_file: Path, path: Path) -> Path:
    record = json.loads(record_file.read_text())
    plan = record["plan"]
    title = (f"{plan['seeds']} training seeds x {plan['episodes']} episodes per set "
             f"(pooled rate with 95% interval; dots: one seed each)")
    return stats.plot(record, path, title=title)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--experiment", type=Path, default=ROOT / "docs" / "experiment.json")
    ap.add_argument("--out", type=Path, default=ROOT / "docs")
    args = ap.parse_args()
    for made in (draw_experiment(args.experiment, args.out / "experiment.png"), draw_sigma(args.out / "sigma.png")):
        print(f"wrote {made}")


if __name__ == "__main__":
    main()
