"""eval, rollout and report given something that is not a run: one line naming the path, exit 2, nothing written."""

from __future__ import annotations

import pytest

from tests.conftest import run_cli


@pytest.mark.parametrize("args, phrase", [
    (["eval", "{tmp}/nope", "{tmp}", "--out", "{tmp}/out"], "no trained model"),
    (["rollout", "{tmp}", "--out", "{tmp}/out"], "run.json missing"),
    (["report", "{tmp}/nope", "--out", "{tmp}/out/report.html"], "not found"),
])
def test_not_a_run_is_one_line(args, phrase, tmp_path, capsys):
    code, _, err = run_cli([a.format(tmp=tmp_path) for a in args], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and phrase in lines[0] and str(tmp_path) in lines[0]
    assert "Traceback" not in err and not (tmp_path / "out").exists()
