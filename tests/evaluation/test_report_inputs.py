"""`sigma report` finds what it shows by its files, under any folder names, says where it looked, and tells a
quick demo's page apart as a smoke test."""

from __future__ import annotations

import json
import shutil

from sigma_vla.evaluation.report import build_report
from tests.conftest import run_cli
from tests.evaluation.test_report import _demo_dir


def _renamed(root):
    """The demo layout of test_report, moved under names no fixed search would guess."""
    _demo_dir(root / "src")
    shutil.move(root / "src/run", root / "runs/my_sigma")
    shutil.move(root / "src/eval", root / "my_eval")
    shutil.move(root / "src/rollout_sigma", root / "closed_loop/sigma_try1")
    (root / "runs/my_sigma/run.json").write_text(json.dumps({"kind": "sigma", "experiment": "demo"}))
    return root


def test_report_finds_outputs_by_their_files_and_says_where_it_looked(tmp_path, capsys):
    root = _renamed(tmp_path / "project")
    code, out, err = run_cli(["report", root, "--out", tmp_path / "r.html"], capsys)
    assert code == 0, err
    assert f"looked in {root.resolve()}" in out
    assert "Sigma run: " in out and "my_sigma (its losses drawn)" in out
    assert "my_eval/sigma_eval_report.json" in out and "closed_loop/sigma_try1/rollouts.json" in out
    page = (tmp_path / "r.html").read_text()
    assert "No training log found" not in page and "No rollouts found" not in page
    assert "Smoke test" not in page and "sigma-vla" in page  # the header names the version


def test_named_eval_and_rollouts_replace_the_search_and_a_wrong_one_is_one_line(tmp_path, capsys):
    root = _renamed(tmp_path / "project")
    code, out, _ = run_cli(["report", tmp_path / "project/runs", "--eval", root / "my_eval",
                            "--rollouts", root / "closed_loop/sigma_try1", "--out", tmp_path / "r.html"], capsys)
    assert code == 0 and "offline replay: " in out and "rollout: " in out
    code, out, err = run_cli(["report", root, "--eval", root / "runs", "--out", tmp_path / "x.html"], capsys)
    assert code != 0 and len(err.strip().splitlines()) == 1 and "--eval" in err and "sigma_eval_report.json" in err
    assert not (tmp_path / "x.html").exists()


def test_a_directory_with_nothing_to_show_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(["report", tmp_path / "empty", "--out", tmp_path / "r.html"], capsys)
    assert code != 0 and len(err.strip().splitlines()) == 1 and "rollouts.json" in err


def test_a_quick_demo_page_says_it_is_a_smoke_test_and_base_rows_show_no_tau(tmp_path):
    root = _demo_dir(tmp_path / "demo")
    (root / "demo.json").write_text(json.dumps({"quick": True}))
    page = build_report(root, tmp_path / "r.html").read_text()
    assert "Smoke test" in page and "do not say whether Sigma helps" in page
    sigma_table = page.split("mean ||tau||")[1].split("</table>")[0]
    assert "Sigma" in sigma_table and "base (untuned)" not in sigma_table  # tau is Sigma's only
    assert page.count("<h3>CHECK B") == 1 and "CHECK A" in page and page.count('class="says"') >= 5
    assert "images loaded" in page.split("id='image-status' hidden>")[1]  # kept for the browser test, not shown
