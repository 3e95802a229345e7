"""`lossbench run`: training stages as Dask tasks in clones of the commit, finished
here from DVC's run-cache. Real git, DVC and Dask, on this machine (loopback only)."""

import copy
import io
import json
import re
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import yaml
from conftest import (
    ANSI,
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
from rich.console import Console

from lossbench.engine import jobqueue_cluster, load_cluster_spec
from lossbench.progress import TrainingProgress
from lossbench.run_progress import stage_event

GAMMA = "losses.focal.gamma"
# Two losses, one seed, one epoch: each stage trains in seconds; the grid varies focal's γ.
PARAMS = copy.deepcopy(TINY_PARAMS) | {
    "losses": {"ce": {"kind": "ce"}, "focal": {"kind": "focal", "gamma": 2.0}},
    "seeds": [1],
}
PARAMS["train"] = PARAMS["train"] | {"epochs": 1}
# Files the pipeline writes that carry no wall time: equal byte for byte across runs.
EXACT = [
    f"{folder}/{name}.{suffix}"
    for folder, suffix in (("metrics", "json"), ("metrics/details", "json"), ("plots/calibration", "csv"))
    for name in ("ce", "focal")
] + ["metrics/summary.json", "plots/confusion/ce.csv", "plots/confusion/focal.csv", "plots/curves.csv"]
# What holds a training's wall time (history's wall_time_s, report.md's table), and so
# its hash in dvc.lock differs between two trainings of the same stage.
TIMED = re.compile(r"^(data/runs/|plots/history|plots/report\.md$)")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return committed_project(tmp_path_factory.mktemp("engine") / "project", PARAMS)


@pytest.fixture
def project(template: Path, tmp_path: Path) -> Path:
    return copy_of(template, tmp_path)


@pytest.fixture(scope="module")
def sequential(template: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[float, dict[str, object]]:
    """The reference: one `dvc exp run -S` per γ, one after the other, no Dask."""
    root = tmp_path_factory.mktemp("sequential") / "project"
    shutil.copytree(template, root, symlinks=True)
    for gamma in ("0.5", "1"):
        run_in(root, "dvc", "exp", "run", "-S", f"{GAMMA}={gamma}")
    return _experiments(root)


def _without_wall_times(lock: dict[str, object]) -> dict[str, object]:
    """dvc.lock with the hashes of files that hold wall times taken out."""
    lock = copy.deepcopy(lock)
    for stage in lock["stages"].values():  # type: ignore[attr-defined]
        for entry in stage.get("deps", []) + stage.get("outs", []):
            if TIMED.match(entry["path"]):
                entry.pop("md5"), entry.pop("size"), entry.pop("nfiles", None)
    return lock


def _results(read: Callable[[str], str]) -> dict[str, object]:
    """A run's results: the exact files' text, dvc.lock without wall times, and the
    histories without their wall-time column."""
    files: dict[str, object] = {path: read(path) for path in EXACT}
    files["dvc.lock"] = _without_wall_times(yaml.safe_load(read("dvc.lock")))
    for name in ("ce", "focal"):
        rows = read(f"plots/history/{name}.csv").splitlines()
        files[f"history/{name}"] = [row.rsplit(",", 1)[0] for row in rows]  # wall_time_s is last
    return files


def _experiments(root: Path) -> dict[float, dict[str, object]]:
    """Each experiment's results (`dvc exp show`), by γ."""
    found: dict[float, dict[str, object]] = {}
    for baseline in json.loads(run_in(root, "dvc", "exp", "show", "--json").stdout):
        for experiment in baseline.get("experiments") or []:
            data = experiment["revs"][0]["data"]
            gamma = data["params"]["params.yaml"]["data"]["losses"]["focal"]["gamma"]
            found[float(gamma)] = _results(
                lambda path, rev=data["rev"]: run_in(root, "git", "show", f"{rev}:{path}").stdout
            )
    return found


def _remote_listing(root: Path) -> list[str]:
    remote = root / "dvc-remote"  # the shipped remote (.dvc/config): read, never written by a run
    return sorted(str(path.relative_to(remote)) for path in remote.rglob("*")) if remote.exists() else []


@pytest.fixture(scope="module")
def local_run(template: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """`lossbench run` of two epochs, with no --remote, on this machine's cluster, as a
    terminal shows it: the project, and the lines written (each redrawing its own)."""
    root = copy_of(template, tmp_path_factory.mktemp("local-run"))
    write_params(root, PARAMS | {"train": PARAMS["train"] | {"epochs": 2}})
    commit(root, "two epochs")
    result = lossbench(root, "run", "--retries", "0", env={"TTY_COMPATIBLE": "1", "COLUMNS": "120"})
    assert result.returncode == 0, result.stdout + result.stderr
    return root, ANSI.sub("", result.stdout).replace("\r", "\n").splitlines()


@pytest.mark.slow
def test_a_run_shows_each_stage_its_epochs_time_so_far_and_time_left(
    local_run: tuple[Path, list[str]],
) -> None:
    _, lines = local_run
    clock = r"[0-9]+:[0-9]{2}:[0-9]{2}"
    for stage in ("train@ce-1", "train@focal-1"):
        # While it runs: its row, with what it does, epochs done of all, time so far and time left.
        assert any(
            re.match(
                rf"{stage} .*[0-2]/2 epochs +{clock} +({clock}|-:--:--) +(cloning|stage validate|stage prepare|"
                "training|pushing)",
                line,
            )
            for line in lines
        ), "\n".join(lines)
        # Once done: one line that stays.
        assert any(
            re.fullmatch(
                rf"{stage}: trained 2 epochs in {clock}; (1/2 stages done in {clock}, about {clock} left|"
                rf"2/2 stages done in {clock})",
                line,
            )
            for line in lines
        ), "\n".join(lines)
    # The whole run's row, last drawn when every stage is done.
    assert any(re.match(rf"all stages .* 2/2 stages +{clock} +0:00:00", line) for line in lines), lines
    assert not any("% Completed" in line for line in lines)


def test_a_tasks_progress_is_read_from_what_its_training_prints() -> None:
    """The line a stage prints per epoch where it draws no bars (as in a task's clone) is
    the line the task reads its progress from."""
    printed = io.StringIO()
    with TrainingProgress(Console(file=printed, width=200), epochs=30) as progress:
        progress.add("focal_high", 7)
        record = {"seed": 7, "epoch": 12, "lr": 0.1, "wall_time_s": 3.0}
        progress.epoch(
            "focal_high", record | dict.fromkeys(["train_loss", "train_acc", "test_loss", "test_acc"], 0.5)
        )
    assert stage_event(printed.getvalue(), "train@focal_high-7") == {"state": "training", "epoch": 12}
    assert stage_event("Running stage 'prepare':\n", "train@ce-1") == {"state": "stage prepare"}
    assert stage_event("Running stage 'train@ce-1':\n", "train@ce-1") == {"state": "training"}
    cached = "Stage 'train@ce-1' is cached - skipping run, checking out outputs\n"
    assert stage_event(cached, "train@ce-1") == {"state": "from the run-cache"}
    assert stage_event("  ce seed 1: resuming after epoch 3\n", "train@ce-1") is None


@pytest.mark.slow
def test_a_run_without_remote_pushes_to_a_folder_git_ignores(local_run: tuple[Path, list[str]]) -> None:
    root, lines = local_run
    # The shipped remote (the repository's default) got nothing; git sees no new file in
    # .dvc/ or dvc-remote/, only the pipeline's own outputs.
    changed = run_in(root, "git", "status", "--porcelain", "--untracked-files=all").stdout.splitlines()
    assert changed and not [line for line in changed if re.match(r"...(\.dvc|dvc-remote)/", line)], changed
    assert _remote_listing(root) == []
    results = root / ".dvc" / "tmp" / "lossbench-results"
    assert any(line.endswith(f"; results pushed to {results}") for line in lines), lines
    assert list((results / "runs").iterdir()) and list((results / "files").iterdir())
    assert run_in(root, "dvc", "remote", "default").stdout.strip() == "shipped"


@pytest.mark.slow
def test_a_grid_on_two_workers_gives_the_results_of_sequential_dvc_exp_runs(
    project: Path, sequential: dict[float, dict[str, object]]
) -> None:
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        resources={"train": 1},
        dashboard_address="127.0.0.1:0",
    ) as cluster:
        result = lossbench(
            project, "run", "--scheduler", cluster.scheduler_address, "-S", f"{GAMMA}=0.5,1", "--retries", "0"
        )
    assert result.returncode == 0, result.stdout + result.stderr
    # ce's seed is shared by both points: 1 + 2 tasks, not 4.
    assert "3 task(s) (0 already in the run-cache) on 2 Dask worker(s)" in result.stdout, result.stdout
    cached = re.findall(r"Stage '(train@[^']+)' is cached - skipping run", result.stdout)
    # Point 1 takes both stages from the run-cache, point 2 its focal one (ce is unchanged).
    assert sorted(cached) == sorted(["train@ce-1", "train@focal-1", "train@focal-1"])
    assert not re.search(r"Running stage 'train@", result.stdout)
    assert _experiments(project) == sequential
    # The results went to the git-ignored folder, not the shipped remote; the workspace's
    # DVC config is as it was.
    assert list((project / ".dvc" / "tmp" / "lossbench-results" / "runs").iterdir())
    assert _remote_listing(project) == [] and not (project / ".dvc" / "config.local").exists()


def _training(runner: psutil.Process, stage: str | None = None) -> psutil.Process:
    """A `lossbench train` under runner (in a Dask worker's task), of `stage` if given."""
    deadline = time.monotonic() + 180
    while runner.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        for process in runner.children(recursive=True):
            try:
                command = process.cmdline()
                training = command[-1:] == ["train"] and any(part.endswith("lossbench") for part in command)
                if training and (stage is None or process.environ().get("DVC_STAGE") == stage):
                    return process
            except psutil.NoSuchProcess:
                continue  # ended meanwhile
        time.sleep(0.05)
    raise AssertionError(f"no training of {stage or 'any stage'} was seen")


@pytest.mark.slow
def test_a_worker_killed_mid_task_has_its_task_retried_with_the_same_result(
    project: Path, sequential: dict[float, dict[str, object]], tmp_path: Path
) -> None:
    # A commit with the reference's γ=1, run with no grid (then `dvc repro` here), on the
    # default cluster (one worker process per core), to a remote that is not the default.
    write_params(project, PARAMS | {"losses": PARAMS["losses"] | {"focal": {"kind": "focal", "gamma": 1}}})
    commit(project, "γ=1")
    remote = tmp_path / "results"
    runner = start_in(
        project, sys.executable, "-m", "lossbench", "run", "--remote", str(remote), merge_stderr=True
    )
    training = _training(psutil.Process(runner.pid))
    stage = training.environ()["DVC_STAGE"]
    worker = next(parent for parent in training.parents() if parent.ppid() == runner.pid)
    repro = next(parent for parent in training.parents() if "repro" in parent.cmdline())
    # Dask gives its worker a malloc setting that slows training; the task's commands drop it.
    assert worker.environ().get("MALLOC_TRIM_THRESHOLD_") == "65536"
    assert "MALLOC_TRIM_THRESHOLD_" not in training.environ()
    worker.kill()
    # The killed worker's `dvc repro` and its training end with it: no orphan trains on.
    repro.wait(timeout=30)
    training.wait(timeout=30)
    # Dask runs the task again on a live worker (the nanny restarts the killed one).
    assert _training(psutil.Process(runner.pid), stage).pid != training.pid
    output, _ = runner.communicate(timeout=400)
    assert runner.returncode == 0, output
    assert f"{stage}: try 2\n" in output, output  # the retry is shown
    assert "2 task(s) (0 already in the run-cache)" in output, output
    assert sorted(re.findall(r"Stage '(train@[^']+)' is cached - skipping run", output)) == [
        "train@ce-1",
        "train@focal-1",
    ], output
    assert _results(lambda path: (project / path).read_text()) == sequential[1.0]
    # The results are in that remote; the shipped one got nothing, and the repository's
    # DVC config is as it was (the results remote was its default only while finishing).
    assert list((remote / "runs").iterdir()) and _remote_listing(project) == []
    assert not (project / ".dvc" / "config.local").exists()
    assert run_in(project, "dvc", "remote", "default").stdout.strip() == "shipped"


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (
            f"{GAMMA}=0.5,-1",
            "params.yaml -S losses.focal.gamma=-1: losses.focal.gamma: Input should be greater",
        ),
        ("losses.focal.gama=1", "Could not override 'losses.focal.gama'"),
        ("train.epochs=two", "train.epochs: Input should be a valid integer"),
        ("seeds=[1,", "-S seeds=[1,: no viable alternative"),
    ],
)
def test_a_bad_grid_value_is_one_line_naming_the_key_and_nothing_runs(
    project: Path, setting: str, message: str
) -> None:
    before = _remote_listing(project)
    result = lossbench(project, "run", "-S", setting)
    assert result.returncode == 1, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert _remote_listing(project) == before and not (project / "dvc.lock").exists()
    assert run_in(project, "git", "status", "--porcelain").stdout == ""


