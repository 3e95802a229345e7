"""Beyond one machine, with DVC's own engines: the experiment queue from a
fresh checkout, and the run-cache shared through a remote (a local folder)."""

import json
import re
import shutil
from pathlib import Path

import yaml
from conftest import run_in, wait_for_queue, write_params

LOSSES = ("mae", "ce", "focal_low", "focal_high")


def _commit(root: Path, message: str) -> None:
    run_in(root, "git", "add", "-A")
    run_in(root, "git", "commit", "-qm", message)


def test_queued_seed_grid_regenerates_the_data_in_each_temporary_workspace(project: Path) -> None:
    # Nothing has run here: no dvc.lock and an empty cache, so each queued
    # experiment must run prepare itself in its temporary workspace.
    _commit(project, "init")
    for seed in (5, 6):
        run_in(project, "dvc", "exp", "run", "--queue", "-S", f"train.seeds=[{seed}]")
    run_in(project, "dvc", "queue", "start", "-j", "2")
    status = wait_for_queue(project)
    assert status.count("Success") == 2, status

    shown = json.loads(run_in(project, "dvc", "exp", "show", "--json").stdout)
    experiments = [exp for commit in shown for exp in commit.get("experiments") or []]
    seeds = set()
    for experiment in experiments:
        data = experiment["revs"][0]["data"]
        experiment_seeds = data["params"]["params.yaml"]["data"]["train"]["seeds"]
        seeds.add(tuple(experiment_seeds))
        for name in LOSSES:
            metrics = data["metrics"][f"metrics/{name}.json"]["data"]
            assert list(metrics["per_seed"]) == [f"seed{seed}" for seed in experiment_seeds]
            assert 0.0 <= metrics["final_test_acc"]["mean"] <= 1.0
    assert seeds == {(5,), (6,)}
    # The workspace itself was not touched.
    assert not (project / "dvc.lock").exists()


def test_run_cache_pushed_from_one_machine_is_reused_on_another(reproduced: Path, tmp_path: Path) -> None:
    # Machine 1 has computed the pipeline; it shares its run-cache through a remote.
    project = reproduced
    remote = tmp_path / "remote"
    run_in(project, "dvc", "remote", "add", "-d", "shared", str(remote))
    _commit(project, "a shared remote")
    other = tmp_path / "other-machine"
    run_in(tmp_path, "git", "clone", "-q", str(project), str(other))
    # Nothing recorded or computed on machine 2: only the run-cache can help.
    (other / "dvc.lock").unlink()
    shutil.rmtree(other / "metrics")
    run_in(project, "dvc", "push", "--run-cache")

    # Machine 2, same commit, nothing computed: `--pull` fetches the run-cache
    # and, for each stage found there, its outputs from the remote.
    reused = run_in(other, "dvc", "repro", "--pull")
    # prepare and report rerun (seconds; their git-tracked outputs keep them out of
    # the run-cache); prepare rebuilds identical data, so no training stage retrains.
    for stage in (f"train@{n}" for n in LOSSES):
        assert f"Stage '{stage}' is cached - skipping run, checking out outputs" in reused.stdout, stage
    assert "Running stage 'prepare'" in reused.stdout and "Running stage 'report'" in reused.stdout
    assert not re.search(r"seed \d+ epoch", reused.stdout)  # nothing was trained
    for name in LOSSES:
        assert (other / "metrics" / f"{name}.json").read_bytes() == (
            project / "metrics" / f"{name}.json"
        ).read_bytes()
    assert "Data and pipelines are up to date." in run_in(other, "dvc", "status").stdout

    # A γ that machine 1 never ran trains only that stage; the report reruns too.
    params = yaml.safe_load((other / "params.yaml").read_text())
    params["losses"]["focal_high"]["gamma"] = 1.0
    write_params(other, params)
    changed = run_in(other, "dvc", "repro")
    assert re.findall(r"Running stage '([^']+)'", changed.stdout) == [
        "validate",
        "train@focal_high",
        "publish@focal_high",
        "report",
    ]
