"""`lossbench run` when the cluster fails it: no worker comes or all leave, a cluster
file or scheduler address that cannot work, a task that fails, a repository the
workers cannot use. Real git, DVC and Dask on loopback; the batch system is a
stand-in `sbatch` that queues jobs which never start."""

import copy
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import (
    BIN,
    TINY_PARAMS,
    commit,
    committed_project,
    copy_of,
    lossbench,
    run_in,
    start_in,
    write_params,
)
from distributed import LocalCluster
from PIL import Image

PARAMS = copy.deepcopy(TINY_PARAMS) | {"losses": {"ce": {"kind": "ce"}}, "seeds": [1]}
PARAMS["train"] = PARAMS["train"] | {"epochs": 1}
CLUSTER = {"kind": "slurm", "jobs": 2, "cores": 2, "memory": "4GB", "interface": "lo"}
# Short enough for a test; the default is 30 minutes.
WAIT = ("--wait-for-workers", "0.05")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return committed_project(tmp_path_factory.mktemp("engine-failures") / "project", PARAMS)


@pytest.fixture
def project(template: Path, tmp_path: Path) -> Path:
    return copy_of(template, tmp_path)


def _untouched(root: Path) -> None:
    """The workspace is as committed, and the repository's DVC config as it was."""
    assert run_in(root, "git", "status", "--porcelain").stdout == ""
    assert not (root / ".dvc" / "config.local").exists() and not (root / "dvc.lock").exists()


def _one_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def _batch_system(folder: Path) -> Path:
    """An `sbatch` that accepts every job and never starts it (a full queue), and the
    `scancel` that removes one; both log their calls."""
    folder.mkdir()
    log = folder / "calls.log"
    for name, output in (("sbatch", "Submitted batch job 4242"), ("scancel", "")):
        script = folder / name
        script.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\necho "{output}"\n')
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return log


def test_batch_jobs_that_never_start_are_given_up_on_naming_the_tasks_left(
    project: Path, tmp_path: Path
) -> None:
    log = _batch_system(tmp_path / "batch")
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(yaml.safe_dump(CLUSTER))
    path = f"{tmp_path / 'batch'}{os.pathsep}{BIN}{os.pathsep}{os.environ['PATH']}"
    # The scheduler's dashboard on any free port: 8787 may be taken by another test's cluster.
    dashboard = {"DASK_JOBQUEUE__SLURM__SCHEDULER_OPTIONS": '{"dashboard_address": ":0"}'}
    remote = tmp_path / "results"
    result = lossbench(
        project,
        "run",
        "--cluster",
        str(cluster),
        "--remote",
        str(remote),
        *WAIT,
        env={"PATH": path} | dashboard,
    )
    line = _one_error(result)
    assert line.startswith("error: no Dask worker has been available for 0.05 minutes (--wait-for-workers)")
    assert "gave up with 1 of 1 task(s) not done: train@ce-1" in line, line
    calls = log.read_text().splitlines()
    # Both jobs were submitted, and cancelled when lossbench gave up: none is left queued.
    assert [call.split()[0] for call in calls].count("sbatch") == 2, calls
    assert calls.count("scancel 4242") >= 1, calls
    assert not remote.exists()
    _untouched(project)