def test_a_scheduler_whose_workers_offer_no_training_slot_is_refused(project: Path) -> None:
    with LocalCluster(
        n_workers=1, processes=False, protocol="tcp", dashboard_address="127.0.0.1:0"
    ) as cluster:
        result = lossbench(project, "run", "--scheduler", cluster.scheduler_address)
    assert result.returncode == 1
    assert "no worker offers the resource 'train'; start workers with" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and _remote_listing(project) == []


def test_a_task_that_cannot_clone_fails_after_its_retries_naming_the_repository(project: Path) -> None:
    url = f"file://{project / 'no-such-repo'}"  # a URL: only the tasks try it
    result = lossbench(project, "run", "--repo", url, "--retries", "1")
    assert result.returncode == 1
    assert re.search(
        rf"^error: train@\S+ failed 2 times \(--retries 1\); the last time, cannot clone --repo {url}:\n"
        r"  fatal: .*no-such-repo",
        result.stderr,
        re.M,
    ), result.stderr
    assert _remote_listing(project) == []


CLUSTER = {
    "kind": "slurm",
    "jobs": 2,
    "cores": 4,
    "memory": "16GB",
    "walltime": "01:30:00",
    "queue": "short",
    "account": "lossbench",
    "job_extra_directives": ["--gres=gpu:1", "--constraint=avx2"],
    "interface": "lo",  # the scheduler this starts listens on loopback only
}


