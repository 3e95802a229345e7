import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from filelock import FileLock

PROJECT = Path(__file__).resolve().parents[1]
# The venv's bin (lossbench, dvc) first on PATH, whichever way pytest was started.
BIN = str(Path(sys.executable).parent)
# `dvc init` runs before a test project has the shipped config (analytics off), and
# would start a daemon process to send a report; every command here inherits this.
os.environ["DVC_NO_ANALYTICS"] = "1"
# What rich writes to move the cursor and colour text when it draws on a terminal.
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

TINY_PARAMS = {
    "data": {
        "dataset": "synthetic",
        "seed": 0,
        "synthetic": {"train_size": 300, "test_size": 100, "noise": 0.2},
    },
    "train": {"epochs": 2, "batch_size": 64, "test_batch_size": 100, "threads": 1},
    "seeds": [1, 2],
    # Seeds in this process: for runs this small a worker's start costs more than its
    # epochs. The worker pool has its own tests (test_faults.py), which set no workers.
    "machine": {"workers": 1},
    "losses": {
        "mae": {"kind": "mae", "input": "probs"},
        "ce": {"kind": "ce"},
        "focal_low": {"kind": "focal", "gamma": 0.5},
        "focal_high": {"kind": "focal", "gamma": 2.0},
    },
}


# A run's recorded numerics, for details files a test writes (no torch needed to make one).
NUMERICS = {
    "torch": "2.5.0",
    "machine": "x86_64",
    "cpu_capability": "AVX2",
    "kernels": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "device": "cpu",
}


def published_details(
    name: str,
    spec: dict[str, object],
    per_seed: dict[int, dict[str, object]],
    params: dict[str, object] = TINY_PARAMS,
) -> dict[str, Any]:
    """metrics/details/NAME.json as publish@NAME writes it (publish.details) for
    a loss trained with `spec` under `params`' train settings, each seed's
    numbers 0.5 (epochs 2, not at chance) but for those `per_seed` gives."""
    from lossbench.evaluation import SEED_METRICS
    from lossbench.params import Params, loss_label
    from lossbench.publish import details

    typed = Params.model_validate(params)
    classes = [f"class{index}" for index in range(10)]
    numbers = dict.fromkeys(SEED_METRICS, 0.5) | {
        "convergence_epoch": 2,
        "plateau_epoch": 2,
        "at_chance": None,
    }
    run = {
        "loss": name,
        "label": loss_label(typed.losses[name]) if name in typed.losses else name,
        "seeds": list(per_seed),
        "classes": classes,
        "per_seed": {
            f"seed{seed}": numbers | {"per_class_recall": [0.5] * len(classes)} | given
            for seed, given in per_seed.items()
        },
        "train_samples": 100,
        "test_samples": 50,
        "settings": spec
        | typed.train.model_dump(exclude={"device", "threads"})
        | {"device": "cpu", "threads": 1, "dataset": typed.data.dataset, "numerics": NUMERICS},
    }
    return details(run)


