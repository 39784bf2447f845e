"""Metadata of the wrong type or range, and option values out of range: one line naming the file and the field,
exit 2, no traceback, nothing written. Each case mutates a copy of the real SO-101
recording; `sigma prep` is the command (its reader is the one every command uses)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import run_cli

INFO, DATA = "meta/info.json", "data/chunk-000/file-000.parquet"
EPISODES = "meta/episodes/chunk-000/file-000.parquet"


def _info(root: Path, fn) -> None:
    path = root / INFO
    info = json.loads(path.read_text())
    fn(info)
    path.write_text(json.dumps(info))  # json writes NaN as NaN, which json.loads reads back: a real-world case


def _set(key: str, value):
    return lambda root: _info(root, lambda i: i.update({key: value}))


def _feature(name: str, **changes):
    return lambda root: _info(root, lambda i: i["features"][name].update(changes))


def _column(rel: str, name: str, convert) -> callable:
    def mutate(root: Path) -> None:
        table = pq.read_table(root / rel)
        col = convert(table.column(name).to_pylist())
        pq.write_table(table.set_column(table.column_names.index(name), name, pa.array(col)), root / rel)
    return mutate


def _raw(text: bytes):
    return lambda root: (root / INFO).write_bytes(text)


def _replace_with_directory(root: Path) -> None:
    (root / DATA).unlink()
    (root / DATA).mkdir()


CASES = {
    # name: (mutation, expected file part, expected phrase in the one line)
    "info_is_a_list": (_raw(b"[1, 2]"), INFO, "must be a JSON object, got list"),
    "info_is_a_string": (_raw(b'"v3.0"'), INFO, "must be a JSON object, got str"),
    "info_is_null": (_raw(b"null"), INFO, "must be a JSON object, got null"),
    "info_not_utf8": (_raw(b'{"fps": "\xff\xfe"}'), INFO, "not UTF-8"),
    "fps_zero": (_set("fps", 0), INFO, "field 'fps': must be > 0"),
    "fps_negative": (_set("fps", -30), INFO, "field 'fps': must be > 0"),  # was blamed on 'timestamp'
    "fps_string": (_set("fps", "30"), INFO, "field 'fps': must be a number"),
    "fps_null": (_set("fps", None), INFO, "field 'fps': must be a number"),
    "fps_list": (_set("fps", [30]), INFO, "field 'fps': must be a number"),
    "fps_nan": (_set("fps", float("nan")), INFO, "field 'fps': must be a finite number"),
    "robot_type_number": (_set("robot_type", 7), INFO, "field 'robot_type'"),
    "chunks_size_zero": (_set("chunks_size", 0), INFO, "field 'chunks_size'"),
    "splits_not_object": (_set("splits", "0:4"), INFO, "field 'splits'"),
    "shape_empty": (_feature("action", shape=[]), INFO, "field 'features.action.shape'"),
    "shape_word": (_feature("action", shape=["six"]), INFO, "field 'features.action.shape': must be an integer"),
    "dtype_text": (_feature("observation.state", dtype="string"), INFO, "field 'features.observation.state'"),
    "feature_is_a_string": (lambda r: _info(r, lambda i: i["features"].update({"observation.state": "float32"})),
                            INFO, "field 'features.observation.state': must be a JSON object"),
    "data_path_unknown_placeholder": (_set("data_path", "data/{chunk}/file-{file_index:03d}.parquet"), INFO,
                                      "field 'data_path': unknown placeholder {chunk}"),
    "data_path_absolute": (_set("data_path", "/etc/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"), INFO,
                           "field 'data_path': must be relative"),
    "data_path_leaves_the_root": (_set("data_path", "../x/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"),
                                  INFO, "field 'data_path': leaves the dataset root"),
    "video_path_bad_spec": (_set("video_path", "videos/{video_key}/{chunk_index:xyz}.mp4"), INFO,
                            "field 'video_path': bad format"),
    "action_strings": (_column(DATA, "action", lambda rows: [[str(v) for v in r] for r in rows]), DATA,
                       "field 'action': column of list<element: string> values"),
    "length_strings": (_column(EPISODES, "length", lambda rows: [str(v) for v in rows]), EPISODES,
                       "field 'length': must be an integer"),
    "task_index_not_in_tasks": (_column(DATA, "task_index", lambda rows: [5] * len(rows)), DATA,
                                "field 'task_index': task_index 5"),
    "data_file_is_a_directory": (_replace_with_directory, DATA, "is a directory"),  # was "absent from the data"
}


def _error_line(err: str) -> str:
    lines = [ln for ln in re.split(r"[\r\n]", err) if ln.strip() and not re.search(r"\|.*\[", ln)]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_metadata_is_one_line_naming_file_and_field(case, real_v30, tmp_path, capsys):
    mutate, file_part, phrase = CASES[case]
    mutate(real_v30)
    code, _, err = run_cli(["prep", real_v30, "--out", tmp_path / "s", "--state-only"], capsys)
    line = _error_line(err)
    assert code == 2 and f"{file_part}: " in line and phrase in line, line
    assert not (tmp_path / "s").exists()
    if case in ("fps_zero", "shape_word", "data_path_leaves_the_root"):  # inspect reads through the same schema
        code, _, err = run_cli(["inspect", real_v30], capsys)
        assert code == 2 and phrase in _error_line(err)


@pytest.mark.parametrize("args, field", [
    (["--seed", "-1"], "--seed"),
    (["--split", "train:nan,val:0.5,test:0.5"], "--split"),
    (["--min-action-norm", "nan"], "--min-action-norm"),
    (["--min-action-norm", "inf"], "--min-action-norm"),
    (["--min-action-norm", "1e9"], "--min-action-norm"),  # finite, but drops every window: 0 windows is no result
])
def test_bad_option_values_are_one_line_and_write_nothing(args, field, real_v30, tmp_path, capsys):
    code, _, err = run_cli(["prep", real_v30, "--out", tmp_path / "s", "--state-only", *args], capsys)
    line = _error_line(err)
    assert code == 2 and f"field '{field}'" in line, line
    assert not (tmp_path / "s").exists()


def test_corrupt_meta_json_in_out(real_v30, tmp_path, capsys):
    out = tmp_path / "s"
    assert run_cli(["prep", real_v30, "--out", out, "--state-only"], capsys)[0] == 0
    (out / "meta.json").write_text('{"status": "compl')
    code, _, err = run_cli(["prep", real_v30, "--out", out, "--state-only"], capsys)
    assert code == 2 and "meta.json" in _error_line(err)
    assert (out / "meta.json").read_text() == '{"status": "compl'


def test_truncated_shard_on_resume_is_named(real_v30, tmp_path, capsys):
    out = tmp_path / "s"
    assert run_cli(["prep", real_v30, "--out", out, "--state-only", "--shard-size", "300"], capsys)[0] == 0
    meta = json.loads((out / "meta.json").read_text())
    (out / "meta.json").write_text(json.dumps({**meta, "status": "in_progress"}))  # as a killed prep leaves it
    shard = out / "shard_00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:1000])
    code, _, err = run_cli(["prep", real_v30, "--out", out, "--state-only", "--shard-size", "300"], capsys)
    line = _error_line(err)
    assert code == 2 and "shard_00001.safetensors" in line and "truncated" in line, line


def test_data_path_outside_the_root_is_never_read(real_v30, tmp_path, capsys):
    """The refusal is not cosmetic: a dataset whose template points at a readable file outside it still fails."""
    outside = real_v30.parent / "x" / "chunk-000" / "file-000.parquet"
    outside.parent.mkdir(parents=True)
    shutil.copy(real_v30 / DATA, outside)
    _set("data_path", "../x/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet")(real_v30)
    code, _, err = run_cli(["prep", real_v30, "--out", tmp_path / "s", "--state-only"], capsys)
    assert code == 2 and "leaves the dataset root" in _error_line(err)
