"""`lossbench run`: the training stages of this commit, or of a grid of
experiments, as Dask tasks; then `dvc repro` here takes every one from DVC's run-cache.

A task trains one stage (train@NAME-SEED) in its own clone of the commit and
pushes the outputs and the run-cache record to a DVC remote (the results
remote). Nothing is shared but that remote, so a task can run on any machine
that reaches the repository and the remote, and a retried task starts clean.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import logging
import math
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from rich.console import Console

from lossbench.errors import LossbenchError, ParamsError, TrainingInterrupted, shown, shown_repr
from lossbench.params import parse_params, read_yaml
from lossbench.run_progress import CLONING, PROGRESS_TOPIC, PUSHING, RunProgress, stage_event

# The name the results remote gets in each clone, and here while the run finishes.
RESULTS_REMOTE = "lossbench-results"
# Dask resource: a worker trains one stage at a time, whatever its thread count.
TRAIN_SLOT = "train"
# How each batch system takes a job (dask-jobqueue's submit_command).
SUBMIT_COMMANDS = {"slurm": "sbatch", "pbs": "qsub", "sge": "qsub"}
# What `--scheduler` may name: distributed's own protocols (ucx needs a separate package,
# inproc reaches this process only).
SCHEDULER_PROTOCOLS = ("tcp", "tls", "ws", "wss")
# A job's memory: below a megabyte nothing runs (and dask-jobqueue fails under 1 KiB),
# above a petabyte it is a typo.
JOB_MEMORY_BYTES = (10**6, 10**15)
# `--wait-for-workers`: up to a week, a batch queue's longest usual wait.
MAX_WAIT_MINUTES = 7 * 24 * 60
# Seconds between two looks at the scheduler's workers while tasks wait (each lists them all).
WORKER_CHECK_S = 5
# Lines of a failed command's error output shown, each cut to ERROR_LINE_LIMIT characters.
ERROR_LINES = 12
ERROR_LINE_LIMIT = 200
# What DVC prints after every error, which says nothing about it.
DVC_TROUBLES = "Having any troubles? Hit us up at https://dvc.org/support"
# Bounds on what one run takes on: a task that always fails is tried MAX_RETRIES + 1 times
# at most, and each grid point is checked here and finished here with its own `dvc exp run`.
MAX_RETRIES = 10
MAX_GRID_POINTS = 100
# Held (an OS lock, gone with the process) while a run uses the repository's workspace.
RUN_LOCK = Path(".dvc") / "tmp" / "lossbench-run.lock"
# The results remote without --remote, when the repository's default remote is inside it
# (the shipped one): in .dvc/tmp, which DVC's own .gitignore keeps out of git.
LOCAL_RESULTS = Path(".dvc") / "tmp" / "lossbench-results"
# A cluster file's job_script_prologue: at most this many lines of at most this many characters.
MAX_PROLOGUE_LINES = 100
MAX_PROLOGUE_LINE = 1000
# How long the finish's `dvc` gets to stop after an interruption before it is killed.
STOP_GRACE_S = 60
# The files a finish changes in the workspace, put back as they were if it is interrupted.
RUN_FILES = ("params.yaml", "dvc.lock")
# The pipeline's inputs: an uncommitted change here would make the local finish train.
PIPELINE_INPUTS = ("params.yaml", "dvc.yaml", "src", "data/raw")
# A task's commands die with its worker (SIGTERM), so a killed worker leaves no orphan training.
WITH_LIFELINE = (
    "import os, sys; from lossbench.lifeline import die_with_parent; "
    "die_with_parent(); os.execvp(sys.argv[1], sys.argv[1:])"
)


class TaskFailed(LossbenchError):
    """A task or one of its commands failed: `summary` names the stage and the command,
    `output` holds the meaningful lines of the command's error output."""

    def __init__(self, summary: str, output: Sequence[str] = ()) -> None:
        super().__init__(summary, tuple(output))  # the arguments, for Dask to pickle it
        self.summary, self.output = summary, tuple(output)

    def __str__(self) -> str:
        return "\n".join([self.summary, *(f"  {line}" for line in self.output)])


@dataclass(frozen=True)
class StageTask:
    """One train@NAME-SEED stage, trained in a clone of `repo` at `commit` with `overrides` applied."""

    key: str  # its Dask task key
    stage: str
    repo: str
    commit: str
    remote: str
    overrides: tuple[str, ...]
    epochs: int


@dataclass(frozen=True)
class TaskResult:
    stage: str
    cached: bool  # the results remote already had it: nothing was trained
    clone_s: float  # clone, checkout, params and remote set up
    repro_s: float  # `dvc repro --pull` (validate and prepare included)
    push_s: float
    log: str  # what `dvc repro` printed


@dataclass(frozen=True)
class RunSummary:
    tasks: list[TaskResult]
    points: list[tuple[str, ...]]
    workers: int
    dask_s: float  # cluster start to the last task's result
    finish_s: float  # the local `dvc repro` / `dvc exp run`s


