"""The HTML report renders in headless Chromium: the screenshot is not blank and every image loaded."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess

import numpy as np
import pytest

from sigma_vla.evaluation.metrics import HardThresholds, build_report as build_eval_report
from sigma_vla.evaluation.report import build_report
from sigma_vla.evaluation.rollout import EpisodeResult, save_animation, summarize

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _demo_dir(root):
    run = root / "run"
    run.mkdir(parents=True)
    cols = ["step", "loss", "L_act", "L_sem", "L_int", "L_tau", "L_act_hard", "w_sem", "w_int", "w_tau",
            "hard_ratio", "tau_rms"]
    with open(run / "train_log.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for step in range(30):
            w.writerow([step, 2 / (step + 1), 2 / (step + 1), 0.07, -step / 40, 0.1, 1.0, 0.1, 0.1, 0.0, 0.3, step / 10])
    rng = np.random.default_rng(0)
    n = 40
    res = {"mse": {}, "mse_norm": {}, "rows": {}, "episode_index": np.repeat(np.arange(8), 5),
           "tau_l2": rng.random(n), "sem_align": rng.random(n), "adapter_scale": rng.random(n), "num_batches": 2,
           "examples": [{"episode_index": 1, "frame_index": 0, "ground_truth": [[0.1 * t] for t in range(16)],
                         "sigma": [[0.1 * t + 0.05] for t in range(16)]}]}
    for g, f in (("base_untuned", 1.0), ("sigma", 0.6), ("sigma_adapter", 0.7)):
        res["mse"][g] = res["mse_norm"][g] = {s: f * rng.random(n) for s in ("vector", "chunk", "traj")}
        res["rows"][g] = [{"batch": 0, "mse_vector": 0.1 * f, "mse_chunk": 0.2, "mse_traj": 0.3}]
    report = build_eval_report(res, {}, {"heads_tensors": 3, "mean": 0.0, "std": 0.1, "rms": 0.1},
                               HardThresholds(), n_boot=50)
    (root / "eval").mkdir()
    (root / "eval/sigma_eval_report.json").write_text(json.dumps(report))
    ro = root / "rollout_sigma"
    ro.mkdir()
    frames = [np.full((32, 32, 3), 20 * i, np.uint8) for i in range(8)]
    save_animation(frames, ro / "episode_000.gif")
    ep = EpisodeResult(1, "far_left", "put it far left", "far_left/explicit/3", "explicit", True, True, 0.01, 40,
                       tau_norms=[1.0, 2.0, 1.5], adapter_scales=[1.1, 1.2, 0.9])
    (ro / "rollouts.json").write_text(json.dumps({**summarize([ep]), "episodes_detail": [ep.__dict__]}))
    return root


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is installed by `make test`'s set-up")
def test_report_renders_in_headless_chromium(tmp_path):
    page = build_report(_demo_dir(tmp_path / "demo"), tmp_path / "report.html")
    html = page.read_text()
    assert "src=\"http" not in html and html.count("data:image/") >= 5  # self-contained
    common = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    status = dom.stdout.split("images loaded: ")[1].split("<")[0]
    loaded, total = map(int, status.split("/"))
    assert total >= 5 and loaded == total, status
    shot = tmp_path / "shot.png"
    subprocess.run([*common, f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.std() > 10 and (pixels < 128).mean() > 0.01, "the screenshot is blank"
