"""A rerun with the same params: the same bytes in every declared output, and, when
`dvc repro -f` forces every stage, seeds still trained ahead on idle cores, or, tiny
ones, in the first stage's own process."""

import copy
import re
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import TINY_PARAMS, commit, make_project, run_in, write_params

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


@pytest.mark.slow
def test_tiny_seeds_train_in_the_first_stage_that_trains_and_change_no_byte(
    rerun: tuple[Path, str, str, int], tmp_path: Path
) -> None:
    # The rerun's project with one worker (TINY_PARAMS): no seed is worth a worker process
    # of its own. machine.workers is no stage's param: nothing is stale.
    root = tmp_path / "project"
    shutil.copytree(rerun[0], root, symlinks=True)
    write_params(root, PARAMS | {"machine": TINY_PARAMS["machine"]})
    # Forced, every stage reruns: the first training stage trains every seed, one after
    # another, and torch is imported once for training (and once by calibrate).
    forced = run_in(root, "dvc", "repro", "-f", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert re.findall(r"Running stage '(train@[^']+)'", forced.stdout) == [
        "train@ce-1",
        "train@ce-2",
        "train@focal-1",
        "train@focal-2",
    ]
    assert "; then, in this process (tiny seeds): ce seed 2, focal seed 1, focal seed 2\n" in forced.stdout
    for stage in ("ce-2", "focal-1", "focal-2"):
        moved = (
            f"train@{stage}: .+ trained and evaluated ahead by train@ce-1 in this dvc run; its files moved"
        )
        assert re.search(moved, forced.stdout), forced.stdout
    assert len(re.findall(r"\|\s+torch$", forced.stderr, flags=re.MULTILINE)) == 2, forced.stderr[-3000:]
    # The same bytes in every output as seeds trained by their own stages or on idle
    # cores (the rerun's first run): dvc.lock differs only in machine.workers, which
    # validate records with the rest of params.yaml. Nothing is left behind.
    lock, before = yaml.safe_load((root / "dvc.lock").read_text()), yaml.safe_load(rerun[1])
    assert lock["stages"]["validate"]["params"]["params.yaml"].pop("machine") == {"workers": 1}
    assert before["stages"]["validate"]["params"]["params.yaml"].pop("machine") == {"workers": 2}
    assert lock == before
    left = [path for path in (root / "data" / "checkpoints").rglob("*") if not path.is_dir()]
    assert left == [] and not list((root / "data" / "checkpoints").rglob("*.finished")), left
