"""`sigma prep` keeps the recording's frame size unless asked otherwise, and says so when asked to upscale."""

from __future__ import annotations

from tests.conftest import run_cli
from tests.data.minidataset import write_mini_dataset


def test_prep_keeps_the_recordings_size_and_warns_in_one_line_when_asked_to_upscale(tmp_path, capsys):
    root = write_mini_dataset(tmp_path / "ds", "v3.0", (8, 8), size=16)
    code, out, err = run_cli(["prep", root, "--out", tmp_path / "native", "--horizon", "4", "--chunk", "2"], capsys)
    assert code == 0, err
    assert "16 x 16 px frames" in out and "warning" not in err

    code, out, err = run_cli(["prep", root, "--out", tmp_path / "big", "--horizon", "4", "--chunk", "2",
                              "--image-size", "32"], capsys)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "upscaled" in warnings[0] and "16x16" in warnings[0], err
    assert "32 x 32 px frames" in out
