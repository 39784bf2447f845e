"""`sigma demo --quick`: every stage end to end on the embedded default (slow: about 2 minutes on 2 CPU cores)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "sigma_vla.cli.main", "demo", "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Open the report" in proc.stdout
    report = json.loads((out / "eval" / "sigma_eval_report.json").read_text())
    assert set(report["groups"]) == {"base_untuned", "base_finetuned", "sigma_tau0", "sigma", "sigma_adapter"}
    for name in ("base", "base_fine-tuned", "sigma", "sigma_adapter"):
        rollouts = json.loads((out / f"rollout_{name}" / "rollouts.json").read_text())
        assert rollouts["episodes"] == 1 and "placed_in_zone_rate" in rollouts and "by" in rollouts
    assert (out / "report.html").stat().st_size > 10_000
