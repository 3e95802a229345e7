"""`lossbench run` from start to end: one run per repository at a time, an
interruption at any point, the bounds on retries and grid size, and the folder it
is given. Real git, DVC and Dask on this machine (loopback only). A batch system
whose jobs never start is a stand-in `sbatch` that records each submission and
starts nothing (`scancel` does nothing)."""

import copy
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import BIN, TINY_PARAMS, commit, committed_project, copy_of, run_in, write_params
from dulwich.index import Index, IndexEntry

from lossbench.engine import GitIndex, _restore_workspace

GAMMA = "losses.focal.gamma"
# Two losses, one seed, one epoch: each stage trains in seconds.
PARAMS = copy.deepcopy(TINY_PARAMS) | {
    "losses": {"ce": {"kind": "ce"}, "focal": {"kind": "focal", "gamma": 2.0}},
    "seeds": [1],
}
PARAMS["train"] = PARAMS["train"] | {"epochs": 1}
CLUSTER = {"kind": "slurm", "jobs": 1, "cores": 1, "memory": "1GB", "interface": "lo"}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return committed_project(tmp_path_factory.mktemp("lifecycle") / "project", PARAMS)


@pytest.fixture
def project(template: Path, tmp_path: Path) -> Path:
    return copy_of(template, tmp_path)


@pytest.fixture
def idle_slurm(tmp_path: Path) -> Iterator[tuple[dict[str, str], Path, Path]]:
    """An environment whose `sbatch` accepts every job and starts none, the cluster
    file that uses it, and the file each submission is recorded in."""
    bin_dir, submitted = tmp_path / "slurm-bin", tmp_path / "submitted"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f"#!/bin/sh\necho job >> {submitted}\necho 'Submitted batch job 4242'\n")
    (bin_dir / "scancel").write_text("#!/bin/sh\nexit 0\n")
    for name in ("sbatch", "scancel"):
        (bin_dir / name).chmod(0o755)
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(yaml.safe_dump(CLUSTER))
    env = os.environ | {
        "PATH": f"{bin_dir}{os.pathsep}{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
    }
    yield env, cluster, submitted