def run_in(
    cwd: Path, *command: str, check: bool = True, env: dict[str, str] | None = None, **popen: Any
) -> subprocess.CompletedProcess[str]:
    environment = os.environ | {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
    }
    result = subprocess.run(
        command, cwd=cwd, env=environment | (env or {}), capture_output=True, text=True, timeout=600, **popen
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def lossbench(cwd: Path, *args: str, **popen: Any) -> subprocess.CompletedProcess[str]:
    """`python -m lossbench ARGS` in cwd, whatever its exit code."""
    return run_in(cwd, sys.executable, "-m", "lossbench", *args, check=False, **popen)


def start_in(cwd: Path, *command: str, merge_stderr: bool = False) -> subprocess.Popen[str]:
    """Start a command in its own process group (so a test can signal all of it)."""
    env = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def start_repro_until_a_checkpoint(root: Path, checkpoints: Path) -> subprocess.Popen[str]:
    """Start `dvc repro` (output discarded, its own process group) and return once
    a training checkpoint exists under `checkpoints`, while it is still training."""
    env = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    process = subprocess.Popen(
        ["dvc", "repro"],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not list(checkpoints.glob("*.pt")):
        assert process.poll() is None and time.monotonic() < deadline, "training ended before the kill"
        time.sleep(0.01)
    return process


def run_queue(root: Path, jobs: int, expected: int, timeout_s: float = 400) -> str:
    """`dvc queue start -j jobs` on `expected` queued experiments, wait until
    nothing is queued or running, and return `dvc queue status`.

    DVC's queue workers are daemons that inherit the starting command's output
    pipes, and one that was told to shut down (queue empty) while it still ran
    a task can hang after it (seen with dvc 3.67, -j 2): so the start's output
    is not captured, and whatever worker is left in this project is killed.
    A worker also stays up to 10 s after its last task (DVC checks for an empty
    queue that often): once every experiment has its git ref, DVC is asked at once.
    """
    env = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    before = _experiment_refs(root)
    subprocess.run(
        ["dvc", "queue", "start", "-j", str(jobs)],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )
    deadline = time.monotonic() + timeout_s
    while True:
        # `dvc queue status` costs a second or two of CPU that the experiments need:
        # watch for the queue's worker processes instead, asking DVC once they are
        # gone (or every 10 s, for a worker that hangs).
        ask_by = time.monotonic() + 10
        while (
            _queue_workers(root)
            and time.monotonic() < ask_by
            and len(_experiment_refs(root) - before) < expected
        ):
            time.sleep(0.2)
        status = run_in(root, "dvc", "queue", "status").stdout
        if not re.search(r"\b(Queued|Running)\b", status):
            break
        assert time.monotonic() < deadline, "queued experiments did not finish"
        time.sleep(1)  # a worker that has not started yet
    for pid in _queue_workers(root):
        os.kill(pid, signal.SIGKILL)
    return status


def _experiment_refs(root: Path) -> set[str]:
    """The project's DVC experiments, as git refs (a few milliseconds to list)."""
    listed = run_in(root, "git", "for-each-ref", "--format=%(refname)", "refs/exps").stdout.split()
    # refs/exps/AB/CDEF.../NAME: an experiment of baseline ABCDEF...; DVC's queue and
    # executors keep their own refs under refs/exps too (celery/, exec/, temp/).
    return {ref for ref in listed if re.fullmatch(r"refs/exps/[0-9a-f]{2}/[0-9a-f]{38}/[^/]+", ref)}


def _queue_workers(root: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cwd").resolve() == root.resolve():
                command = (proc / "cmdline").read_bytes()
                if b"queue-worker" in command or b"queue\0start" in command:
                    found.append(int(proc.name))
        except OSError:
            continue  # exited meanwhile, or not ours to read
    return found


def write_params(root: Path, params: dict[str, object]) -> None:
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True))


def prepared_in(root: Path, params: dict[str, object]) -> Path:
    """`root` with `params` written and `lossbench prepare` run: a template to copy per test."""
    write_params(root, params)
    assert lossbench(root, "prepare").returncode == 0
    return root


def _only_readmes(folder: str, names: list[str]) -> list[str]:
    """data/raw as committed: each dataset's folder with its README, no data."""
    return [name for name in names if name != "README.md" and not (Path(folder) / name).is_dir()]


@functools.cache
def _dvc_init() -> Path:
    """A git repository after `dvc init`, made once per test process: a new project copies
    what it wrote (0.4 s of CPU each time, and the suite makes about 40 projects)."""
    root = Path(_DVC_INIT_FOLDER.name)
    run_in(root, "git", "init", "-q")
    run_in(root, "dvc", "init", "-q")
    return root


# Removed when the test process ends.
_DVC_INIT_FOLDER = tempfile.TemporaryDirectory(prefix="dvc-init-")


def make_project(root: Path, params: dict[str, object] = TINY_PARAMS) -> Path:
    """A fresh git + DVC repository holding this project's pipeline and `params`."""
    root.mkdir(parents=True)
    shutil.copytree(PROJECT / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(PROJECT / "data" / "raw", root / "data" / "raw", ignore=_only_readmes)
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(PROJECT / name, root / name)
    write_params(root, params)
    run_in(root, "git", "init", "-q")
    run_in(root, "git", "config", "user.email", "test@example.com")
    run_in(root, "git", "config", "user.name", "test")
    # What `dvc init` writes and stages (its .dvc/tmp is made again on first use; the
    # project's own .dvcignore, copied above, is one `dvc init` keeps).
    shutil.copytree(_dvc_init() / ".dvc", root / ".dvc", ignore=shutil.ignore_patterns("tmp"))
    run_in(root, "git", "add", ".dvc/.gitignore", ".dvc/config", ".dvcignore")
    # The project's DVC config and plot templates (offline page, overlays).
    shutil.copy(PROJECT / ".dvc" / "config", root / ".dvc" / "config")
    shutil.copytree(PROJECT / ".dvc" / "plots", root / ".dvc" / "plots")
    return root


def commit(root: Path, message: str = "commit") -> None:
    run_in(root, "git", "add", "-A")
    run_in(root, "git", "commit", "-qm", message)


def committed_project(root: Path, params: dict[str, object]) -> Path:
    """A tiny project made and committed at `root`: a test module's template."""
    make_project(root, params)
    commit(root, "tiny pipeline")
    return root


def copy_of(template: Path, tmp_path: Path) -> Path:
    """A test's own copy of its module's committed template project."""
    root = tmp_path / "project"
    shutil.copytree(template, root, symlinks=True)
    return root


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A fresh git + DVC repository holding this project's pipeline, with tiny params."""
    return make_project(tmp_path / "project")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first (a stable sort), so that none is left to start at the end.
    pytest-xdist's load scheduler gives each worker a contiguous first chunk, at most
    --maxschedchunk (10, pyproject.toml) tests: the slow tests (20) are the two workers'
    first chunks, and the remainder goes in chunks of up to 10 to whichever worker is free.
    Dealing tests one by one (--maxschedchunk 1) would split modules across workers and
    build their module fixtures twice; chunks of 10 split a few."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def reproduced_template(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> tuple[Path, str]:
    """The tiny project after one `dvc repro`, committed: built once per test run,
    by whichever pytest-xdist worker asks first, while the others wait for it.
    Returns the project and the output of that first `dvc repro`."""
    # Under xdist, the parent of a worker's temporary folder is this run's, shared by all.
    shared = (
        tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent
    )
    root, first = shared / "reproduced" / "project", shared / "reproduced" / "first-repro.txt"
    with FileLock(shared / "reproduced.lock"):
        if not first.exists():
            make_project(root)
            output = run_in(root, "dvc", "repro").stdout
            commit(root, "reproduced")
            first.write_text(output)
    return root, first.read_text()


@pytest.fixture
def reproduced(tmp_path: Path, reproduced_template: tuple[Path, str]) -> Path:
    """A copy of the reproduced tiny project, for one test to change."""
    root = tmp_path / "project"
    shutil.copytree(reproduced_template[0], root, symlinks=True)
    return root
