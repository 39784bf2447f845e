"""Make `accelerate launch --num_processes N --cpu ...` start N data-parallel CPU ranks.

Accelerate 1.15's `--cpu` launcher starts more than one process only under MPI (`--mpirun_hostfile`); without it,
it starts a single process (with MASTER_ADDR set and no WORLD_SIZE) and training silently runs on one rank. The
train command notices that situation and starts the N ranks itself through torch.distributed.run (what
`accelerate launch --multi_gpu` uses); each rank then sees WORLD_SIZE and ACCELERATE_USE_CPU, and Accelerate forms
a MULTI_CPU world over gloo. `accelerate launch --multi_gpu --num_processes N` on a machine without GPUs is the
equivalent that needs no such help.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

RESPAWNED = "SIGMA_VLA_CPU_RANKS"
WORLD_VARS = ("WORLD_SIZE", "LOCAL_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def requested_processes(argv: list[str]) -> int | None:
    """--num_processes of an `accelerate launch` command line (None if absent or malformed)."""
    for i, arg in enumerate(argv):
        for flag in ("--num_processes", "--num-processes"):
            if arg == flag and i + 1 < len(argv):
                value = argv[i + 1]
            elif arg.startswith(flag + "="):
                value = arg.split("=", 1)[1]
            else:
                continue
            return int(value) if value.isdigit() else None
    return None


def cpu_ranks_to_spawn(environ: dict[str, str] | None = None, parent_cmdline: list[str] | None = None) -> int | None:
    """N > 1 when this process is the lone process of `accelerate launch --cpu --num_processes N` without MPI."""
    env = os.environ if environ is None else environ
    if env.get("ACCELERATE_USE_CPU", "").lower() not in ("true", "1") or "MASTER_ADDR" not in env:
        return None
    if env.get(RESPAWNED) or any(v in env for v in WORLD_VARS):
        return None
    if parent_cmdline is None:
        try:
            raw = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
        except OSError:  # not Linux: nothing to read, train on one rank
            return None
        parent_cmdline = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    if "launch" not in parent_cmdline or "--cpu" not in parent_cmdline:
        return None
    if any(a.startswith("--mpirun_hostfile") for a in parent_cmdline):
        return None
    n = requested_processes(parent_cmdline)
    return n if n and n > 1 else None


def spawn_cpu_ranks(n: int, argv: list[str]) -> int:
    """Run `sigma ARGV` as n ranks under torch.distributed.run; returns its exit code."""
    env = dict(os.environ)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "--nnodes", "1",
           "--master_addr", env.get("MASTER_ADDR", "127.0.0.1"), "--master_port", env.get("MASTER_PORT", "29500"),
           "-m", "sigma_vla.cli.main", *argv]
    env[RESPAWNED] = str(n)
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.call(cmd, env=env)