class ClusterSpec(BaseModel):
    """--cluster FILE: a dask-jobqueue cluster. One single-threaded Dask worker per core of each job."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    kind: Literal["slurm", "pbs", "sge"]
    jobs: int = Field(default=1, ge=1, le=10_000)
    cores: int = Field(ge=1, le=1024)  # per job
    memory: str  # per job, e.g. 16GB
    walltime: str | None = None
    queue: str | None = Field(default=None, pattern=r"^[\w.@+-]+$")
    account: str | None = Field(default=None, pattern=r"^[\w.@+-]+$")  # -A (Slurm, PBS) or -P (SGE)
    job_extra_directives: list[str] = []  # e.g. --gres=gpu:1, each its own #SBATCH / #PBS / #$ line
    interface: str | None = Field(default=None, pattern=r"^[\w.:-]+$")  # network interface, e.g. ib0
    # Shell lines the job runs before its workers start (module loads, activating the
    # environment): shell by design, as in a job script the user writes; one line each.
    job_script_prologue: list[str] = Field(default=[], max_length=MAX_PROLOGUE_LINES)
    # An existing folder where the batch system writes each job's output and errors; it lands
    # in a directive line, which the batch system reads without a shell: a plain path, made
    # absolute here.
    log_directory: str | None = Field(default=None, max_length=1000)

    @field_validator("memory")
    @classmethod
    def _byte_size(cls, value: str) -> str:
        from dask.utils import parse_bytes

        size = parse_bytes(value)  # ValueError names what it cannot read
        if not JOB_MEMORY_BYTES[0] <= size <= JOB_MEMORY_BYTES[1]:
            raise ValueError(f"{shown_repr(value)} is not a size from 1MB to 1PB per job, e.g. 16GB")
        return value

    @field_validator("walltime")
    @classmethod
    def _time_limit(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        # Slurm reads [D-]HH:MM:SS, HH:MM:SS, MM:SS or minutes; PBS and SGE the same without days.
        match = re.fullmatch(r"(?:([0-9]+)-)?([0-9]+)((?::[0-9]{2}){0,2})", value)
        if match is None or any(int(part) >= 60 for part in match[3].split(":")[1:]):
            raise ValueError(f"{shown_repr(value)} is not a time limit such as 01:30:00 ([D-]HH:MM:SS)")
        if not any(int(number) for number in re.findall(r"[0-9]+", value)):
            raise ValueError(f"{shown_repr(value)} is not a time limit: it is zero")
        if match[1] is not None and info.data.get("kind") != "slurm":
            batch_system = str(info.data.get("kind")).upper()
            raise ValueError(f"{shown_repr(value)} is not a time {batch_system} reads; give HH:MM:SS")
        return value

    @field_validator("interface")
    @classmethod
    def _network_interface(cls, value: str | None) -> str | None:
        # The scheduler listens on it here, so it must exist here (and on the compute nodes).
        import psutil

        if value is not None and value not in (names := sorted(psutil.net_if_addrs())):
            raise ValueError(
                f"{shown_repr(value)} is not a network interface of this machine; it has {', '.join(names)}"
            )
        return value

    @field_validator("job_extra_directives")
    @classmethod
    def _one_line_each(cls, values: list[str]) -> list[str]:
        # Each directive becomes a line of the job script: a line break would start a shell command.
        if any(re.search(r"[\x00-\x1f\x7f]", value) for value in values):
            raise ValueError("a directive holds a line break or control character")
        return values

    @field_validator("job_script_prologue")
    @classmethod
    def _shell_lines(cls, values: list[str]) -> list[str]:
        # One entry, one line of the script, as written: what the file shows is what runs.
        for number, value in enumerate(values, 1):
            if re.search(r"[\x00-\x08\x0a-\x1f\x7f]", value):
                raise ValueError(f"line {number} holds a line break or control character; give one line each")
            if len(value) > MAX_PROLOGUE_LINE:
                raise ValueError(f"line {number} is longer than {MAX_PROLOGUE_LINE} characters")
        return values

    @field_validator("log_directory")
    @classmethod
    def _existing_folder(cls, value: str | None) -> str | None:
        # An existing one: dask-jobqueue would create a missing one (and its parents) even
        # for --print-job-script, and a typo would leave folders behind.
        if value is not None and not re.fullmatch(r"[\w./+@,-]+", value):
            raise ValueError(
                f"{shown_repr(value)}: give a folder's path of letters, digits and . _ - / + @ , only "
                "(no spaces, ~ or $: a job script's directive lines are not read by a shell)"
            )
        if value is not None and not Path(value).is_dir():
            raise ValueError(
                f"{shown_repr(value)} is not a folder; create it first (every job writes its output there)"
            )
        # Absolute, links kept: a login node and the compute nodes may resolve a link apart.
        return None if value is None else os.path.abspath(value)


def load_cluster_spec(path: Path) -> ClusterSpec:
    try:
        return ClusterSpec.model_validate(read_yaml(path))
    except ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "(top level)"
        message = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        raise ParamsError(f"{path}: {shown(key)}: {message}") from None


def jobqueue_cluster(spec: ClusterSpec) -> Any:
    """The dask-jobqueue cluster `spec` describes; no job is submitted until it is scaled."""
    from dask_jobqueue.pbs import PBSCluster
    from dask_jobqueue.sge import SGECluster
    from dask_jobqueue.slurm import SLURMCluster

    kinds: dict[str, Any] = {"slurm": SLURMCluster, "pbs": PBSCluster, "sge": SGECluster}
    options = {
        "cores": spec.cores,
        "processes": spec.cores,  # one thread per worker process: one stage per core
        "memory": spec.memory,
        "walltime": spec.walltime,
        "queue": spec.queue,
        "project" if spec.kind == "sge" else "account": spec.account,
        "job_extra_directives": spec.job_extra_directives,
        "interface": spec.interface,
        "job_script_prologue": spec.job_script_prologue or None,  # none: Dask's configuration's
        "log_directory": spec.log_directory,
        "worker_extra_args": ["--resources", f"{TRAIN_SLOT}=1"],
        # Any free port for the scheduler's web server: Dask warns when 8787 is taken.
        "scheduler_options": {"dashboard_address": ":0"},
    }
    return kinds[spec.kind](**{key: value for key, value in options.items() if value is not None})


def job_script(cluster_file: Path) -> str:
    """The job script `lossbench run --cluster cluster_file` would submit; nothing is
    submitted. It names a scheduler that dask-jobqueue starts here (and closes again), so
    its address and port differ from run to run."""
    spec = load_cluster_spec(cluster_file)
    with _without_cancelled_tracebacks(), jobqueue_cluster(spec) as cluster:
        return str(cluster.job_script())


def grid_points(settings: Sequence[str]) -> list[tuple[str, ...]]:
    """`-S KEY=VALUES` as `dvc exp run` reads it (Hydra's override grammar, through DVC's
    own parser): `KEY=A,B` is one point per value, `KEY=[A,B]` is one list value."""
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import get_hydra_sweeps
    from hydra.errors import OverrideParseException

    if not settings:
        return [()]
    by_file = to_path_overrides(settings)
    if other := sorted(set(by_file) - {"params.yaml"}):
        raise ParamsError(
            f"-S {shown(other[0])}:...: lossbench run sets params.yaml only; drop the file name"
        )
    _check_grid_size(settings)
    for setting in settings:  # one at a time, so that an error names its -S
        try:
            get_hydra_sweeps(to_path_overrides([setting]))
        except (InvalidArgumentError, OverrideParseException) as error:
            raise ParamsError(f"-S {shown(setting)}: {_one_line(error)}") from None
    return [tuple(point["params.yaml"]) for point in get_hydra_sweeps(by_file)]


def _check_grid_size(settings: Sequence[str]) -> None:
    """Refuse a grid of more than MAX_GRID_POINTS points, naming the -S that makes it
    too big, before Hydra lists the points (`range(0,10**12)` would fill memory)."""
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import to_hydra_overrides
    from hydra.errors import OverrideParseException

    sizes: dict[str, int] = {}  # by key: a key given twice takes its last values, as in Hydra
    for setting in settings:
        try:
            overrides = to_hydra_overrides(next(iter(to_path_overrides([setting]).values())))
        except (InvalidArgumentError, OverrideParseException):
            continue  # grid_points names the -S and what is wrong with it
        for override in overrides:
            sizes[override.get_key_element()] = _sweep_size(override)
        points = math.prod(sizes.values())
        if points > MAX_GRID_POINTS or 0 in sizes.values():
            count = f"more than {MAX_GRID_POINTS}" if 0 in sizes.values() else f"{points:,}"
            raise ParamsError(
                f"-S {shown(setting)}: {count} grid points; lossbench run takes at most {MAX_GRID_POINTS} "
                "(the product of the number of values of each -S)"
            )


def _sweep_size(override: Any) -> int:
    """How many values one -S gives; a range is measured, not listed. 0: a float range
    of more than MAX_GRID_POINTS values."""
    from hydra.core.override_parser.types import ChoiceSweep, RangeSweep

    value = override.value() if override.is_sweep_override() else None
    if isinstance(value, RangeSweep):
        values = value.range()
        if isinstance(values, range):
            return len(values)
        counted = sum(1 for _ in islice(values, MAX_GRID_POINTS + 1))
        return counted if counted <= MAX_GRID_POINTS else 0
    if isinstance(value, ChoiceSweep):
        return len(value.list)
    return len(value) if isinstance(value, list) else 1


def _one_line(error: BaseException) -> str:
    return shown(" ".join(str(error).split()), 300)


def _shown_point(point: tuple[str, ...]) -> str:
    return "params.yaml" + "".join(f" -S {override}" for override in point)


def apply_point(params_file: Path, point: tuple[str, ...]) -> None:
    """Write the overrides into params_file the way `dvc exp run -S` does."""
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.hydra import apply_overrides

    try:
        if point:
            apply_overrides(params_file, list(point))
    except InvalidArgumentError as error:  # Hydra's reason is the cause: "Could not override 'x'..."
        raise ParamsError(
            f"{shown(_shown_point(point), 200)}: {_one_line(error.__cause__ or error)}"
        ) from None


def _checked_params(template: Path, point: tuple[str, ...]) -> tuple[dict[str, Any], int]:
    """The params of one grid point, validated like params.yaml (one line if bad), and
    the epochs each of its seeds trains."""
    with tempfile.TemporaryDirectory() as folder:
        params_file = Path(folder) / "params.yaml"
        shutil.copyfile(template, params_file)
        apply_point(params_file, point)
        try:
            raw = read_yaml(params_file)
        except ParamsError as error:  # DVC wrote it: name the settings, not a temporary file
            reason = str(error).removeprefix(f"{params_file}: ")
            raise ParamsError(
                f"{shown(_shown_point(point), 200)}: with these settings DVC writes params.yaml as {reason}; "
                "give the value another way (e.g. a list in block style in params.yaml)"
            ) from None
    try:
        params = parse_params(raw)
    except ParamsError as error:
        lines = str(error).splitlines()
        details = "; ".join(line.strip() for line in lines[1:] or lines)
        raise ParamsError(f"{shown(_shown_point(point), 200)}: {details}") from None
    assert isinstance(raw, dict)  # parse_params accepts nothing else
    return raw, params.train.epochs


def stage_tasks(
    points: list[tuple[str, ...]], template: Path, repo: str, commit: str, remote: str
) -> dict[str, StageTask]:
    """Every grid point's train@NAME-SEED stages, one task per distinct stage.

    Two points share a stage when everything its run-cache key reads is equal:
    the loss entry, `data` (prepare's params), `train` and the seed, as written.
    Keyed by the Dask task key.
    """
    tasks: dict[str, StageTask] = {}
    for point in points:
        raw, epochs = _checked_params(template, point)
        for name, entry in raw["losses"].items():
            for seed in raw["seeds"]:
                identity = json.dumps([name, entry, raw.get("data"), raw.get("train"), seed], sort_keys=True)
                digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
                stage = f"train@{name}-{seed}"
                key = f"{stage}-{digest}"
                tasks.setdefault(key, StageTask(key, stage, repo, commit, remote, point, epochs))
    return tasks


def _tool_env(**extra: str) -> dict[str, str]:
    """This environment with the interpreter's own bin (dvc, lossbench) first on PATH."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return os.environ | {"PATH": path, **extra}


def _call(
    command: list[str],
    cwd: Path,
    env: dict[str, str],
    what: str,
    lifeline: bool = False,
    given: str | None = None,
) -> str:
    """command's output (`given` is its input); if it fails, TaskFailed with the meaningful
    lines of its error output. With `lifeline`, the command gets SIGTERM when this process dies."""
    started = [sys.executable, "-c", WITH_LIFELINE, *command] if lifeline else command
    result = subprocess.run(
        started, cwd=cwd, env=env, input=given, capture_output=True, text=True, check=False
    )
    _check_exit(command, what, result.returncode, result.stderr, result.stdout)
    return result.stdout


def _check_exit(command: list[str], what: str, returncode: int, stderr: str, stdout: str) -> None:
    if returncode != 0:
        name = " ".join(command[:3])
        raise TaskFailed(f"{what}: `{name}` exited with {returncode}:", error_lines(stderr.strip() or stdout))


def _streamed(command: list[str], cwd: Path, env: dict[str, str], what: str, on_line: Any) -> str:
    """_call with a lifeline, each line of the command's output given to on_line as it comes."""
    with (
        tempfile.TemporaryFile("w+") as errors,  # a file: a full pipe would stall the command
        subprocess.Popen(
            [sys.executable, "-c", WITH_LIFELINE, *command],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        ) as process,
    ):
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            on_line(line)
        process.wait()
        errors.seek(0)
        _check_exit(command, what, process.returncode, errors.read(), "".join(lines))
    return "".join(lines)


def error_lines(output: str) -> list[str]:
    """A failed command's own error, to show: its last non-blank lines but DVC's call for
    support, control characters escaped, each line and their number bounded."""
    lines = [line for line in output.splitlines() if line.strip() and not line.startswith(DVC_TROUBLES)]
    if len(lines) > ERROR_LINES:
        lines = [f"… ({len(lines) - ERROR_LINES + 1} earlier lines)", *lines[-(ERROR_LINES - 1) :]]
    return [shown(line.rstrip(), ERROR_LINE_LIMIT) for line in lines] or ["(no output)"]


def train_stage(task: StageTask) -> TaskResult:
    """A Dask task: train one stage in a fresh clone and push it to the results remote."""
    from distributed import get_worker

    # In the worker's own folder: Dask deletes what a killed worker left there.
    scratch = Path(tempfile.mkdtemp(prefix="lossbench-", dir=get_worker().local_directory))
    clone = scratch / "repo"
    # One process per stage (no seeds ahead); DVC's per-repository site cache goes with the clone.
    env = _tool_env(LOSSBENCH_WORKERS="1", DVC_SITE_CACHE_DIR=str(scratch / "dvc-site"), DVC_NO_ANALYTICS="1")
    # Dask's nanny starts its worker with MALLOC_TRIM_THRESHOLD_=65536 (its
    # pre-spawn-environ); training inherited it and took 1.9 times as long at the
    # default's size (benchmarks/results.md): the task's commands get glibc's default.
    env.pop("MALLOC_TRIM_THRESHOLD_", None)

    def dvc(*arguments: str) -> str:
        return _call(["dvc", *arguments], clone, env, task.stage, lifeline=True)

    worker = get_worker()

    def report(state: str, **more: int) -> None:  # to RunProgress, through Dask's event log
        worker.log_event(PROGRESS_TOPIC, {"key": task.key, "state": state, **more})

    def report_line(line: str) -> None:
        if (event := stage_event(line, task.stage)) is not None:
            report(**event)

    try:
        report(CLONING)
        started = time.perf_counter()
        try:
            _call(
                ["git", "clone", "--quiet", "--no-checkout", task.repo, str(clone)], scratch, env, task.stage
            )
        except TaskFailed as error:
            raise TaskFailed(f"cannot clone --repo {shown(task.repo, 200)}:", error.output) from None
        try:
            _call(["git", "checkout", "--quiet", "--detach", task.commit], clone, env, task.stage)
        except TaskFailed as error:
            raise TaskFailed(
                f"--repo {shown(task.repo, 200)} {_missing_commit(task.commit)}:", error.output
            ) from None
        apply_point(clone / "params.yaml", task.overrides)
        dvc("remote", "add", "--local", "--default", "--force", RESULTS_REMOTE, task.remote)
        cloned = time.perf_counter()
        log = _streamed(["dvc", "repro", "--pull", task.stage], clone, env, task.stage, report_line)
        reproduced = time.perf_counter()
        report(PUSHING, epoch=task.epochs)
        # Outputs first: DVC pushes run-cache records before outputs, and a record whose
        # outputs never arrived (a worker killed mid-push) would make the finish here retrain.
        dvc("push", task.stage)
        dvc("push", "--run-cache", task.stage)
        pushed = time.perf_counter()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    cached = f"Stage '{task.stage}' is cached - skipping run" in log
    return TaskResult(task.stage, cached, cloned - started, reproduced - cloned, pushed - reproduced, log)


def _missing_commit(commit: str) -> str:
    return (
        f"has no commit {commit[:12]} (HEAD here); push it there (`git push`), then run lossbench run again"
    )


@contextmanager
def dask_client(scheduler: str | None, cluster_file: Path | None) -> Iterator[Any]:
    """A Dask client: of `scheduler`, of the jobqueue cluster in `cluster_file`, or of
    a LocalCluster with one single-threaded worker process per core."""
    from distributed import Client, LocalCluster

    if scheduler is not None:
        _check_scheduler_address(scheduler)
        try:
            connected = Client(scheduler, timeout="30s")  # type: ignore[no-untyped-call]
        except (OSError, ValueError) as error:  # unreachable, not a Dask scheduler, a bad address
            raise ParamsError(f"--scheduler {shown(scheduler)}: {_one_line(error)}") from None
        with connected as client:
            workers = client.scheduler_info()["workers"].values()
            if not any(TRAIN_SLOT in worker.get("resources", {}) for worker in workers):
                raise ParamsError(
                    f"--scheduler {shown(scheduler)}: no worker offers the resource '{TRAIN_SLOT}'; "
                    f"start workers with `dask worker {shown(scheduler)} --nthreads 1 --resources {TRAIN_SLOT}=1`"
                )
            yield client
    elif cluster_file is not None:
        spec = load_cluster_spec(cluster_file)
        # dask-jobqueue submits jobs in the background and only logs a failure, and the run
        # would wait for workers forever: a missing sbatch / qsub is refused here.
        if shutil.which(submit := SUBMIT_COMMANDS[spec.kind]) is None:
            raise TaskFailed(f"{submit}: not found; run lossbench run where {spec.kind} jobs are submitted")
        with (
            _without_cancelled_tracebacks(),
            jobqueue_cluster(spec) as cluster,
            Client(cluster) as client,  # type: ignore[no-untyped-call]
        ):
            cluster.scale(jobs=spec.jobs)
            yield client
    else:
        # A failed task is reported once, in one line, when it has no retry left; not logged by each worker.
        local = LocalCluster(  # type: ignore[no-untyped-call]
            threads_per_worker=1,
            processes=True,
            resources={TRAIN_SLOT: 1},
            dashboard_address="127.0.0.1:0",  # any free port: Dask warns when 8787 is taken
            silence_logs=logging.CRITICAL,
        )
        with local as cluster, Client(cluster) as client:  # type: ignore[no-untyped-call]
            yield client


def _check_scheduler_address(address: str) -> None:
    """One line for an address no Dask client can use, before a 30 s wait to connect to it."""

    def refuse(reason: str) -> None:
        raise ParamsError(f"--scheduler {shown(address)}: {reason}")

    protocol, separator, location = address.partition("://")
    if not separator:
        protocol, location = "tcp", address  # Dask's default protocol
    if protocol not in SCHEDULER_PROTOCOLS:
        refuse(
            f"protocol {shown_repr(protocol)} is not supported; use tcp://HOST:PORT (or tls://, ws://, wss://)"
        )
    host, colon, port = location.rpartition(":")
    if not colon or location.endswith("]"):
        refuse("no port; give HOST:PORT, e.g. tcp://HOST:8786 (`dask scheduler` prints its address)")
    if not host:
        refuse("no host; give HOST:PORT, e.g. tcp://HOST:8786")
    if not re.fullmatch(r"[0-9]{1,5}", port) or not 1 <= int(port) <= 65535:
        refuse(f"port {shown(port)} is not a port; use 1 to 65535")
    if not re.fullmatch(r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+", host):
        refuse(f"{shown_repr(host)} is not a host name or address")
    if protocol in ("tls", "wss"):
        from distributed.security import Security

        if Security().get_connection_args("client")["ssl_context"] is None:  # type: ignore[no-untyped-call]
            refuse(
                f"{protocol}:// needs Dask's TLS settings (distributed.comm.tls in the Dask configuration); "
                "without them use tcp://"
            )


def _checked_repo(repo: str | None, root: Path, commit: str) -> str:
    """What the workers clone: `repo` (a folder made absolute, so that a clone in Dask's
    scratch space finds it), or this repository. A folder is checked here; a URL by the tasks."""
    if repo is None:
        return str(root)
    if "://" in repo or re.match(r"[^/]*:", repo):  # a URL, or git's scp-like host:path
        return repo
    path = Path(repo).resolve()
    if not path.is_dir():
        raise ParamsError(
            f"--repo {shown(repo, 200)}: no such folder; give a git repository the workers can clone (a folder or a URL)"
        )
    # Only `path` itself: not a repository that holds it.
    env = _tool_env(GIT_CEILING_DIRECTORIES=str(path.parent))
    if subprocess.run(["git", "rev-parse", "--git-dir"], cwd=path, env=env, capture_output=True).returncode:
        raise ParamsError(f"--repo {shown(repo, 200)}: not a git repository")
    found = ["git", "cat-file", "-e", f"{commit}^{{commit}}"]
    if subprocess.run(found, cwd=path, env=env, capture_output=True).returncode:
        raise ParamsError(f"--repo {shown(repo, 200)}: {_missing_commit(commit)}")
    return str(path)


def check_root(root: Path) -> None:
    """--root: a DVC project's folder whose git repository has a commit (tasks clone one)."""
    if not root.is_dir():
        raise ParamsError(f"--root {shown(root)}: no such folder")
    git = subprocess.run(["git", "rev-parse", "--git-dir"], cwd=root, capture_output=True, check=False)
    if git.returncode != 0:
        raise ParamsError(f"--root {shown(root)}: not in a git repository; lossbench run trains a commit")
    head = ["git", "rev-parse", "--verify", "--quiet", "HEAD"]
    if subprocess.run(head, cwd=root, capture_output=True, check=False).returncode != 0:
        raise ParamsError(
            f"--root {shown(root)}: its git repository has no commit yet; commit the project first "
            "(each task clones the commit)"
        )
    if not (root / ".dvc").is_dir():
        raise ParamsError(f"--root {shown(root)}: not a DVC project (no .dvc folder); run `dvc init` there")


@contextmanager
def repository_lock(root: Path) -> Iterator[None]:
    """One `lossbench run` at a time in a repository: its finish writes params.yaml and
    runs DVC in the workspace. An OS lock (flock), so it goes with its process however
    that ends; the file holds the process id, for the message."""
    path = root / RUN_LOCK
    path.parent.mkdir(exist_ok=True)
    with path.open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "?"
            raise ParamsError(
                f"another `lossbench run` (process {shown(holder)}) is using this repository; "
                "wait for it to end, or run in another clone"
            ) from None
        lock.truncate(0)
        lock.write(str(os.getpid()))
        lock.flush()
        yield


@contextmanager
def _without_cancelled_tracebacks() -> Iterator[None]:
    """Dask logs each of its coroutines that a closing client cancels (after Ctrl-C or
    SIGTERM) as an error with a traceback: those records are dropped, every other shown."""

    def keep(record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError))

    handlers = list(logging.getLogger("distributed").handlers)
    for handler in handlers:
        handler.addFilter(keep)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(keep)


def _commit(root: Path) -> str:
    """HEAD, once the pipeline's inputs match it: tasks clone the commit, not this folder."""
    commit = _call(["git", "rev-parse", "--verify", "HEAD"], root, _tool_env(), "git").strip()
    if changed := _call(["git", "status", "--porcelain", "--", *PIPELINE_INPUTS], root, _tool_env(), "git"):
        path = changed.splitlines()[0].split(maxsplit=1)[-1]
        raise ParamsError(
            f"{shown(path)}: changed since the last commit; tasks clone the commit, so commit it"
        )
    return commit


def default_results_remote(root: Path) -> str:
    """Where the tasks push without --remote: the repository's default DVC remote when it
    lies outside the repository (a team's folder, s3://...); otherwise LOCAL_RESULTS, which
    git ignores. The shipped remote (dvc-remote/) is in the repository and tracked by git:
    a run never writes there."""
    url = _default_remote(root)
    if url is not None and ("://" in url or not Path(url).resolve().is_relative_to(root)):
        return url
    return str(root / LOCAL_RESULTS)


def _default_remote(root: Path) -> str | None:
    """The URL of the repository's default DVC remote, a folder made absolute."""
    from dvc.config import Config

    config = Config(dvc_dir=str(root / ".dvc"))
    name = config["core"].get("remote")
    return str(config["remote"][name]["url"]) if name else None


@contextmanager
def results_remote_as_default(root: Path, url: str) -> Iterator[None]:
    """`dvc repro --pull` reads the default remote only: here it is the results remote
    until the run has finished, then .dvc/config.local is as it was."""
    if _default_remote(root) == url:
        yield
        return
    config = root / ".dvc" / "config.local"
    saved = config.read_bytes() if config.exists() else None
    try:
        command = ["dvc", "remote", "add", "--local", "--default", "--force", RESULTS_REMOTE, url]
        _call(command, root, _tool_env(), "dvc")
        yield
    finally:
        if saved is None:
            config.unlink(missing_ok=True)
        else:
            config.write_bytes(saved)


def _finish(root: Path, point: tuple[str, ...], console: Console) -> None:
    """`dvc repro` (or `dvc exp run -S ...`) here, shown as it runs; no train stage may run."""
    if point:
        command = ["dvc", "exp", "run", "--pull", "dvc.yaml", *(f"--set-param={item}" for item in point)]
    else:
        command = ["dvc", "repro", "--pull", "dvc.yaml"]
    console.print(f"$ {shlex.join(command)}", highlight=False, markup=False)
    # Its own process group: on Ctrl-C or SIGTERM here it gets one SIGINT from _stop, as
    # from a terminal, and is waited for before the workspace is restored.
    process = subprocess.Popen(
        command,
        cwd=root,
        env=_tool_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    output = []
    try:
        for line in process.stdout:
            console.out(line, end="", highlight=False)
            output.append(line)
        process.wait()
    except BaseException:
        _ignore_interruptions()
        _stop(process)
        raise
    if process.returncode != 0:
        raise TaskFailed(f"`{' '.join(command[:3])}` failed here ({process.returncode}); its output is above")
    if trained := re.findall(r"Running stage '(train@[^']+)'", "".join(output)):
        raise TaskFailed(
            f"{trained[0]} was trained here, not taken from the run-cache ({_shown_point(point)})"
        )


def _stop(process: subprocess.Popen[str]) -> None:
    """Stop `dvc` and its stage as Ctrl-C would, and wait for it (killed after STOP_GRACE_S)."""
    try:
        os.killpg(process.pid, signal.SIGINT)
        process.communicate(timeout=STOP_GRACE_S)  # what it says as it stops is not shown
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
    except ProcessLookupError:
        process.communicate()


def _ignore_interruptions() -> None:
    """From here the run only ends: a second Ctrl-C or SIGTERM must not cut its clean-up short."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _staged_entries(root: Path) -> str:
    """git's index entries of params.yaml and dvc.lock, as `git update-index --index-info` reads them."""
    staged = _call(["git", "ls-files", "--stage", "--", *RUN_FILES], root, _tool_env(), "git")
    lines = [line.split("\t", 1) for line in staged.splitlines()]
    listed = {path: f"{entry.split()[0]} {entry.split()[1]}\t{path}" for entry, path in lines}
    # Mode 0 removes a path from the index: one that was not staged before is unstaged again.
    return "".join(listed.get(path, f"0 {'0' * 40}\t{path}") + "\n" for path in RUN_FILES)


@dataclass(frozen=True)
class GitIndex:
    """git's index before the local finish: the entries of params.yaml and dvc.lock, and
    the whole file, for when DVC's stopped commit left an index git refuses to write."""

    entries: str
    path: Path
    content: bytes | None

    @classmethod
    def of(cls, root: Path) -> GitIndex:
        path = root / _call(["git", "rev-parse", "--git-path", "index"], root, _tool_env(), "git").strip()
        return cls(_staged_entries(root), path, path.read_bytes() if path.exists() else None)


def _restore_index(root: Path, before: GitIndex) -> str | None:
    """git's index entries of params.yaml and dvc.lock as `before`; what was restored, in words."""
    try:
        if _staged_entries(root) == before.entries:
            return None
        _call(["git", "update-index", "--index-info"], root, _tool_env(), "git", given=before.entries)
        return "git's index of params.yaml and dvc.lock (as before the run)"
    except TaskFailed:
        # Seen once: an entry with a null hash that a stopped `dvc exp run` had written
        # ("cache entry has null sha1"), after which git writes no index at all.
        if before.content is None:
            raise
        partial = before.path.with_name(f"{before.path.name}.lossbench-{os.getpid()}")
        partial.write_bytes(before.content)
        partial.replace(before.path)
        return "git's index, whole (as before the run: the stopped commit had left one git could not write)"


def _restore_workspace(root: Path, params: bytes, lock: bytes | None, index: GitIndex) -> str:
    """After an interrupted finish: params.yaml as committed, dvc.lock as before the run,
    git's index entries of both as before the run (DVC stages them before it commits an
    experiment), and no experiment executor refs of DVC's left; what was restored, in words."""
    restored = []
    if (root / "params.yaml").read_bytes() != params:
        (root / "params.yaml").write_bytes(params)
        restored.append("params.yaml (as committed)")
    lock_file = root / "dvc.lock"
    if (lock_file.read_bytes() if lock_file.exists() else None) != lock:
        if lock is None:
            lock_file.unlink()
        else:
            lock_file.write_bytes(lock)
        restored.append("dvc.lock (as before the run)")
    index_restored = _restore_index(root, index)
    if index_restored:
        restored.append(index_restored)
    refs = _call(["git", "for-each-ref", "--format=%(refname)", "refs/exps/exec"], root, _tool_env(), "git")
    for ref in refs.split():
        _call(["git", "update-ref", "-d", ref], root, _tool_env(), "git")
    if refs.split():
        restored.append("DVC's experiment refs (refs/exps/exec removed)")
    state = (
        f"restored {', '.join(restored)}"
        if restored
        else "params.yaml is as committed and dvc.lock as before the run"
    )
    return (
        f"the finish was stopped; {state}. `dvc status` lists any output it had already "
        "rewritten; `dvc repro` brings those back in line"
    )


def run_on_dask(
    root: Path,
    settings: Sequence[str],
    console: Console,
    *,
    scheduler: str | None = None,
    cluster_file: Path | None = None,
    remote: str | None = None,
    repo: str | None = None,
    retries: int = 2,
    wait_for_workers: float = 30.0,
) -> RunSummary:
    """Train every train stage of the grid (or of this commit) as Dask tasks, then
    reproduce the pipeline here from the run-cache. Give up once no worker has been
    connected for `wait_for_workers` minutes."""
    if scheduler is not None and cluster_file is not None:
        raise ParamsError("--scheduler and --cluster: give one of them")
    if not 0 <= retries <= MAX_RETRIES:
        raise ParamsError(f"--retries {retries}: allowed 0 to {MAX_RETRIES}")
    if not 0 < wait_for_workers <= MAX_WAIT_MINUTES:  # nan too
        raise ParamsError(
            f"--wait-for-workers {wait_for_workers:g}: give the minutes to wait, more than 0 and at most "
            f"{MAX_WAIT_MINUTES} (a week)"
        )
    check_root(root)
    root = root.resolve()
    if cluster_file is not None:
        load_cluster_spec(cluster_file)  # a bad file fails before anything starts
    with repository_lock(root):
        return _run_locked(
            root, settings, console, scheduler, cluster_file, remote, repo, retries, wait_for_workers
        )


def _run_locked(
    root: Path,
    settings: Sequence[str],
    console: Console,
    scheduler: str | None,
    cluster_file: Path | None,
    remote: str | None,
    repo: str | None,
    retries: int,
    wait_for_workers: float,
) -> RunSummary:
    commit = _commit(root)
    repo = _checked_repo(repo, root, commit)
    remote = remote or default_results_remote(root)
    if "://" not in remote:
        remote = str(Path(remote).resolve())  # the same folder from every worker's clone
    points = grid_points(settings)
    commit_params = (root / "params.yaml").read_bytes()
    tasks = stage_tasks(points, root / "params.yaml", repo, commit, remote)
    console.print(
        f"{len(tasks)} training stage(s) of {len(points)} grid point(s) to run as Dask tasks, "
        f"each tried up to {retries + 1} time(s); results pushed to {remote}",
        highlight=False,
        markup=False,
    )

    # Imported once the params are known good: Dask's import is half a second of a refusal.
    from distributed import KilledWorker

    started = time.perf_counter()
    with dask_client(scheduler, cluster_file) as client:
        reports: queue.SimpleQueue[tuple[float, dict[str, Any]]] = queue.SimpleQueue()
        client.subscribe_topic(PROGRESS_TOPIC, reports.put)
        futures = [
            client.submit(train_stage, task, key=key, retries=retries, resources={TRAIN_SLOT: 1})
            for key, task in tasks.items()
        ]
        if scheduler is not None:
            start_workers = (
                f"start workers with `dask worker {shown(scheduler)} --nthreads 1 --resources {TRAIN_SLOT}=1`"
            )
        elif cluster_file is not None:
            start_workers = "the batch jobs have not started or have ended (they are cancelled now)"
        else:
            start_workers = "the workers on this machine did not start"
        _wait_for_tasks(client, futures, tasks, reports, wait_for_workers, start_workers, console)
        try:
            results: list[TaskResult] = client.gather(futures)
        except KilledWorker as error:
            raise TaskFailed(
                f"{error.task}: {error.allowed_failures + 1} workers died running it; see the worker logs"
            ) from None
        except TaskFailed as error:
            failed = next((f.key for f in futures if f.status == "error" and f.exception() is error), None)
            stage = tasks[failed].stage if failed in tasks else "a task"
            tries = f"{retries + 1} time{'s' if retries else ''}"
            last = error.summary.removeprefix(f"{stage}: ")
            raise TaskFailed(
                f"{stage} failed {tries} (--retries {retries}); the last time, {last}", error.output
            ) from None
        workers = len(client.nthreads())
    dask_s = time.perf_counter() - started

    lock_file = root / "dvc.lock"
    lock_before = lock_file.read_bytes() if lock_file.exists() else None
    index_before = GitIndex.of(root)
    try:
        with results_remote_as_default(root, remote):
            for point in points:
                (root / "params.yaml").write_bytes(commit_params)  # each point from the commit's params
                _finish(root, point, console)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the workspace as it was, and what was restored
        _ignore_interruptions()
        restored = _restore_workspace(root, commit_params, lock_before, index_before)
        raise TrainingInterrupted(f"lossbench run: {restored}") from None
    summary = RunSummary(results, points, workers, dask_s, time.perf_counter() - started - dask_s)
    _print_summary(summary, console)
    return summary


def _wait_for_tasks(
    client: Any,
    futures: list[Any],
    tasks: dict[str, StageTask],
    reports: queue.SimpleQueue[tuple[float, dict[str, Any]]],
    wait_minutes: float,
    start_workers: str,
    console: Console,
) -> None:
    """Show each task's progress (its `reports`, and its end) until every task is done
    or one has failed. Say so each minute no worker that trains is connected (preempted,
    batch jobs still queued), and give up after `wait_minutes`, naming the tasks left."""
    checked = time.monotonic()
    idle_since: float | None = None
    said = 0  # whole minutes without a worker already reported
    ended: set[str] = set()
    with RunProgress(console, _progress_rows(tasks)) as progress:

        def show_progress() -> None:
            while not reports.empty():
                progress.event(reports.get()[1])
            for future in futures:
                if future.status == "finished" and future.key not in ended:
                    ended.add(future.key)
                    progress.ended(future.key, future.result().cached)

        while not all(future.done() for future in futures) and not any(f.status == "error" for f in futures):
            show_progress()
            time.sleep(1)
            if time.monotonic() < checked + WORKER_CHECK_S:
                continue
            checked = time.monotonic()
            workers = client.scheduler_info()["workers"].values()
            if any(TRAIN_SLOT in worker.get("resources", {}) for worker in workers):
                idle_since, said = None, 0
                continue
            idle_since = idle_since or time.monotonic()
            idle_minutes = (time.monotonic() - idle_since) / 60
            if idle_minutes >= wait_minutes:
                left = sorted({tasks[future.key].stage for future in futures if not future.done()})
                named = ", ".join(left[:10]) + (f" and {len(left) - 10} more" if len(left) > 10 else "")
                undone = sum(not future.done() for future in futures)
                raise TaskFailed(
                    f"no Dask worker has been available for {wait_minutes:g} minutes (--wait-for-workers); "
                    f"gave up with {undone} of {len(futures)} task(s) not done: {named}; {start_workers}"
                )
            if int(idle_minutes) > said:
                said = int(idle_minutes)
                console.print(
                    f"note: no Dask worker has been available for {said} minute(s); "
                    f"giving up after {wait_minutes:g} (--wait-for-workers)",
                    highlight=False,
                    markup=False,
                )
        show_progress()


def _progress_rows(tasks: dict[str, StageTask]) -> dict[str, tuple[str, int]]:
    """Each task's label and epochs: its stage's name, and its grid point where grid points
    give one stage name several tasks (train@focal-1 for two values of focal's γ)."""
    names = Counter(task.stage for task in tasks.values())
    return {
        key: (
            f"{task.stage} ({' '.join(task.overrides)})" if names[task.stage] > 1 else task.stage,
            task.epochs,
        )
        for key, task in tasks.items()
    }


def _print_summary(summary: RunSummary, console: Console) -> None:
    cached = sum(result.cached for result in summary.tasks)
    lines = [
        f"lossbench run: {len(summary.tasks)} task(s) ({cached} already in the run-cache) on {summary.workers} "
        f"Dask worker(s) in {summary.dask_s:.1f} s; finished here in {summary.finish_s:.1f} s, "
        "every train stage from the run-cache",
        *(f"  experiment: {' '.join(f'-S {item}' for item in point)}" for point in summary.points if point),
        "Compare: `lossbench compare`, `dvc exp show`"
        if summary.points != [()]
        else "See: `lossbench compare`",
    ]
    console.print("\n".join(lines), highlight=False, markup=False)
