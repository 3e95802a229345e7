"""Plain `dvc repro` against `lossbench run` of the same commit, on this machine.

    python benchmarks/engine.py                  # the committed params: about 13 minutes on 2 cores
    python benchmarks/engine.py -S data.dataset=synthetic -S data.synthetic.train_size=300 \
        -S data.synthetic.test_size=100 -S train.epochs=1 -S 'seeds=[1,2]'   # a quick check

Both run in fresh copies of this working tree (a new git + DVC repository each,
the given -S applied and committed, empty DVC caches, an empty results remote),
one after the other. Prints both wall times, their ratio, and the overheads
`lossbench run` adds that can be timed apart: process starts, the Dask cluster,
each task's clone / `dvc repro --pull` / push, and the local finish from the run-cache.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import mean

from rich.console import Console

from lossbench.engine import RunSummary, apply_point, grid_points, run_on_dask

PROJECT = Path(__file__).resolve().parents[1]
ENV = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def run(cwd: Path, *command: str) -> float:
    """Seconds `command` took; its output is discarded, a failure stops the benchmark."""
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed in {cwd}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return time.perf_counter() - started


def fresh_project(root: Path, point: tuple[str, ...]) -> Path:
    """This working tree's pipeline (code, dvc.yaml, params, git-tracked raw data) as a new repository."""
    tracked = subprocess.run(
        ["git", "ls-files", "--", "data/raw"], cwd=PROJECT, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in ("src/lossbench", "dvc.yaml", "params.yaml", ".gitignore", *tracked):
        source, target = PROJECT / name, root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, target)
    run(root, "git", "init", "-q")
    run(root, "git", "config", "user.email", "bench@example.com")
    run(root, "git", "config", "user.name", "bench")
    run(root, "dvc", "init", "-q")
    shutil.copy(PROJECT / ".dvc" / "config", root / ".dvc" / "config")  # the shipped remote, ../dvc-remote
    shutil.copytree(PROJECT / ".dvc" / "plots", root / ".dvc" / "plots")
    apply_point(root / "params.yaml", point)
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "benchmark")
    return root


def process_starts(root: Path) -> dict[str, float]:
    """What starting one of the processes a task starts costs (best of 3)."""
    commands = {
        "git (rev-parse)": ["git", "rev-parse", "HEAD"],
        "dvc (config)": ["dvc", "config", "core.remote"],
        "python + lossbench": [sys.executable, "-m", "lossbench", "--version"],
        "python + torch": [sys.executable, "-c", "import torch"],
    }
    return {name: min(run(root, *command) for _ in range(3)) for name, command in commands.items()}


def cluster_start() -> float:
    from distributed import Client, LocalCluster

    started = time.perf_counter()
    with LocalCluster(threads_per_worker=1, dashboard_address=None) as cluster, Client(cluster) as client:
        client.wait_for_workers(len(cluster.workers))
        return time.perf_counter() - started


def report(
    plain_s: float, engine_s: float, summary: RunSummary, starts: dict[str, float], cluster_s: float
) -> None:
    tasks = summary.tasks
    training = [float(s) for task in tasks for s in re.findall(r"\(([\d.]+)s of training\)", task.log)]
    print(f"\nplain `dvc repro`:   {plain_s:7.1f} s")
    print(f"`lossbench run`:     {engine_s:7.1f} s   ratio {engine_s / plain_s:.2f} (run / repro)")
    print(f"  Dask tasks:        {summary.dask_s:7.1f} s   {len(tasks)} tasks on {summary.workers} workers")
    print(
        f"  finish here:       {summary.finish_s:7.1f} s   run-cache pull + dvc repro (validate, prepare, publish, report)"
    )
    print("per task (mean / sum):")
    for name, values in (
        ("clone + checkout + remote", [task.clone_s for task in tasks]),
        ("dvc repro --pull", [task.repro_s for task in tasks]),
        ("  of which training", training),
        ("push (outputs, run-cache)", [task.push_s for task in tasks]),
    ):
        print(f"  {name:27} {mean(values or [0]):6.1f} s / {sum(values):7.1f} s")
    print("process starts (best of 3):")
    for name, seconds in starts.items():
        print(f"  {name:27} {seconds:6.2f} s")
    print(f"  {'LocalCluster start + stop':27} {cluster_s:6.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-S", "--set-param", action="append", default=[], help="KEY=VALUE, as dvc exp run -S")
    parser.add_argument("--keep", action="store_true", help="keep the two projects (their folder is printed)")
    options = parser.parse_args()
    points = grid_points(options.set_param)
    if len(points) != 1:
        sys.exit("give one value per key: the benchmark runs one configuration")
    work = Path(tempfile.mkdtemp(prefix="lossbench-bench-"))
    try:
        plain = fresh_project(work / "plain", points[0])
        engine = fresh_project(work / "engine", points[0])
        print(f"projects in {work}; plain `dvc repro` ...", flush=True)
        plain_s = run(plain, "dvc", "repro")
        print("`lossbench run` ...", flush=True)
        started = time.perf_counter()
        summary = run_on_dask(engine, [], Console(file=open(os.devnull, "w")))  # noqa: SIM115
        engine_s = time.perf_counter() - started
        published = [path.relative_to(plain) for path in (plain / "metrics").rglob("*.json")]
        same = all((plain / path).read_bytes() == (engine / path).read_bytes() for path in published)
        report(plain_s, engine_s, summary, process_starts(engine), cluster_start())
        print(f"metrics/ and metrics/details/ byte for byte the same: {'yes' if same else 'NO'}")
    finally:
        if options.keep:
            print(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