def test_a_run_whose_last_worker_leaves_is_given_up_on_naming_the_tasks_left(
    project: Path, tmp_path: Path
) -> None:
    with LocalCluster(n_workers=0, processes=True, dashboard_address="127.0.0.1:0") as scheduler:
        address = scheduler.scheduler_address
        worker = start_in(
            project, "dask", "worker", address, "--nthreads", "1", "--resources", "train=1", "--no-dashboard"
        )
        try:
            scheduler.wait_for_workers(1, timeout=120)
            runner = start_in(
                project,
                sys.executable,
                "-m",
                "lossbench",
                "run",
                "--scheduler",
                address,
                "--remote",
                str(tmp_path / "results"),
                *WAIT,
            )
            assert runner.stdout is not None
            first = runner.stdout.readline()
            assert "training stage(s)" in first, first
            # The count is printed before connecting: the worker goes once the tasks are in.
            deadline = time.monotonic() + 120
            while not scheduler.scheduler.tasks and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            os.killpg(worker.pid, signal.SIGKILL)  # the worker, its nanny and its task's commands
            worker.wait()
        output, errors = runner.communicate(timeout=300)
    result = subprocess.CompletedProcess(runner.args, runner.returncode, output, errors)
    line = _one_error(result)
    assert "no Dask worker has been available for 0.05 minutes" in line, line
    assert "1 of 1 task(s) not done: train@ce-1" in line and f"dask worker {address}" in line, line
    _untouched(project)


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "100000"])
def test_a_bad_wait_for_workers_is_one_line_and_nothing_starts(project: Path, value: str) -> None:
    line = _one_error(lossbench(project, "run", "--wait-for-workers", value))
    assert line.startswith(
        f"error: --wait-for-workers {value}: give the minutes to wait, more than 0 and at most"
    )
    _untouched(project)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"memory": "-5GB"}, "memory: Value error, '-5GB' is not a size from 1MB to 1PB per job, e.g. 16GB"),
        ({"memory": "0"}, "memory: Value error, '0' is not a size from 1MB to 1PB per job"),
        ({"memory": "1e30GB"}, "memory: Value error, '1e30GB' is not a size from 1MB to 1PB per job"),
        ({"walltime": "0:00:00"}, "walltime: Value error, '0:00:00' is not a time"),
        ({"walltime": "1:99:00"}, "walltime: Value error, '1:99:00' is not a time"),
        ({"walltime": "1::"}, "walltime: Value error, '1::' is not a time"),
        (
            {"kind": "pbs", "walltime": "1-00:00:00"},
            "walltime: Value error, '1-00:00:00' is not a time PBS reads",
        ),
        (
            {"interface": "nope0"},
            "interface: Value error, 'nope0' is not a network interface of this machine; it has ",
        ),
    ],
)
def test_a_cluster_file_that_cannot_start_a_job_is_one_line_naming_the_key(
    project: Path, change: dict[str, object], message: str
) -> None:
    path = project.parent / "cluster.yaml"
    path.write_text(yaml.safe_dump(CLUSTER | change))
    line = _one_error(lossbench(project, "run", "--cluster", str(path)))
    assert line.startswith(f"error: {path}: "), line
    assert message in line, line


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("ucx://127.0.0.1:1", "protocol 'ucx' is not supported; use tcp://HOST:PORT"),
        ("inproc://x", "protocol 'inproc' is not supported"),
        ("tcp://127.0.0.1:99999", "port 99999 is not a port; use 1 to 65535"),
        ("tcp://127.0.0.1:0", "port 0 is not a port; use 1 to 65535"),
        ("tcp://127.0.0.1", "no port; give HOST:PORT"),
        ("tcp://:8786", "no host; give HOST:PORT"),
        ("tcp://bad host:8786", "'bad host' is not a host name or address"),
        ("tls://127.0.0.1:8786", "tls:// needs Dask's TLS settings"),
    ],
)
def test_a_scheduler_address_that_cannot_work_is_one_line(project: Path, address: str, message: str) -> None:
    line = _one_error(lossbench(project, "run", "--scheduler", address))
    assert line.startswith(f"error: --scheduler {address}: "), line
    assert message in line, line
    _untouched(project)


