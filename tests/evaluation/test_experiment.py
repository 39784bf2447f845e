"""`sigma experiment`: pooled rates over seeds with two-level bootstrap intervals, paired differences, the JSON a
researcher reads, and the command end to end (slow)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from sigma_vla.errors import SigmaError
from sigma_vla.evaluation import experiment as stats
from tests.conftest import run_cli


def _seeds(*rates: float, episodes: int = 100, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """One {metric: (E,) bool} per seed, each seed's in-zone rate exactly as given."""
    rng = np.random.default_rng(seed)
    out = []
    for r in rates:
        hits = np.zeros(episodes, bool)
        hits[rng.permutation(episodes)[: round(r * episodes)]] = True
        out.append({m: hits.copy() for m in stats.METRICS})
    return out


def test_pooled_rate_has_each_seed_and_an_interval_that_widens_when_seeds_disagree():
    agree, disagree = stats.rate(_seeds(0.5, 0.5, 0.5), "placed_in_zone"), stats.rate(_seeds(0.0, 0.5, 1.0),
                                                                                        "placed_in_zone")
    assert agree["rate"] == disagree["rate"] == 0.5 and agree["episodes"] == 300
    assert disagree["per_seed"] == [0.0, 0.5, 1.0]
    width = lambda r: r["ci95"][1] - r["ci95"][0]  # noqa: E731
    assert agree["ci95"][0] < 0.5 < agree["ci95"][1] and width(disagree) > 3 * width(agree)


def test_paired_difference_on_the_same_episodes():
    a = _seeds(0.6, 0.6, 0.6, seed=1)
    same = stats.paired_difference(a, a, "placed_in_zone")
    assert same["diff"] == 0.0 and same["ci95"] == [0.0, 0.0] and same["per_seed"] == [0.0, 0.0, 0.0]
    none = [{m: np.zeros(100, bool) for m in stats.METRICS} for _ in range(3)]
    d = stats.paired_difference(a, none, "success")
    assert d["diff"] == pytest.approx(0.6) and d["ci95"][0] > 0.45 and d["ci95"][1] < 0.75
    with pytest.raises(ValueError, match="different numbers of episodes"):
        stats.rate([*a[:2], {m: np.zeros(50, bool) for m in stats.METRICS}], "success")


def test_summary_has_every_policy_set_metric_and_difference():
    outcomes = {name: {s: _seeds(0.3, 0.4, 0.5, seed=i) for s in stats.SETS} for i, name in enumerate(stats.POLICIES)}
    summary = stats.summarize(outcomes)
    for name in stats.POLICIES:
        for s in stats.SETS:
            for m in stats.METRICS:
                assert set(summary["policies"][name][s][m]) >= {"rate", "ci95", "per_seed"}
    for label in ("sigma - control", "sigma - sigma_tau0"):
        for s in stats.SETS:
            assert set(summary["differences"][label][s]) == {"placed_in_zone", "success"}
            assert set(summary["differences"][label][s]["success"]) >= {"diff", "ci95"}
    text = stats.format_table(summary)
    assert "sigma_tau0" in text and "pts" in text


def test_episode_outcomes_follow_the_plan_order():
    rollouts = {"episodes_detail": [{"placed_in_zone": True, "success": False, "lifted": True},
                                    {"placed_in_zone": False, "success": False, "lifted": False}]}
    got = stats.episode_outcomes(rollouts)
    assert got["placed_in_zone"].tolist() == [True, False] and got["lifted"].tolist() == [True, False]


@pytest.mark.parametrize("option, value", [("--seeds", "0"), ("--episodes", "-1"), ("--workers", "0"),
                                           ("--steps", "0")])