def test_a_slurm_job_script_from_a_cluster_file(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(CLUSTER))
    with jobqueue_cluster(load_cluster_spec(path)) as cluster:  # starts a scheduler, submits nothing
        script = cluster.job_script()
    for line in (
        "#SBATCH -p short",
        "#SBATCH -A lossbench",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH -t 01:30:00",
        "#SBATCH --gres=gpu:1",
        "#SBATCH --constraint=avx2",
    ):
        assert line in script.splitlines(), script
    # One Dask worker process per core, one thread each, each offering one training slot.
    worker = next(line for line in script.splitlines() if "distributed.cli.dask_worker" in line)
    assert "--nworkers 4" in worker and "--nthreads 1" in worker and "--resources train=1" in worker, worker
    assert "tcp://127.0.0.1:" in worker and "--interface lo" in worker, worker


def test_print_job_script_prints_the_prologue_and_log_folder_and_submits_nothing(
    project: Path, tmp_path: Path
) -> None:
    (tmp_path / "cluster-logs").mkdir()
    logs = tmp_path / "logs"  # a link, written as given: compute nodes may resolve it apart
    logs.symlink_to(tmp_path / "cluster-logs")
    prologue = ["module load python/3.12", 'export OMP_NUM_THREADS=1 && echo "$HOSTNAME"']
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(CLUSTER | {"job_script_prologue": prologue, "log_directory": str(logs)}))
    # dask-jobqueue writes the script itself: no sbatch is called, none need be installed.
    result = lossbench(project, "run", "--cluster", str(path), "--print-job-script")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "#!/usr/bin/env bash", result.stdout
    for line in (
        f"#SBATCH -e {logs}/dask-worker-%J.err",
        f"#SBATCH -o {logs}/dask-worker-%J.out",
        "#SBATCH -p short",
    ):
        assert line in lines, result.stdout
    # The prologue's lines as written, in order, right before the worker starts; the worker
    # is this environment's Python, so its lossbench is the one the tasks run.
    worker = next(number for number, line in enumerate(lines) if "distributed.cli.dask_worker" in line)
    assert lines[worker - 2 : worker] == prologue, result.stdout
    assert lines[worker].startswith(f"{sys.executable} -m distributed.cli.dask_worker tcp://127.0.0.1:")
    assert lines[worker + 1 :] == [], result.stdout
    # Nothing ran: no file in the project, the log folder or the remote.
    assert run_in(project, "git", "status", "--porcelain", "--untracked-files=all").stdout == ""
    assert list(logs.iterdir()) == [] and _remote_listing(project) == []