def _start(root: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """`lossbench ARGS` in its own process group, stdout and stderr together."""
    return subprocess.Popen(
        [sys.executable, "-m", "lossbench", *args],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _wait_for(path: Path, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while not path.exists():
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


def _tool_env() -> dict[str, str]:
    return os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONUNBUFFERED": "1"}


def _lossbench_within(
    root: Path, seconds: float, *args: str, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """`lossbench ARGS`: exit code, stdout and stderr. A run still going after
    `seconds` is killed and fails the test: it should have been refused."""
    process = subprocess.Popen(
        [sys.executable, "-m", "lossbench", *args],
        cwd=root,
        env=env or _tool_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        raise AssertionError(
            f"lossbench {' '.join(args)} still ran after {seconds} s:\n{out}\n{err}"
        ) from None
    return process.returncode, out, err


def _one_line(err: str) -> str:
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


def test_a_second_run_in_a_repository_is_refused_and_a_killed_runs_lock_is_gone(
    project: Path, idle_slurm: tuple[dict[str, str], Path, Path]
) -> None:
    env, cluster, submitted = idle_slurm
    first = _start(project, env, "run", "--cluster", str(cluster))
    _wait_for(submitted, first)  # the first run holds the repository, waiting for its job
    code, out, err = _lossbench_within(
        project, 90, "run", "-S", f"{GAMMA}=0.5", "--cluster", str(cluster), env=env
    )
    assert code == 1 and out == "", out
    assert "another `lossbench run` (process " in _one_line(err), err
    assert f"process {first.pid})" in err and "wait for it to end" in err, err
    assert submitted.read_text() == "job\n"  # the second run submitted nothing
    assert run_in(project, "git", "status", "--porcelain").stdout == ""
    # A run killed outright holds nothing: its lock died with it.
    os.killpg(first.pid, signal.SIGKILL)
    first.communicate()
    code, out, err = _lossbench_within(project, 90, "run", "-S", f"{GAMMA}=-1")
    assert code == 1 and "losses.focal.gamma: Input should be greater" in _one_line(err), err


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (["--retries", "99999999999999999999"], "--retries 99999999999999999999: allowed 0 to 10"),
        (["--retries", "-1"], "--retries -1: allowed 0 to 10"),
        (
            ["-S", "data.seed=range(0,100000)"],
            "-S data.seed=range(0,100000): 100,000 grid points; lossbench run takes at most 100",
        ),
        (
            ["-S", f"{GAMMA}=range(0,11)", "-S", "data.seed=range(0,10)"],
            "-S data.seed=range(0,10): 110 grid points",
        ),
        (["-S", "data.seed=range(0,10**12)"], "-S data.seed=range(0,10**12): "),
    ],
)
def test_retries_and_grid_size_out_of_bounds_are_one_line_before_anything_starts(
    project: Path, setting: list[str], message: str
) -> None:
    code, out, err = _lossbench_within(project, 120, "run", *setting)
    assert code == 1 and out == "", out
    assert message in _one_line(err), err
    assert run_in(project, "git", "status", "--porcelain").stdout == ""


@pytest.mark.parametrize("case", ["missing", "no git", "no commit"])
def test_a_root_that_is_missing_or_has_no_commit_is_one_line_naming_it(tmp_path: Path, case: str) -> None:
    root = tmp_path / "project"
    if case != "missing":
        root.mkdir()
        write_params(root, PARAMS)
    if case == "no commit":
        run_in(root, "git", "init", "-q")
    expected = {
        "missing": f"--root {root}: no such folder",
        "no git": f"--root {root}: not in a git repository",
        "no commit": f"--root {root}: its git repository has no commit yet",
    }[case]
    code, _out, err = _lossbench_within(tmp_path, 60, "run", "--root", str(root))
    assert code == 1 and expected in _one_line(err), err
    assert "--params" not in err and "fatal:" not in err, err


def test_an_emptied_seed_list_in_a_flow_style_params_file_names_the_setting(project: Path) -> None:
    (project / "params.yaml").write_text(yaml.safe_dump(PARAMS, default_flow_style=True, sort_keys=False))
    commit(project, "flow style")
    code, _out, err = _lossbench_within(project, 60, "run", "-S", "seeds=[]")
    line = _one_line(err)
    assert code == 1 and line.startswith(
        "error: params.yaml -S seeds=[]: seeds: List should have at least 1"
    ), line
    assert "tmp" not in line, line
    assert run_in(project, "git", "status", "--porcelain").stdout == ""


def _port_8787_taken() -> socket.socket | None:
    """Port 8787 (Dask's dashboard default) held, so that Dask would warn; None if taken already."""
    held = socket.socket()
    try:
        held.bind(("", 8787))
    except OSError:
        held.close()
        return None
    held.listen()
    return held


def test_sigterm_while_waiting_for_batch_jobs_is_one_line_without_a_traceback(
    project: Path, idle_slurm: tuple[dict[str, str], Path, Path]
) -> None:
    env, cluster, submitted = idle_slurm
    held = _port_8787_taken()
    try:
        runner = _start(project, env, "run", "--cluster", str(cluster))
        _wait_for(submitted, runner)
        time.sleep(2)  # into the wait for workers
        runner.send_signal(signal.SIGTERM)
        output, _ = runner.communicate(timeout=120)
    finally:
        if held is not None:
            held.close()
    assert runner.returncode == 130, output
    assert "Traceback" not in output and "CancelledError" not in output, output
    assert "8787" not in output, output  # Dask's "Port 8787 is already in use" warning
    # The tasks were counted before the cluster started; the run ends with one line.
    assert output.index("2 training stage(s) of 1 grid point(s)") < output.index("interrupted"), output
    assert output.rstrip().endswith("interrupted (no file is left half-written)"), output
    assert run_in(project, "git", "status", "--porcelain").stdout == ""


def _wait_until_changed(path: Path, before: bytes, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 400
    while path.read_bytes() == before:
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, f"{path} never changed"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["Ctrl-C", "SIGTERM"])
def test_an_interrupted_finish_restores_params_and_says_so(project: Path, how: str) -> None:
    params = project / "params.yaml"
    committed = params.read_bytes()
    runner = _start(project, _tool_env(), "run", "-S", f"{GAMMA}=0.5", "--retries", "0")
    # The tasks are done and `dvc exp run -S` here has written the grid value into params.yaml.
    _wait_until_changed(params, committed, runner)
    if how == "Ctrl-C":
        os.killpg(runner.pid, signal.SIGINT)  # a terminal sends it to the whole foreground group
    else:
        runner.send_signal(signal.SIGTERM)  # `kill PID`: lossbench alone
    output, _ = runner.communicate(timeout=300)
    assert runner.returncode == 130, output
    assert "Traceback" not in output, output
    assert params.read_bytes() == committed
    last = output.strip().splitlines()[-1]
    assert last.startswith("interrupted: lossbench run: the finish was stopped;"), output
    said = (
        "restored params.yaml (as committed)",
        "git's index of params.yaml",
        "params.yaml is as committed",
    )
    assert any(words in last for words in said), output
    # Nothing runs on in the workspace, and DVC's experiment executor left no ref behind.
    time.sleep(2)
    assert params.read_bytes() == committed
    assert run_in(project, "git", "for-each-ref", "refs/exps/exec").stdout == ""
    assert run_in(project, "git", "status", "--porcelain", "--", "params.yaml").stdout == ""


def test_what_an_interrupted_finish_left_is_put_back_and_named(project: Path) -> None:
    # What a `dvc exp run` killed before it could clean up leaves: the grid value in
    # params.yaml, a dvc.lock of its own, both staged for its commit, and its executor's refs.
    committed = (project / "params.yaml").read_bytes()
    before = GitIndex.of(project)
    write_params(
        project, PARAMS | {"losses": {"ce": {"kind": "ce"}, "focal": {"kind": "focal", "gamma": 0.5}}}
    )
    (project / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    run_in(project, "git", "add", "params.yaml", "dvc.lock")
    run_in(project, "git", "update-ref", "refs/exps/exec/EXEC_HEAD", "HEAD")
    said = _restore_workspace(project, committed, None, before)
    assert (project / "params.yaml").read_bytes() == committed and not (project / "dvc.lock").exists()
    assert run_in(project, "git", "for-each-ref", "refs/exps/exec").stdout == ""
    assert said.startswith(
        "the finish was stopped; restored params.yaml (as committed), dvc.lock (as before the run), "
        "git's index of params.yaml and dvc.lock (as before the run), "
        "DVC's experiment refs (refs/exps/exec removed)."
    ), said
    assert run_in(project, "git", "status", "--porcelain").stdout == ""


@pytest.mark.parametrize("damage", ["an entry with a null hash", "a truncated file"])
def test_an_index_git_cannot_write_is_put_back_whole(project: Path, damage: str) -> None:
    # A stopped `dvc exp run` once left an index entry with a null hash, and git then
    # refused to write the index ("cache entry has null sha1").
    committed = (project / "params.yaml").read_bytes()
    before = GitIndex.of(project)
    write_params(project, PARAMS | {"seeds": [1, 2]})
    run_in(project, "git", "add", "params.yaml")
    index = project / ".git" / "index"
    if damage == "a truncated file":
        index.write_bytes(index.read_bytes()[: len(index.read_bytes()) // 2])
    else:
        dulwich_index = Index(str(index))
        entry = dulwich_index[b"params.yaml"]
        fields = {name: getattr(entry, name) for name in entry.__dataclass_fields__}
        dulwich_index[b"data/partial"] = IndexEntry(**fields | {"sha": b"0" * 40})
        dulwich_index.write()
        assert "null sha1" in run_in(project, "git", "add", "params.yaml", check=False).stderr
    said = _restore_workspace(project, committed, None, before)
    assert "git's index, whole (as before the run" in said, said
    assert index.read_bytes() == before.content
    assert run_in(project, "git", "status", "--porcelain").stdout == ""
