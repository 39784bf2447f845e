"""Data-parallel training on CPU: `accelerate launch --num_processes 2 --cpu` forms a 2-rank gloo world and both
ranks end with identical weights."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from fake_shards import write_fake_shards

from sigma_vla.cli.launch import cpu_ranks_to_spawn, requested_processes

LAUNCH = ["launch", "--num_processes", "2", "--cpu", "-m", "sigma_vla.cli.main", "train"]


def test_requested_processes_parsing():
    assert requested_processes(["accelerate", "launch", "--num_processes", "3"]) == 3
    assert requested_processes(["accelerate", "launch", "--num_processes=4", "--cpu"]) == 4
    assert requested_processes(["accelerate", "launch", "--cpu"]) is None


def test_only_the_lone_cpu_launch_respawns():
    env = {"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1"}
    parent = ["python", "accelerate", *LAUNCH]
    assert cpu_ranks_to_spawn(env, parent) == 2
    assert cpu_ranks_to_spawn({**env, "WORLD_SIZE": "2"}, parent) is None  # already a rank of a world
    assert cpu_ranks_to_spawn({**env, "SIGMA_VLA_CPU_RANKS": "2"}, parent) is None  # we spawned it
    assert cpu_ranks_to_spawn(env, ["python", "accelerate", "launch", "--num_processes", "1", "--cpu"]) is None
    assert cpu_ranks_to_spawn({"MASTER_ADDR": "127.0.0.1"}, parent) is None  # not --cpu
    assert cpu_ranks_to_spawn(env, [*parent, "--mpirun_hostfile", "hosts"]) is None  # MPI starts the ranks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_ranks_end_identical(tmp_path: Path):
    shards = write_fake_shards(tmp_path / "shards", n_train=24, n_val=4, with_base=True)
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--num_processes", "2", "--cpu", "--main_process_port", str(_free_port()),
           "-m", "sigma_vla.cli.main", "train", str(shards), "--out", str(tmp_path / "run"), "--config", "tiny",
           "--steps", "3", "--batch-size", "4", "--grad-accum", "2", "--no-progress"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 3
    assert len(summary["rank_weight_digests"]) == 2 and summary["ranks_identical"]
    saved = {p.name for p in (tmp_path / "run/checkpoints/step_000003").iterdir()}
    assert {"rng_rank0.json", "rng_rank1.json", "task_rank0.json", "task_rank1.json"} <= saved
