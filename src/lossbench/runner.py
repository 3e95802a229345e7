"""`lossbench repro`: the pipeline with its training stages run concurrently.

`dvc repro` runs one stage at a time. DVC releases its repository lock while a
stage's command runs, so separate `dvc repro --single-item train@NAME`
processes can train at once; DVC still records every stage in dvc.lock. This
runner runs prepare, then the training stages N at a time with the CPU cores
split between them, then a plain `dvc repro` for what is left (the report),
and checks that `dvc status` is clean at the end.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from lossbench.errors import LossbenchError, ParamsError, TrainingInterrupted
from lossbench.params import Params
from lossbench.storage import RunFiles

LOG_DIR = Path("logs")  # one log per stage of the last `lossbench repro`
# The training stage's per-epoch line, e.g. "  ce seed 2 epoch   7/30  lr 0.1 ...".
EPOCH_LINE = re.compile(r"seed (?P<seed>-?\d+) epoch\s+(?P<epoch>\d+)/(?P<epochs>\d+)")
# Seconds a stopped stage gets to checkpoint and exit before it is killed.
STOP_GRACE_S = 60.0


class PipelineFailed(LossbenchError):
    """A stage of `lossbench repro` failed; the others were stopped."""


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_jobs(params: Params, cores: int) -> int:
    """As many concurrent training stages as there are cores for their threads."""
    threads = params.train.threads or 1
    return max(1, min(len(params.losses), cores // threads))


@dataclass
class StageRun:
    """One `dvc repro` child process and what it has reported so far."""

    stage: str
    command: list[str]
    total_epochs: int = 0
    seeds: tuple[int, ...] = ()
    state: str = "waiting"  # waiting, running, ran, up to date, from run-cache, failed, stopped, not started
    epochs_done: int = 0
    last_line: str = ""
    seconds: float = 0.0
    lines: list[str] = field(default_factory=list)
    process: subprocess.Popen[str] | None = None
    reader: threading.Thread | None = None
    started: float = 0.0

    def take_line(self, line: str) -> None:
        self.lines.append(line)
        if line.strip():
            self.last_line = line.strip()
        match = EPOCH_LINE.search(line)
        if match and int(match["seed"]) in self.seeds:
            position = self.seeds.index(int(match["seed"]))
            self.epochs_done = position * int(match["epochs"]) + int(match["epoch"])
        if f"'{self.stage}'" not in line:
            return
        if "didn't change, skipping" in line:
            self.state = "up to date"
        elif "is cached - skipping run" in line:
            self.state = "from run-cache"


class Runner:
    def __init__(self, root: Path, console: Console, env: dict[str, str]) -> None:
        self.root = root
        self.console = console
        self.env = env
        self.live = console.is_terminal
        self.progress = Progress(
            TextColumn("{task.description:<22}"),
            BarColumn(bar_width=24),
            TextColumn("{task.fields[epochs]:>9}"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[line]}", style="dim"),
            console=console,
            disable=not self.live,
        )
        self.tasks: dict[str, TaskID] = {}

    def start(self, run: StageRun) -> None:
        log_path = self.root / LOG_DIR / f"{run.stage}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        run.process = subprocess.Popen(
            run.command,
            cwd=self.root,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,  # its own process group, so a stop reaches DVC's child too
        )
        run.state, run.started = "running", time.perf_counter()
        self.tasks[run.stage] = self.progress.add_task(
            run.stage, total=run.total_epochs or None, epochs="", line=""
        )
        run.reader = threading.Thread(target=self._read, args=(run, log_path), daemon=True)
        run.reader.start()

    def _read(self, run: StageRun, log_path: Path) -> None:
        assert run.process is not None and run.process.stdout is not None
        with log_path.open("w") as log:
            for raw in run.process.stdout:
                line = raw.rstrip("\n")
                log.write(raw)
                log.flush()
                run.take_line(line)
                if self.live:
                    done = f"{run.epochs_done}/{run.total_epochs}" if run.total_epochs else ""
                    self.progress.update(
                        self.tasks[run.stage],
                        completed=run.epochs_done,
                        epochs=done,
                        line=run.last_line[-70:],
                    )
                else:
                    self.console.print(Text(f"[{run.stage}] {line}"), soft_wrap=True)

    def finish(self, run: StageRun) -> int:
        """Wait for the child and its output; return its exit code."""
        assert run.process is not None and run.reader is not None
        code = run.process.wait()
        run.reader.join()
        run.seconds = time.perf_counter() - run.started
        if code == 0:
            if run.state not in ("up to date", "from run-cache"):
                run.state = "ran"
            self.progress.update(self.tasks[run.stage], completed=run.total_epochs, epochs="done")
        else:
            run.state = "stopped" if run.state == "stopping" else "failed"
        return code

    def stop(self, run: StageRun) -> None:
        """Ctrl-C for one stage: training checkpoints its epochs and exits; DVC records nothing."""
        if run.process is not None and run.process.poll() is None:
            run.state = "stopping"
            os.killpg(run.process.pid, signal.SIGINT)

    def run_pool(self, runs: list[StageRun], jobs: int) -> StageRun | None:
        """Run `runs` at most `jobs` at a time; on the first failure stop the
        rest and return the failed one."""
        waiting, running = list(runs), list[StageRun]()
        try:
            while waiting or running:
                while waiting and len(running) < jobs:
                    running.append(waiting.pop(0))
                    self.start(running[-1])
                time.sleep(0.2)
                for run in [r for r in running if r.process is not None and r.process.poll() is not None]:
                    running.remove(run)
                    if self.finish(run) != 0:
                        self.stop_all(running)
                        return run
        except KeyboardInterrupt:
            self.stop_all(running)
            raise
        return None

    def stop_all(self, running: list[StageRun]) -> None:
        for run in running:
            self.stop(run)
        deadline = time.perf_counter() + STOP_GRACE_S
        for run in running:
            assert run.process is not None
            try:
                run.process.wait(timeout=max(0.1, deadline - time.perf_counter()))
            except subprocess.TimeoutExpired:
                os.killpg(run.process.pid, signal.SIGKILL)
            self.finish(run)


def dvc_repro(*targets: str) -> list[str]:
    # --wait-for-lock: concurrent stages queue for DVC's short repository lock
    # (taken to check and record a stage, released while its command runs).
    return ["dvc", "--wait-for-lock", "repro", *targets]


def repro(params: Params, root: Path, console: Console, jobs: int | None = None) -> list[StageRun]:
    """Reproduce the pipeline with up to `jobs` training stages at once."""
    if not (root / "dvc.yaml").is_file():
        raise ParamsError(f"lossbench repro: no dvc.yaml in {root.resolve()}; run it in the project folder")
    cores = available_cores()
    jobs = jobs or default_jobs(params, cores)
    if jobs < 1:
        raise ParamsError(f"--jobs: {jobs} is not allowed; give 1 or more concurrent training stages")
    env = dict(os.environ)
    threads = params.train.threads
    if threads == 0:
        # train.threads: 0 means "all cores": give each concurrent stage its share.
        threads = max(1, cores // jobs)
        env["OMP_NUM_THREADS"] = str(threads)
    env.setdefault("COLUMNS", "200")  # one line per epoch in the logs, not wrapped at 80
    console.print(
        f"[bold]lossbench repro[/]: {len(params.losses)} training stages, {jobs} at a time, "
        f"{threads} thread(s) each, on {cores} cores; logs in {LOG_DIR}/"
    )

    runner = Runner(root, console, env)
    epochs = params.train.epochs * len(params.train.seeds)
    seeds = tuple(params.train.seeds)
    prepare = StageRun("prepare", dvc_repro("prepare"))
    trains = [
        StageRun(f"train@{name}", dvc_repro("--single-item", f"train@{name}"), epochs, seeds)
        for name in params.losses
    ]
    rest = StageRun("report", dvc_repro())  # everything still out of date: the report
    runs = [prepare, *trains, rest]
    started = time.perf_counter()
    failed: StageRun | None = None
    interrupted = False
    try:
        with runner.progress:
            for phase in ([prepare], trains, [rest]):
                failed = runner.run_pool(phase, jobs)
                if failed is not None:
                    break
    except KeyboardInterrupt:
        interrupted = True
    for run in runs:
        if run.state == "waiting":
            run.state = "not started"
    print_summary(runs, root, console, time.perf_counter() - started)
    if interrupted:
        raise TrainingInterrupted(
            "stopped; finished stages are recorded in dvc.lock and "
            "interrupted ones resume from their last epoch on the next run"
        )
    if failed is not None:
        tail = "\n".join(f"    {line}" for line in failed.lines[-12:])
        raise PipelineFailed(
            f"{failed.stage} failed (exit {failed.process.returncode if failed.process else '?'}); "
            f"the other stages were stopped. Its last lines (full log: {LOG_DIR}/{failed.stage}.log):\n{tail}"
        )
    status = subprocess.run(
        ["dvc", "status", "--quiet"], cwd=root, env=env, capture_output=True, text=True, check=False
    )
    if status.returncode != 0:
        raise PipelineFailed(
            f"the pipeline ran but `dvc status` is not clean:\n{status.stdout}{status.stderr}"
        )
    console.print("dvc status: data and pipelines are up to date")
    return runs


def print_summary(runs: list[StageRun], root: Path, console: Console, seconds: float) -> None:
    table = Table(title=f"lossbench repro: {seconds:.0f} s", title_justify="left")
    for column in ("stage", "result", "time", "final test acc"):
        table.add_column(column, justify="right" if column in ("time", "final test acc") else "left")
    style = {"failed": "red", "stopped": "yellow", "not started": "yellow"}
    for run in runs:
        accuracy = ""
        metrics_path = RunFiles.of(root, run.stage.removeprefix("train@")).metrics
        finished = run.state in ("ran", "up to date", "from run-cache")
        if run.stage.startswith("train@") and finished and metrics_path.is_file():
            final = json.loads(metrics_path.read_text())["final_test_acc"]
            accuracy = f"{final['mean']:.4f} ± {final['std']:.4f}"
        table.add_row(
            run.stage,
            Text(run.state, style=style.get(run.state, "")),
            f"{run.seconds:.1f} s" if run.seconds else "",
            accuracy,
        )
    console.print(table)
