"""`accelerate launch --cpu --num_processes N`: start the N CPU processes that accelerate 1.x leaves to mpirun.

accelerate 1.x hands `--cpu` jobs to its simple launcher, which starts several processes only through mpirun
(`--mpirun_hostfile`). Without it, `--cpu --num_processes 2` starts ONE copy of the program, with MASTER_ADDR set
and no WORLD_SIZE, and the run silently trains alone. Here that one copy reads N from the launcher's own command line
(parsed by accelerate's own parser) and starts the N workers with torch's elastic launcher, as `--multi_gpu` does;
the workers join one gloo process group through accelerate as usual.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

_WORKER_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def _launcher_args(cmdline: list[str]):
    """accelerate's parsed arguments from the command line of `accelerate launch ...`, or None if it is not one."""
    from accelerate.commands.launch import launch_command_parser

    for i, part in enumerate(cmdline):
        if part == "launch" or part.endswith("accelerate.commands.launch"):
            try:
                return launch_command_parser().parse_args(cmdline[i + 1 :])
            except SystemExit:
                return None
    return None


def requested_cpu_processes() -> int:
    """How many CPU processes `accelerate launch --cpu` asked for when it started only this one (else 1)."""
    if os.environ.get("ACCELERATE_USE_CPU", "").lower() not in ("1", "true"):
        return 1
    if any(v in os.environ for v in _WORKER_VARS) or "MASTER_ADDR" not in os.environ:
        return 1  # already one of several workers, or a 1-process launch (accelerate sets MASTER_ADDR only for N > 1)
    import psutil  # an accelerate dependency

    try:
        args = _launcher_args(psutil.Process(os.getppid()).cmdline())
    except (OSError, psutil.Error):
        return 1
    if args is None or not args.num_processes or args.num_processes < 2:
        return 1
    if (args.num_machines or 1) > 1:
        raise ValueError("accelerate launch --cpu over several machines needs mpirun (--mpirun_hostfile)")
    return args.num_processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_workers(processes: int, argv: list[str]) -> int:
    """Run `python -m madx_core argv` as `processes` workers of one gloo group on this machine; their exit code."""
    port = os.environ.get("MASTER_PORT", "29500")
    if port in ("", "0", "29500"):  # accelerate's default port is often taken by another run on the machine
        port = str(_free_port())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(processes)]
    cmd += ["--master_addr", "127.0.0.1", "--master_port", port, "-m", "madx_core", *argv]
    return subprocess.run(cmd, env=os.environ.copy()).returncode
