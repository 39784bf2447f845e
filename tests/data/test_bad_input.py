"""Bad input gets a one-line error naming the file and the field, exit code 2 (docs/reliability.md), no traceback,
and no partial output. Each case mutates a copy of the real SO-101 recording."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import run_cli

DATA = "data/chunk-000/file-000.parquet"


def _edit_info(root: Path, fn) -> None:
    path = root / "meta/info.json"
    info = json.loads(path.read_text())
    fn(info)
    path.write_text(json.dumps(info))


def _edit_data(root: Path, fn) -> None:
    path = root / DATA
    table = pq.read_table(path)
    pq.write_table(fn(table), path)


def _set_column(table: pa.Table, name: str, values: np.ndarray) -> pa.Table:
    if values.ndim == 2:
        arr = pa.FixedSizeListArray.from_arrays(pa.array(values.ravel(), pa.float32()), values.shape[1])
    else:
        arr = pa.array(values, table.schema.field(name).type)
    return table.set_column(table.column_names.index(name), name, arr)


def _col(table: pa.Table, name: str) -> np.ndarray:
    col = table.column(name).combine_chunks()
    if pa.types.is_fixed_size_list(col.type):
        return col.flatten().to_numpy().reshape(len(col), -1).copy()
    return col.to_numpy().copy()


def _nan_action(table):
    a = _col(table, "action")
    a[100, 2] = np.nan
    return _set_column(table, "action", a)


def _inf_state(table):
    s = _col(table, "observation.state")
    s[5, 0] = np.inf
    return _set_column(table, "observation.state", s)


def _shift_timestamp(table):
    t = _col(table, "timestamp")
    t[50] += 0.1  # three frames at 30 fps, far beyond half a frame
    return _set_column(table, "timestamp", t)


def _truncate(root: Path) -> None:
    path = root / DATA
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _empty(root: Path) -> None:
    path = next((root / "meta/episodes").rglob("*.parquet"))
    table = pq.read_table(path)
    pq.write_table(table.slice(0, 0), path)


CASES = {
    # name: (mutation of the dataset root, expected file part, expected field or phrase)
    "missing_info": (lambda r: (r / "meta/info.json").unlink(), "meta/info.json", "file not found"),
    "bad_version": (lambda r: _edit_info(r, lambda i: i.update(codebase_version="v1.6")), "meta/info.json",
                    "codebase_version"),
    "absent_feature": (lambda r: _edit_data(r, lambda t: t.drop_columns(["observation.state"])), DATA,
                       "observation.state"),
    "wrong_shape": (lambda r: _edit_info(r, lambda i: i["features"]["action"].update(shape=[7])), DATA,
                    "'action'"),
    "nan_action": (lambda r: _edit_data(r, _nan_action), DATA, "'action'"),
    "inf_state": (lambda r: _edit_data(r, _inf_state), DATA, "'observation.state'"),
    "truncated_parquet": (_truncate, DATA, "truncated"),
    "timestamp_off": (lambda r: _edit_data(r, _shift_timestamp), DATA, "'timestamp'"),
    "empty_dataset": (_empty, "meta", "empty dataset"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_prep_bad_input_one_line_error(case, real_v30, tmp_path, capsys):
    mutate, file_part, phrase = CASES[case]
    mutate(real_v30)
    out = tmp_path / "shards"
    code, _, err = run_cli(["prep", real_v30, "--out", out, "--state-only"], capsys)
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("scan", "prep"))]
    assert len(lines) == 1, err
    assert file_part in lines[0] and phrase in lines[0], lines[0]
    assert "Traceback" not in err
    assert not out.exists(), "a failed prep must leave no partial output"


def test_missing_videos_are_named(real_v30, tmp_path, capsys):
    code, _, err = run_cli(["prep", real_v30, "--out", tmp_path / "s"], capsys)
    assert code == 2
    assert "videos/observation.images.front/chunk-000/file-000.mp4" in err and "missing" in err
    code, out, _ = run_cli(["inspect", real_v30], capsys)
    assert code == 1
    assert out.count("video file missing") == 2  # each missing file once, by path, not once per episode


def test_corrupt_video(real_v30, tmp_path, capsys):
    for cam in ("front", "top"):
        path = real_v30 / f"videos/observation.images.{cam}/chunk-000/file-000.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x00not a video" * 100)
    code, _, err = run_cli(["prep", real_v30, "--out", tmp_path / "s"], capsys)
    assert code == 2 and "corrupt" in err and "file-000.mp4" in err and "Traceback" not in err
    assert not (tmp_path / "s").exists()


def test_short_episodes_are_skipped_and_counted(real_v30, tmp_path, capsys):
    # Episode lengths are 373, 374, 372, 373: a horizon of 373 leaves one episode too short.
    code, out, _ = run_cli(["prep", real_v30, "--out", tmp_path / "s", "--state-only", "--horizon", "373",
                            "--chunk", "8"], capsys)
    assert code == 0, out
    meta = json.loads((tmp_path / "s/meta.json").read_text())
    assert meta["windows"]["episodes_too_short"] == 1
    assert meta["num_samples"] == 1 + 2 + 0 + 1
    assert "1 episode(s) shorter than the horizon" in out


def test_refuses_foreign_files_and_keeps_them(real_v30, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    code, _, err = run_cli(["prep", real_v30, "--out", out, "--state-only"], capsys)
    assert code == 2 and "not ours" in err and str(out) in err
    assert (out / "notes.txt").read_text() == "precious"
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_bad_option_value(real_v30, tmp_path, capsys):
    code, _, err = run_cli(["prep", real_v30, "--out", tmp_path / "s", "--state-only", "--split", "train:0.5"],
                           capsys)
    assert code == 2 and "--split" in err and "sum" in err
