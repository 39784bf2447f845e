"""LeRobot v3.0 writer on synthetic episodes: layout and schemas against the real fixture, totals, stats,
video timing, atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sigma_vla.data.lerobot_stats import channel_histogram, image_stats_from_histogram, numeric_stats
from sigma_vla.data.lerobot_writer import DatasetSpec, EpisodeRecord, LeRobotV30Writer, check_output_dir
from sigma_vla.errors import SigmaError
from tests.conftest import FIXTURE

CAM = "observation.images.front"
FPS = 10
SIZE = 32
LENGTHS = (7, 12, 5)
EPISODES_FILE = "meta/episodes/chunk-000/file-000.parquet"
DATA_FILE = "data/chunk-000/file-000.parquet"
VIDEO_FILE = f"videos/{CAM}/chunk-000/file-000.mp4"


def level(episode: int, i: int) -> int:
    """Gray level of frame i of an episode, so decoded pixels tell which frame came back."""
    return (30 + 9 * i + 70 * episode) % 230


def make_episode(e: int, n: int) -> EpisodeRecord:
    frames = np.stack([np.full((SIZE, SIZE, 3), level(e, i), np.uint8) for i in range(n)])
    state = np.arange(n * 3, dtype=np.float32).reshape(n, 3) + e
    action = np.linspace(-1, 1, n * 2, dtype=np.float32).reshape(n, 2)
    return EpisodeRecord(state, action, {CAM: frames}, task=f"task {e % 2}", extra={"sigma/zone": f"z{e}"})


def spec(codec: str = "h264") -> DatasetSpec:
    return DatasetSpec(fps=FPS, robot_type="test", state_names=("a", "b", "c"), action_names=("x", "y"),
                       camera_keys=(CAM,), image_size=(SIZE, SIZE), codec=codec,
                       extra_columns=(("sigma/zone", pa.string()),))


def write(out: Path, codec: str = "h264") -> Path:
    with LeRobotV30Writer(out, spec(codec)) as w:
        for e, n in enumerate(LENGTHS):
            w.add_episode(make_episode(e, n))
        return w.finish()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write(tmp_path_factory.mktemp("w") / "ds")


def test_schemas_match_the_real_fixture_for_shared_columns(dataset):
    for rel in ("meta/tasks.parquet", EPISODES_FILE, DATA_FILE):
        ours, real = pq.read_schema(dataset / rel), pq.read_schema(FIXTURE / rel)
        shared = [n for n in real.names if n in ours.names]
        assert len(shared) >= len(real.names) // 2, rel
        for name in shared:
            a, b = ours.field(name).type, real.field(name).type
            if pa.types.is_fixed_size_list(b):  # vector widths differ (our state is 14-dim), layout must not
                assert pa.types.is_fixed_size_list(a) and a.value_type == b.value_type, (rel, name)
            else:
                assert a == b, (rel, name, a, b)
    pandas_meta = json.loads(pq.read_schema(dataset / "meta/tasks.parquet").metadata[b"pandas"])
    assert pandas_meta["index_columns"] == ["__index_level_0__"]
    assert b"huggingface" in pq.read_schema(dataset / DATA_FILE).metadata


def test_info_json_mirrors_the_fixture_and_totals_add_up(dataset):
    info = json.loads((dataset / "meta/info.json").read_text())
    real = json.loads((FIXTURE / "meta/info.json").read_text())
    assert list(info) == list(real)
    assert info["codebase_version"] == "v3.0" and info["fps"] == FPS
    for key in ("data_path", "video_path", "chunks_size"):
        assert info[key] == real[key]
    assert info["total_episodes"] == len(LENGTHS) and info["total_frames"] == sum(LENGTHS)
    assert info["total_tasks"] == 2 and info["splits"] == {"train": f"0:{len(LENGTHS)}"}
    assert set(info["features"][CAM]["info"]) == set(real["features"]["observation.images.front"]["info"])
    assert info["features"][CAM]["info"]["video.codec"] == "h264"
    data = pq.read_table(dataset / DATA_FILE)
    eps = pq.read_table(dataset / EPISODES_FILE).to_pylist()
    assert len(data) == info["total_frames"] and data.column("index").to_pylist() == list(range(sum(LENGTHS)))
    assert [e["length"] for e in eps] == list(LENGTHS)
    assert [e["sigma/zone"] for e in eps] == ["z0", "z1", "z2"]
    task_rows = pq.read_table(dataset / "meta/tasks.parquet").to_pylist()
    tasks = {r["__index_level_0__"]: r["task_index"] for r in task_rows}
    for e in eps:
        rows = data.slice(e["dataset_from_index"], e["length"]).to_pydict()
        assert set(rows["episode_index"]) == {e["episode_index"]}
        assert rows["frame_index"] == list(range(e["length"]))
        assert set(rows["task_index"]) == {tasks[e["tasks"][0]]}
        np.testing.assert_allclose(rows["timestamp"], np.arange(e["length"]) / FPS, atol=1e-6)


def test_stats_have_lerobot_keys_and_shapes(dataset):
    stats = json.loads((dataset / "meta/stats.json").read_text())
    real = json.loads((FIXTURE / "meta/stats.json").read_text())
    assert set(stats["action"]) == set(real["action"])
    assert np.asarray(stats[CAM]["mean"]).shape == (3, 1, 1)
    assert stats[CAM]["count"] == [sum(LENGTHS)]  # every frame sampled below 100 frames an episode
    assert stats["observation.state"]["count"] == [sum(LENGTHS)]
    levels = np.array([level(e, i) for e, n in enumerate(LENGTHS) for i in range(n)]) / 255
    assert abs(stats[CAM]["mean"][0][0][0] - levels.mean()) < 0.02  # codec-free stats from the raw frames


def test_histogram_stats_equal_numpy():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    s = image_stats_from_histogram(channel_histogram(frames), 5)
    px = frames.reshape(-1, 3).astype(np.float64) / 255
    ref = numeric_stats(px)
    for key in ("min", "max", "mean", "std", "q01", "q10", "q50", "q90", "q99"):
        np.testing.assert_allclose(s[key].reshape(3), ref[key], atol=1e-9, err_msg=key)


@pytest.mark.parametrize("codec", ["h264", "av1"])
def test_video_frames_decode_at_from_timestamp_plus_timestamp(tmp_path, codec):
    out = write(tmp_path / "ds", codec)
    eps = pq.read_table(out / EPISODES_FILE).to_pylist()
    with av.open(str(out / VIDEO_FILE)) as c:
        decoded = [(f.time, int(f.to_ndarray(format="rgb24").mean())) for f in c.decode(c.streams.video[0])]
    assert len(decoded) == sum(LENGTHS)
    times = np.array([t for t, _ in decoded])
    for e, ep in enumerate(eps):
        start = ep[f"videos/{CAM}/from_timestamp"]
        assert ep[f"videos/{CAM}/to_timestamp"] == pytest.approx(start + LENGTHS[e] / FPS)
        for i in range(LENGTHS[e]):
            want = ep[f"videos/{CAM}/from_timestamp"] + i / FPS
            j = int(np.argmin(np.abs(times - want)))
            assert abs(times[j] - want) < 0.5 / FPS
            assert abs(decoded[j][1] - level(e, i)) <= 3, (codec, e, i)


def test_refuses_a_non_empty_out_and_leaves_it_alone(tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(SigmaError, match="not empty") as err:
        LeRobotV30Writer(out, spec())
    assert str(out) in str(err.value)
    assert (out / "mine.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
    (tmp_path / "empty").mkdir()
    check_output_dir(tmp_path / "empty")  # an empty dir is fine


def test_failure_leaves_no_trace(tmp_path):
    with pytest.raises(SigmaError, match="extra"):
        with LeRobotV30Writer(tmp_path / "ds", spec()) as w:
            w.add_episode(make_episode(0, 4))
            w.add_episode(EpisodeRecord(np.zeros((2, 3), np.float32), np.zeros((2, 2), np.float32),
                                        {CAM: np.zeros((2, SIZE, SIZE, 3), np.uint8)}, "t"))
    assert list(tmp_path.iterdir()) == []


def test_bad_spec_is_a_sigma_error():
    with pytest.raises(SigmaError, match="codec"):
        DatasetSpec(fps=10, robot_type="r", state_names=("a",), action_names=("b",), camera_keys=(CAM,),
                    image_size=(32, 32), codec="mjpeg")


def test_a_killed_writers_temp_dir_is_cleaned_and_datasets_are_readable(tmp_path):
    """`record` killed with kill -9 left `.NAME.tmp-XXXX` beside --out that reruns never cleaned, and datasets got
    mode 0700 (mkdtemp's). A rerun removes a temp dir whose writer is gone; anything else of that name stays."""
    import os
    import stat
    import subprocess
    import sys

    from sigma_vla.data.lerobot_writer import WRITER_PID

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale, foreign = tmp_path / ".ds.tmp-abcd1234", tmp_path / ".ds.tmp-user"
    stale.mkdir()
    (stale / WRITER_PID).write_text(dead.stdout.strip())
    (stale / "data.parquet").write_bytes(b"half")
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    old = os.umask(0o022)
    try:
        out = write(tmp_path / "ds")
    finally:
        os.umask(old)
    assert not stale.exists() and (foreign / "notes.txt").read_text() == "mine"
    assert stat.S_IMODE(out.stat().st_mode) == 0o755 and not (out / WRITER_PID).exists()