def _task_failure(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The error a failed task gives: a first line naming the stage, the command and the
    tries, then the command's own error output, indented."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "Having any troubles?" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith("error: "))
    lines = lines[start:]
    assert all(line.startswith("  ") for line in lines[1:]) and len(lines) <= 14, result.stderr
    return lines


def _images(folder: Path) -> None:
    rng = np.random.default_rng(0)
    for label, name in enumerate(("cats", "dogs")):
        (folder / name).mkdir(parents=True)
        for index in range(4):
            pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            pixels[..., label] = 255
            Image.fromarray(pixels).save(folder / name / f"{index}.png")


def test_a_failing_task_shows_its_own_error_and_its_tries(project: Path, tmp_path: Path) -> None:
    # Images in data/raw/imagefolder are git-ignored: here they are, in a task's clone not.
    _images(project / "data" / "raw" / "imagefolder" / "photos")
    data = {"dataset": "imagefolder", "seed": 0, "imagefolder": {"root": "photos", "image_size": 10}}
    write_params(project, PARAMS | {"data": data})
    commit(project, "images")
    result = lossbench(project, "run", "--remote", str(tmp_path / "results"), "--retries", "1")
    lines = _task_failure(result)
    assert (
        lines[0]
        == "error: train@ce-1 failed 2 times (--retries 1); the last time, `dvc repro --pull` exited with 255:"
    )
    assert any(line.startswith("  error: data.imagefolder.root: ") for line in lines[1:]), result.stderr
    assert (
        lines[-1]
        == "  ERROR: failed to reproduce 'validate': failed to run: lossbench validate, exited with 1"
    )


def test_a_task_whose_remote_cannot_be_used_shows_dvcs_reason(project: Path) -> None:
    result = lossbench(project, "run", "--remote", "s3://bucket/x", "--retries", "0")
    lines = _task_failure(result)
    assert lines[0].startswith("error: train@ce-1 failed 1 time (--retries 0); the last time, `dvc repro"), (
        lines
    )
    assert "s3 is supported, but requires 'dvc-s3' to be installed" in lines[-1], lines
    _untouched(project)


def test_error_lines_are_the_meaningful_tail_escaped_and_bounded() -> None:
    from lossbench.engine import error_lines

    output = "".join(f"line {index}\n" for index in range(40)) + "\x1b[2Jboom " + "x" * 5000 + "\n\n"
    output += "Having any troubles? Hit us up at https://dvc.org/support, we are always happy to help!\n"
    lines = error_lines(output)
    assert lines[0] == "… (30 earlier lines)" and lines[1] == "line 30" and len(lines) == 12
    assert lines[-1].startswith("\\x1b[2Jboom xxx") and lines[-1].endswith("(5,009 characters)")
    assert len(lines[-1]) < 220
    assert error_lines("") == ["(no output)"]


def test_a_repository_that_does_not_exist_is_named_as_given(project: Path) -> None:
    line = _one_error(lossbench(project, "run", "--repo", "../no-such-repo"))
    assert (
        line
        == "error: --repo ../no-such-repo: no such folder; give a git repository the workers can clone (a folder or a URL)"
    )
    (project.parent / "plain").mkdir()
    line = _one_error(lossbench(project, "run", "--repo", "../plain"))
    assert line == "error: --repo ../plain: not a git repository"
    _untouched(project)


def _older_bare_clone(project: Path) -> Path:
    """A bare repository holding the project's commit, then a new commit here that it lacks."""
    bare = project.parent / "shared.git"
    run_in(project.parent, "git", "clone", "-q", "--bare", str(project), str(bare))
    write_params(project, PARAMS | {"seeds": [2]})
    commit(project, "a commit not pushed")
    return bare


def test_a_repository_without_the_commit_says_to_push_it(project: Path) -> None:
    _older_bare_clone(project)
    head = run_in(project, "git", "rev-parse", "HEAD").stdout.strip()
    line = _one_error(lossbench(project, "run", "--repo", "../shared.git"))
    assert line == (
        f"error: --repo ../shared.git: has no commit {head[:12]} (HEAD here); "
        "push it there (`git push`), then run lossbench run again"
    )
    _untouched(project)


def test_a_repository_url_without_the_commit_says_to_push_it(project: Path, tmp_path: Path) -> None:
    url = f"file://{_older_bare_clone(project)}"
    head = run_in(project, "git", "rev-parse", "HEAD").stdout.strip()
    result = lossbench(project, "run", "--repo", url, "--retries", "0", "--remote", str(tmp_path / "results"))
    lines = _task_failure(result)
    assert lines[0] == (
        f"error: train@ce-2 failed 1 time (--retries 0); the last time, --repo {url} has no commit "
        f"{head[:12]} (HEAD here); push it there (`git push`), then run lossbench run again:"
    ), lines
    assert "dask-scratch-space" not in result.stderr
    _untouched(project)
