import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[1]
# The venv's bin (lossbench, dvc) first on PATH, whichever way pytest was started.
BIN = str(Path(sys.executable).parent)

TINY_PARAMS = {
    "data": {
        "dataset": "synthetic",
        "seed": 0,
        "synthetic": {"train_size": 300, "test_size": 100, "noise": 0.2},
    },
    "train": {"epochs": 2, "batch_size": 64, "test_batch_size": 100, "threads": 1, "seeds": [1, 2]},
    "losses": {
        "mae": {"kind": "mae", "input": "probs"},
        "ce": {"kind": "ce"},
        "focal_low": {"kind": "focal", "gamma": 0.5},
        "focal_high": {"kind": "focal", "gamma": 2.0},
    },
}

Run = Callable[..., subprocess.CompletedProcess[str]]


def run_in(cwd: Path, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


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


def wait_for_queue(root: Path, timeout_s: float = 400) -> str:
    """Wait until `dvc queue status` shows nothing queued or running; return it."""
    deadline = time.monotonic() + timeout_s
    while re.search(r"\b(Queued|Running)\b", run_in(root, "dvc", "queue", "status").stdout):
        assert time.monotonic() < deadline, "queued experiments did not finish"
        time.sleep(2)
    return run_in(root, "dvc", "queue", "status").stdout


def write_params(root: Path, params: dict[str, object]) -> None:
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A fresh git + DVC repository holding this project's pipeline, with tiny params."""
    root = tmp_path / "project"
    root.mkdir()
    shutil.copytree(PROJECT / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(PROJECT / "plots" / "templates", root / "plots" / "templates")
    shutil.copy(PROJECT / "dvc.yaml", root / "dvc.yaml")
    write_params(root, TINY_PARAMS)
    run_in(root, "git", "init", "-q")
    run_in(root, "git", "config", "user.email", "test@example.com")
    run_in(root, "git", "config", "user.name", "test")
    run_in(root, "dvc", "init", "-q")
    run_in(root, "dvc", "config", "core.analytics", "false")
    return root