def test_print_job_script_without_a_cluster_file_is_one_line(project: Path) -> None:
    result = lossbench(project, "run", "--print-job-script")
    assert result.returncode == 1 and result.stdout == ""
    assert (
        result.stderr.strip()
        == "error: --print-job-script: give --cluster FILE (and no --scheduler); it prints its job script"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"job_script_prologue": ["module load python", "source env/bin/activate\nrm -rf ~"]},
            "cluster.yaml: job_script_prologue: Value error, line 2 holds a line break or control character",
        ),
        (
            {"job_script_prologue": "module load python"},
            "cluster.yaml: job_script_prologue: Input should be a valid list",
        ),
        (
            {"log_directory": "/tmp/logs $(id)"},
            "cluster.yaml: log_directory: Value error, '/tmp/logs $(id)': give",
        ),
        (
            {"log_directory": "/no/such/logs"},
            "cluster.yaml: log_directory: Value error, '/no/such/logs' is not a folder; create it first",
        ),
        ({"cpus": 4}, "cluster.yaml: cpus: unknown key"),
        ({"cores": "4"}, "cluster.yaml: cores: Input should be a valid integer"),
        ({"kind": "lsf"}, "cluster.yaml: kind: Input should be 'slurm', 'pbs' or 'sge'"),
        ({"memory": "lots"}, "cluster.yaml: memory: Value error, Could not interpret 'lots' as a byte unit"),
        (
            {"job_extra_directives": ["--a\nrm -rf ~"]},
            "cluster.yaml: job_extra_directives: Value error, a directive",
        ),
    ],
)
def test_a_bad_cluster_file_is_one_line_naming_the_key(
    project: Path, change: dict[str, object], message: str
) -> None:
    path = project.parent / "cluster.yaml"
    path.write_text(yaml.safe_dump(CLUSTER | change))
    for print_only in ([], ["--print-job-script"]):
        result = lossbench(project, "run", "--cluster", str(path), *print_only)
        assert result.returncode == 1 and result.stdout == ""
        assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, result.stderr
    assert not Path("/no").exists()
