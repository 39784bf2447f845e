"""Training logs: RUN/train_log.csv with Table 1's columns (paper 4.4), RUN/val_log.csv and optional TensorBoard.
The loss-dynamics plot behind `sigma plot-losses RUN` reads them (evaluation/loss_plot.py).

Column meanings (our log): `L_act` is the all-sample action loss of 4.2.1 and `L_act_hard` the same loss on the hard
set H; `L_act_total` = L_act + lambda_hard * L_act_hard. The paper's Table 1 column named L_act matches our
L_act_total (its loss minus its L_act equals the weighted TSAC terms). `step` is the 0-based optimizer step whose
update the row reports (Table 1 starts at 0).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from sigma_vla.layout import TRAIN_LOG, VAL_LOG
from sigma_vla.outdir import read_csv

__all__ = ["TABLE1_COLUMNS", "TRAIN_COLUMNS", "TRAIN_LOG", "VAL_COLUMNS", "VAL_LOG", "CsvLog", "TensorBoardLog",
           "read_csv"]

TABLE1_COLUMNS = ["step", "loss", "L_act", "L_sem", "L_int", "L_tau", "L_act_hard", "w_sem", "w_int", "w_tau",
                  "hard_ratio", "tau_rms"]
# Table 1, then lr and throughput, then our diagnostics (L_flow: path C's flow matching; L_time and L_mi: the two
# halves of L_sem; per-scale MSEs in normalised units).
TRAIN_COLUMNS = TABLE1_COLUMNS + ["lr", "samples_per_s", "L_act_total", "L_flow", "L_time", "L_mi", "mse_vector",
                                  "mse_chunk", "mse_trajectory", "epoch"]
VAL_COLUMNS = ["step", "val_loss", "val_L_act", "val_mse_vector", "val_mse_chunk", "val_mse_trajectory"]


class CsvLog:
    """Append-only CSV with a fixed header. On resume, rows at or after the resume step (from a run that went on
    past its last checkpoint) are dropped first, so the log never repeats a step."""

    def __init__(self, path: Path, columns: list[str], resume_step: int | None = None):
        self.path, self.columns = Path(path), columns
        if resume_step is None or not self.path.exists():
            with open(self.path, "w", newline="") as fh:
                csv.writer(fh).writerow(columns)
        else:
            rows = [r for r in read_csv(self.path) if int(float(r["step"])) < resume_step]
            with open(self.path, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows)

    def write(self, row: dict[str, Any]) -> None:
        with open(self.path, "a", newline="") as fh:
            csv.writer(fh).writerow([_fmt(row.get(c)) for c in self.columns])


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


class TensorBoardLog:
    """Scalars to RUN/tensorboard when `tensorboard` is importable; otherwise a no-op (it is optional)."""

    def __init__(self, run_dir: Path, enabled: bool = True):
        self.writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard not installed
                return
            self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def write(self, step: int, row: dict[str, Any], prefix: str = "train") -> None:
        if self.writer is None:
            return
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
