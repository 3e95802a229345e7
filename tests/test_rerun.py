"""A rerun with the same params: the same bytes in every declared output, and, when
`dvc repro -f` forces every stage, seeds still trained ahead on idle cores."""

import copy
import re
from pathlib import Path

import pytest
from conftest import TINY_PARAMS, commit, make_project, run_in

PARAMS = copy.deepcopy(TINY_PARAMS)
PARAMS["losses"] = {"ce": {"kind": "ce"}, "focal": {"kind": "focal", "gamma": 2.0}}
PARAMS["machine"] = {"workers": 2}
TIMINGS = Path("data/timings/ce/seed1.csv")


@pytest.fixture(scope="module")
def rerun(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str, int]:
    """A project run, committed, then run again with `dvc repro -f`: (its root,
    the first run's dvc.lock, the forced run's output, the log's time before it)."""
    root = make_project(tmp_path_factory.mktemp("rerun") / "project", PARAMS)
    run_in(root, "dvc", "repro")
    commit(root, "first run")
    lock = (root / "dvc.lock").read_text()
    logged = (root / TIMINGS).stat().st_mtime_ns if (root / TIMINGS).is_file() else 0
    return root, lock, run_in(root, "dvc", "repro", "-f").stdout, logged


@pytest.mark.slow
def test_a_forced_rerun_trains_seeds_ahead(rerun: tuple[Path, str, str, int]) -> None:
    _, _, forced, _ = rerun
    assert re.findall(r"Running stage '(train@[^']+)'", forced) == [
        "train@ce-1",
        "train@ce-2",
        "train@focal-1",
        "train@focal-2",
    ]
    # Each stage that trains takes the loss's other seed along; that seed's stage only evaluates.
    assert len(re.findall(r"training ahead on idle cores: ce seed 2\n", forced)) == 1, forced
    assert len(re.findall(r"training ahead on idle cores: focal seed 2\n", forced)) == 1, forced
    assert len(re.findall(r"training ahead", forced)) == 2, forced


@pytest.mark.slow
def test_a_rerun_writes_the_same_bytes(rerun: tuple[Path, str, str, int]) -> None:
    """Every declared output is a function of params, code and data: dvc.lock (which
    holds every output's hash) and git (the committed outputs) see no change."""
    root, lock, _, _ = rerun
    assert (root / "dvc.lock").read_text() == lock
    assert run_in(root, "git", "status", "--porcelain").stdout == ""


@pytest.mark.slow
def test_wall_times_go_to_an_undeclared_log(rerun: tuple[Path, str, str, int]) -> None:
    root, _, _, logged = rerun
    log = root / TIMINGS
    assert log.read_text().splitlines()[0] == "seed,epoch,wall_time_s"
    assert len(log.read_text().splitlines()) == 1 + PARAMS["train"]["epochs"]  # type: ignore[index]
    assert log.stat().st_mtime_ns > logged  # rewritten by the forced run, yet git saw no change