def test_a_bad_option_is_one_line(option, value, tmp_path, capsys):
    code, _, err = run_cli(["experiment", tmp_path, "--base", tmp_path, "--out", tmp_path / "x", option, value],
                           capsys)
    assert code == 2 and f"field '{option}'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_shards_from_another_base_are_refused(tmp_path):
    from sigma_vla.cli.experiment import check_inputs

    shards, base = tmp_path / "shards", tmp_path / "base"
    shards.mkdir(), base.mkdir()
    (base / "config.json").write_text("{}")
    (base / "model.safetensors").write_bytes(b"x")
    (shards / "meta.json").write_text(json.dumps({"base_actions": {"fingerprint": "0" * 16}}))
    with pytest.raises(SigmaError, match="another base"):
        check_inputs(shards, base)
    (shards / "meta.json").write_text(json.dumps({}))
    with pytest.raises(SigmaError, match="no base actions"):
        check_inputs(shards, base)


def test_a_paraphrase_table_that_teaches_a_held_out_template_is_refused(tmp_path):
    from sigma_vla.cli.experiment import check_paraphrases
    from sigma_vla.sim.instructions import TEMPLATES

    seen = next(t for t in TEMPLATES if not t.held_out)
    held = next(t for t in TEMPLATES if t.held_out and t.zone == seen.zone)
    table = tmp_path / "table.jsonl"
    table.write_text(json.dumps({"task": seen.text, "text": "set it down over there"}) + "\n")
    check_paraphrases(table)
    table.write_text(table.read_text() + json.dumps({"task": seen.text, "text": held.text}) + "\n")
    with pytest.raises(SigmaError, match="held-out template") as err:
        check_paraphrases(table)
    assert held.text in err.value.one_line()


@pytest.mark.slow
def test_experiment_end_to_end_resumes_and_refuses_another_plan(tmp_path):
    """Two seeds of a tiny Sigma and control over a tiny base, two episodes per set; a rerun keeps every finished
    stage, and a rerun asking other episodes is refused in one line."""
    from sigma_vla.bases.actions import write_base_actions
    from sigma_vla.bases.policy import load_base_policy
    from sigma_vla.data.prep import PrepConfig, run_prep
    from sigma_vla.interop.fingerprint import fingerprint
    from sigma_vla.sim.instructions import GENERIC_INSTRUCTION
    from sigma_vla.sim.record import RecordConfig, record_dataset
    from sigma_vla.training.run import train_base

    record_dataset(RecordConfig(episodes=4, image_size=32, seed=3, codec="h264", paired=True), tmp_path / "ds",
                   progress=False)
    run_prep(tmp_path / "ds", tmp_path / "shards", PrepConfig(image_size=32, split="train:0.75,val:0.25",
                                                              base_task=GENERIC_INSTRUCTION), progress=False)
    train_base(tmp_path / "shards", tmp_path / "base", GENERIC_INSTRUCTION, steps=2, batch_size=8, progress=False)
    write_base_actions(tmp_path / "shards", load_base_policy(tmp_path / "base"), fingerprint(tmp_path / "base"),
                       source=str(tmp_path / "base"))
    cmd = [sys.executable, "-m", "sigma_vla.cli.main", "experiment", str(tmp_path / "shards"), "--base",
           str(tmp_path / "base"), "--out", str(tmp_path / "exp"), "--seeds", "2", "--episodes", "2", "--steps", "2",
           "--config", "tiny", "--max-steps", "15", "--workers", "1", "--no-progress"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    record = json.loads((tmp_path / "exp" / "experiment.json").read_text())
    for name in stats.POLICIES:
        assert len(record["policies"][name]["held-out"]["placed_in_zone"]["per_seed"]) == 2
    assert record["differences"]["sigma - sigma_tau0"]["seen"]["success"]["ci95"]
    assert (tmp_path / "exp" / "experiment.png").stat().st_size > 10_000
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and again.stdout.count("(done, skipped)") == 2 * 2 + 2 * 2 * 4 + 2, again.stdout
    other = subprocess.run([*cmd[:-1], "--episodes", "3", "--no-progress"], capture_output=True, text=True,
                           timeout=300)
    assert other.returncode == 2 and "field '--episodes'" in other.stderr and "Traceback" not in other.stderr
