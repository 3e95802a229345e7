"""Where the test suite's time goes: which processes spend the CPU, under which tests.

    python benchmarks/suite_profile.py              # the README's pytest, about 10 min on 2 cores
    python benchmarks/suite_profile.py -m "not slow" tests/test_cli.py   # any pytest arguments
    SUITE_PROFILE_KEEP=DIR python benchmarks/suite_profile.py      # also keep the raw lines in DIR

Runs pytest with every Python process it starts (lossbench, dvc, the xdist, Dask and
queue workers) writing its own CPU time at exit, through a `sitecustomize` module put
first on PYTHONPATH, and each test's start and end through a small plugin. It prints the
wall time, each xdist worker's busy time, the CPU by command and by test. A process ended
by a signal writes nothing, and git's CPU is not counted, so the CPU totals are a lower
bound. Run nothing else on the machine meanwhile.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
from seed_unit import cpu_name

PROJECT = Path(__file__).resolve().parents[1]

# Loaded by every Python process started under the suite (PYTHONPATH is inherited).
SITECUSTOMIZE = """
import atexit, json, os, resource, sys

def _record():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    if not sys.argv:
        return
    program = os.path.basename(sys.argv[0])
    if program == "__main__.py":  # python -m PACKAGE
        program = os.path.basename(os.path.dirname(sys.argv[0]))
    # the program and its subcommand (dvc's has two words: `dvc exp show`)
    words = [program, *(word for word in sys.argv[1 : 3 if program == "dvc" else 2] if word[:1] != "-")]
    line = {"command": " ".join(words), "cpu_s": usage.ru_utime + usage.ru_stime,
            "test": os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]}
    try:
        with open(os.environ["SUITE_PROFILE_DIR"] + "/processes.jsonl", "a") as log:
            log.write(json.dumps(line) + "\\n")
    except OSError:  # a test's own file-size limit: that process goes uncounted, the test still passes
        pass

atexit.register(_record)
"""

# A pytest plugin: each test's worker and its start and end.
TIMELINE = """
import json, os, resource, time
import pytest

def _cpu(who):
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    start, own, children = time.time(), _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
    yield
    # The kernel's count: this worker's own CPU in the test, and that of every process it
    # started and waited for (with theirs): git and processes ended by a signal included.
    line = {"worker": os.environ.get("PYTEST_XDIST_WORKER", "master"), "test": item.nodeid,
            "start": start, "end": time.time(), "own_cpu_s": _cpu(resource.RUSAGE_SELF) - own,
            "children_cpu_s": _cpu(resource.RUSAGE_CHILDREN) - children}
    with open(os.environ["SUITE_PROFILE_DIR"] + "/tests.jsonl", "a") as log:
        log.write(json.dumps(line) + "\\n")
"""


def _idle_seconds() -> float:
    """Idle (and I/O-wait) time of all cores since boot, from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return (int(fields[4]) + int(fields[5])) / os.sysconf("SC_CLK_TCK")


def _sample_idle(samples: list[tuple[float, float]], stop: threading.Event) -> None:
    """Every half second, (wall time, idle core-seconds so far): where the cores sat idle."""
    while not stop.wait(0.5):
        samples.append((time.time(), _idle_seconds()))


def _idle_by_test(samples: list[tuple[float, float]], tests: pd.DataFrame) -> pd.Series:
    """Each interval's idle core-seconds shared among the tests running in it."""
    idle = pd.Series(0.0, index=tests["test"].unique())
    for (start, before), (end, after) in itertools.pairwise(samples):
        running = tests[(tests["start"] < end) & (tests["end"] > start)]["test"]
        for test in running:
            idle[test] += (after - before) / len(running)
    return idle


def main(pytest_arguments: list[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="suite-profile-") as folder:
        (Path(folder) / "sitecustomize.py").write_text(SITECUSTOMIZE)
        (Path(folder) / "suite_timeline.py").write_text(TIMELINE)
        path = os.pathsep.join(filter(None, [folder, os.environ.get("PYTHONPATH")]))
        env = os.environ | {"PYTHONPATH": path, "SUITE_PROFILE_DIR": folder}
        command = [sys.executable, "-m", "pytest", "-p", "suite_timeline", "-p", "no:cacheprovider", "-q"]
        samples: list[tuple[float, float]] = []
        stop = threading.Event()
        sampler = threading.Thread(target=_sample_idle, args=(samples, stop), daemon=True)
        started = time.perf_counter()
        sampler.start()
        result = subprocess.run([*command, *pytest_arguments], cwd=PROJECT, env=env, check=False)
        stop.set()
        wall_s = time.perf_counter() - started
        processes = pd.read_json(Path(folder) / "processes.jsonl", lines=True)
        tests = pd.read_json(Path(folder) / "tests.jsonl", lines=True)
        if keep := os.environ.get("SUITE_PROFILE_KEEP"):  # the raw lines, for a closer look
            Path(keep).mkdir(parents=True, exist_ok=True)
            for name in ("processes.jsonl", "tests.jsonl"):
                shutil.copy(Path(folder) / name, Path(keep) / name)

    tests["seconds"] = tests["end"] - tests["start"]
    print(f"\n{cpu_name()}; pytest exit {result.returncode}, {len(tests)} tests, {wall_s:.0f} s wall")
    workers = tests.groupby("worker").agg(busy_s=("seconds", "sum"), tests=("test", "count"))
    workers["last_end_s"] = tests.groupby("worker")["end"].max() - tests["start"].min()
    print(f"\nEach worker:\n{workers.round(0).to_string()}")
    print(f"\nCPU of the processes that reported: {processes['cpu_s'].sum():.0f} s")
    idle = _idle_by_test(samples, tests)
    print(f"Idle core-seconds while tests ran: {idle.sum():.0f} s (all cores, I/O wait included)")
    counted = tests["own_cpu_s"] + tests["children_cpu_s"]
    print(
        f"CPU the kernel counted for the tests (workers' own and waited-for children): {counted.sum():.0f} s"
    )
    # pytest and its xdist workers (command line `-c …`) run the in-process tests.
    outside = processes["test"] == ""
    processes.loc[outside, "command"] = "(pytest and its workers)"
    processes.loc[outside, "test"] = "(pytest and its workers)"
    by_command = processes.groupby("command")["cpu_s"].agg(cpu_s="sum", processes="count")
    print(f"\nBy command (top 20):\n{by_command.nlargest(20, 'cpu_s').round(1).to_string()}")
    by_test = processes.groupby("test")["cpu_s"].agg(cpu_s="sum", processes="count")
    by_test["wall_s"] = tests.set_index("test")["seconds"].reindex(by_test.index)
    print(
        f"\nBy test (top 25, CPU of its subprocesses):\n{by_test.nlargest(25, 'cpu_s').round(1).to_string()}"
    )
    kernel = tests.set_index("test")[["seconds", "own_cpu_s", "children_cpu_s"]].assign(
        cpu_s=counted.to_numpy()
    )
    print(f"\nBy test (top 30, CPU the kernel counted):\n{kernel.nlargest(30, 'cpu_s').round(1).to_string()}")
    print(
        f"\nIdle core-seconds by test (top 15, shared among the tests running):\n{idle.nlargest(15).round(1).to_string()}"
    )
    raise SystemExit(result.returncode)


if __name__ == "__main__":
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__.strip())  # every other argument goes to pytest
        raise SystemExit(0)
    main(sys.argv[1:])
