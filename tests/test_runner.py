"""`lossbench repro`: concurrent training stages, a clean DVC state afterwards,
the same numbers as `dvc repro`, and a clean stop when a stage fails."""

import copy
import os
import signal
from pathlib import Path

import pytest
import yaml
from conftest import BIN, TINY_PARAMS, run_in, start_in, write_params
from rich.console import Console

from lossbench.params import load_params
from lossbench.runner import repro

LOSSES = ("mae", "ce", "focal_low", "focal_high")


def _commit(root: Path) -> None:
    run_in(root, "git", "add", "-A")
    run_in(root, "git", "commit", "-qm", "init")


def _metrics_bytes(root: Path) -> dict[str, bytes]:
    return {name: (root / "metrics" / f"{name}.json").read_bytes() for name in LOSSES}


def test_repro_trains_concurrently_records_every_stage_and_matches_dvc_repro(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _commit(project)
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    console = Console(record=True, width=200)
    runs = repro(load_params(project / "params.yaml"), project, console, jobs=2)

    by_stage = {run.stage: run for run in runs}
    assert [run.state for run in runs] == ["ran"] * 6
    # jobs=2: the first two training stages ran at the same time.
    first, second = by_stage["train@mae"], by_stage["train@ce"]
    assert second.started < first.started + first.seconds and first.started < second.started + second.seconds
    # Every stage is recorded and DVC sees nothing left to do.
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"prepare", *(f"train@{n}" for n in LOSSES), "report"}
    assert "Data and pipelines are up to date." in run_in(project, "dvc", "status").stdout
    output = console.export_text()
    assert "[train@ce]   ce seed 2 epoch   2/2" in output  # per-stage progress lines
    assert "dvc status: data and pipelines are up to date" in output
    assert (project / "logs" / "train@ce.log").read_text().count("epoch") >= 4

    # A sequential `dvc repro -f` gives byte-identical metrics (threads are fixed).
    concurrent = _metrics_bytes(project)
    run_in(project, "dvc", "repro", "-f")
    assert _metrics_bytes(project) == concurrent

    # Nothing changed: every stage is reported up to date.
    again = run_in(project, "lossbench", "repro", "--jobs", "2")
    summary = again.stdout.split("lossbench repro:")[-1]
    for stage in ("prepare", *(f"train@{n}" for n in LOSSES), "report"):
        assert any(stage in line and "up to date" in line for line in summary.splitlines()), stage


def _slow_and_bad_params() -> dict[str, object]:
    """`bad` fails at once (3 class weights for 10 classes); `slow` would train for minutes."""
    params = copy.deepcopy(TINY_PARAMS)
    params["data"]["synthetic"]["train_size"] = 1000  # type: ignore[index]
    params["train"].update({"epochs": 400, "seeds": [1]})  # type: ignore[attr-defined]
    params["losses"] = {
        "bad": {"kind": "focal", "gamma": 2.0, "alpha": [1.0, 1.0, 1.0]},
        "slow": {"kind": "ce"},
        "ce": {"kind": "ce"},
        "mae": {"kind": "mae"},
    }
    return params


def test_a_failing_stage_stops_the_others_and_nothing_half_done_is_recorded(project: Path) -> None:
    write_params(project, _slow_and_bad_params())
    _commit(project)
    result = run_in(project, "lossbench", "repro", "--jobs", "2", check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    summary = result.stdout.split("lossbench repro:")[-1]
    states = {
        line.split("│")[1].strip(): line.split("│")[2].strip() for line in summary.splitlines() if "│" in line
    }
    assert states["prepare"] == "ran"
    assert states["train@bad"] == "failed"
    assert states["train@slow"] == "stopped"
    assert states["train@ce"] == states["train@mae"] == states["report"] == "not started"
    assert "train@bad failed" in result.stderr and "losses.bad.alpha" in result.stderr
    # Stopped like Ctrl-C (checkpointing whatever epochs it finished), no outputs.
    assert "interrupted" in (project / "logs" / "train@slow.log").read_text()
    assert not (project / "data" / "runs" / "slow").exists()
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"prepare"}


def test_ctrl_c_stops_every_stage_and_exits_130(project: Path) -> None:
    params = _slow_and_bad_params()
    params["losses"] = {"slow": {"kind": "ce"}, "slow_mae": {"kind": "mae"}}
    write_params(project, params)
    _commit(project)
    runner = start_in(project, "lossbench", "repro", "--jobs", "2", merge_stderr=True)
    assert runner.stdout is not None
    seen: list[str] = []
    for line in runner.stdout:
        seen.append(line)
        if "[train@slow_mae]" in line and "epoch" in line:
            break
    runner.send_signal(signal.SIGINT)  # Ctrl-C reaches only the runner; it stops its stages
    rest, _ = runner.communicate(timeout=120)
    output = "".join(seen) + rest
    assert runner.returncode == 130, output
    assert "stopped; finished stages are recorded in dvc.lock" in output
    summary = output.split("lossbench repro:")[-1]
    assert summary.count("stopped") >= 2
    assert _processes_in(project) == []  # no stage outlives the runner


def _processes_in(folder: Path) -> list[str]:
    """Command lines of the live processes whose working directory is `folder`."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cwd").resolve() == folder.resolve():
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue  # exited meanwhile, or not ours to read
    return found
