"""A training process ends when the processes that started it die.

DVC runs a stage's command through a shell. `kill -9` of `dvc repro` kills
neither the shell nor the trainer, and the next `dvc repro` would race the
orphan on its checkpoint. So a stage watches its ancestors up to the dvc
process and stops itself (as SIGTERM would: checkpoint, exit) when one is
gone; its seed workers ask the kernel for SIGTERM when the stage dies.
Linux only (/proc, prctl); elsewhere nothing is watched.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _stat_fields(pid: int) -> list[str] | None:
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces; fields follow the last ')'.
    return stat[stat.rindex(")") + 2 :].split()


def _identity(pid: int) -> str | None:
    """The process's start time: with the pid, it cannot be reused by another process."""
    fields = _stat_fields(pid)
    return fields[19] if fields else None


def _parent(pid: int) -> int:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else 0


def _dvc_arguments(pid: int) -> list[str] | None:
    """What follows `dvc` in the process's command line (`dvc repro -f`,
    `python -m dvc repro -f`: ['repro', '-f']); None if it is not dvc."""
    try:
        argv = [os.fsdecode(arg) for arg in (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")]
    except OSError:
        return None
    for position, arg in enumerate(argv[:3]):
        if Path(arg).name == "dvc":
            return [arg for arg in argv[position + 1 :] if arg]
    return None


def _is_dvc(pid: int) -> bool:
    return _dvc_arguments(pid) is not None


def watched_ancestors() -> list[tuple[int, str]]:
    """The parent, and when DVC runs this stage every ancestor up to the dvc process."""
    chain: list[tuple[int, str]] = []
    pid = os.getppid()
    under_dvc = "DVC_STAGE" in os.environ
    while pid > 1:
        identity = _identity(pid)
        if identity is None:
            break
        chain.append((pid, identity))
        if not under_dvc or _is_dvc(pid):
            break
        pid = _parent(pid)
    return chain


@dataclass(frozen=True)
class DvcProcess:
    """The dvc process that runs this stage."""

    arguments: list[str]  # after `dvc`: ['repro', '-f']
    started: float  # seconds since the epoch
    identity: str  # its pid and start time: no other process, before or after, has both


def dvc_process() -> DvcProcess | None:
    """The dvc process that runs this stage; None outside DVC."""
    chain = watched_ancestors()
    if "DVC_STAGE" not in os.environ or not chain:
        return None
    pid, start_ticks = chain[-1]
    arguments = _dvc_arguments(pid)
    if arguments is None:
        return None
    try:
        boot = next(
            float(line.split()[1])
            for line in (PROC / "stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, StopIteration, ValueError):
        return None
    return DvcProcess(arguments, boot + int(start_ticks) / os.sysconf("SC_CLK_TCK"), f"{pid}/{start_ticks}")


def stop_when_ancestors_die(interval_s: float = 1.0) -> None:
    """Send this process SIGTERM as soon as a watched ancestor has exited."""
    if not PROC.joinpath("self", "stat").exists():
        return
    chain = watched_ancestors()

    def watch() -> None:
        while all(_identity(pid) == identity for pid, identity in chain):
            time.sleep(interval_s)
        os.kill(os.getpid(), signal.SIGTERM)

    if chain:
        threading.Thread(target=watch, name="lossbench-lifeline", daemon=True).start()


def die_with_parent() -> None:
    """In a worker process: the kernel sends SIGTERM when the parent dies."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return  # not Linux
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)
