"""Beyond one machine, with DVC's own engines: the experiment queue from a
fresh checkout, and the run-cache shared through a remote (a local folder)."""

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import run_in, run_queue, write_params

LOSSES = ("mae", "ce", "focal_low", "focal_high")


def _commit(root: Path, message: str) -> None:
    run_in(root, "git", "add", "-A")
    run_in(root, "git", "commit", "-qm", message)


@pytest.mark.slow
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
    for stage in (f"train@{n}-{seed}" for n in LOSSES for seed in (1, 2)):
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
        "train@focal_high-1",
        "train@focal_high-2",
        "publish@focal_high",
        "calibrate",
        "report",
    ]


def _study(project: Path, name: str, params: dict[str, object]) -> Path:
    """studies/NAME in the project: the project's dvc.yaml with its code path moved, as in studies/."""
    study = project / "studies" / name
    shutil.copytree(project / "data" / "raw", study / "data" / "raw")
    text = (project / "dvc.yaml").read_text().replace("code: src/lossbench", "code: ../../src/lossbench")
    (study / "dvc.yaml").write_text(text)
    shutil.copy(project / ".gitignore", study / ".gitignore")
    write_params(study, params)
    return study


@pytest.mark.slow
def test_a_sweep_split_across_two_machines_is_drawn_whole_on_a_third(project: Path, tmp_path: Path) -> None:
    # Three machines share nothing but a git remote and a DVC remote (two local folders).
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["losses"] = {"focal": {"kind": "focal", "gamma": 2.0}}
    _study(project, "sweep", params)
    _commit(project, "a study to sweep")
    git_remote, dvc_remote = tmp_path / "git-remote.git", tmp_path / "dvc-remote"
    run_in(tmp_path, "git", "init", "-q", "--bare", str(git_remote))
    run_in(project, "git", "push", "-q", str(git_remote), "HEAD")

    def machine(name: str) -> Path:
        root = tmp_path / name
        run_in(tmp_path, "git", "clone", "-q", str(git_remote), str(root))
        run_in(root, "dvc", "remote", "add", "--local", "-d", "shared", str(dvc_remote))
        return root

    # Machines A and B each run their part of the sweep through the queue and push it.
    halves = {"machine-a": "0,0.5", "machine-b": "2"}
    for name, gammas in halves.items():
        root = machine(name)
        run_in(
            root, "dvc", "exp", "run", "--queue", "studies/sweep/dvc.yaml",
            "-S", f"studies/sweep/params.yaml:losses.focal.gamma={gammas}",
        )  # fmt: skip
        # Nothing has run in a fresh clone (no dvc.lock, an empty cache): each queued
        # experiment runs every stage, prepare included, in its temporary workspace.
        queued = len(gammas.split(","))
        assert run_queue(root, jobs=1, expected=queued).count("Success") == queued
        assert not (root / "studies" / "sweep" / "dvc.lock").exists()  # the workspace is untouched
        run_in(root, "dvc", "exp", "push", "--run-cache", "origin")
    listed = run_in(project, "dvc", "exp", "list", "--name-only", str(git_remote)).stdout.split()
    assert len(listed) == 3, listed  # both parts are on the git remote

    # Machine C pulls every experiment and draws the whole sweep from its study folder.
    third = machine("machine-c")
    run_in(third, "dvc", "exp", "pull", "--run-cache", "origin")
    study = third / "studies" / "sweep"
    shown = json.loads(run_in(third, "dvc", "exp", "show", "--json").stdout)
    experiments = [exp["revs"][0]["data"] for commit in shown for exp in commit.get("experiments") or []]
    params_file, metrics_file = "studies/sweep/params.yaml", "studies/sweep/metrics/focal.json"
    gammas = sorted(data["params"][params_file]["data"]["losses"]["focal"]["gamma"] for data in experiments)
    assert gammas == [0, 0.5, 2]
    for data in experiments:
        metrics = data["metrics"][metrics_file]["data"]
        assert 0 <= metrics["test_acc"] <= 1 and set(metrics) >= {"test_sd", "ece", "conv_ep"}

    # The runs side by side, in a terminal's width: the γ that differs, the loss's numbers.
    compared = run_in(study, "lossbench", "compare", env={"COLUMNS": "200"}).stdout  # the table's own width
    lines = compared.splitlines()
    assert max(len(line) for line in lines) <= 120, compared
    # A run each: γ, and focal's numbers (the title holds a ± too).
    rows = [line for line in lines if "±" in line and "seed mean" not in line]
    assert "focal.gamma" in compared and len(rows) == 3 and all(row.count("±") == 1 for row in rows), compared

    result = run_in(study, "lossbench", "sweep-report", "--loss", "focal")
    assert "claim 4" in result.stdout and "Friedman rank test over all 3 γ" in result.stdout, result.stdout
    swept = (study / "plots" / "sweep.csv").read_text()
    table = swept.splitlines()
    assert table[0].startswith("gamma,runs,acc_mean")
    assert [line.split(",")[:2] for line in table[1:]] == [
        ["0.0", "2"],
        ["0.5", "2"],
        ["2.0", "2"],
    ]
    assert re.search(
        r"Claim 4, \*.+\* \*\*[a-z ()]+\.\*\* Final test accuracy by γ",
        (study / "plots" / "sweep.md").read_text(),
    )
    assert (study / "plots" / "sweep.png").stat().st_size > 0

    # The run-cache came along: re-running a γ that machine A trained trains nothing on C.
    again = run_in(
        third,
        "dvc",
        "exp",
        "run",
        "studies/sweep/dvc.yaml",
        "-S",
        "studies/sweep/params.yaml:losses.focal.gamma=0.5",
    )
    for seed in (1, 2):
        cached = f"Stage 'studies/sweep/dvc.yaml:train@focal-{seed}' is cached - skipping run"
        assert cached in again.stdout, again.stdout
    assert not re.search(r"seed \d+ epoch", again.stdout)

    # Once HEAD moves on, --rev names the commit the sweep was run from: the same table.
    run_in(study, "lossbench", "sweep-report", "--loss", "focal", "--rev", "HEAD")
    assert (study / "plots" / "sweep.csv").read_text() == swept  # γ=0.5 again: the same runs
    run_in(third, "git", "commit", "-q", "--allow-empty", "-m", "later work")
    moved = run_in(study, "lossbench", "sweep-report", "--loss", "focal", check=False)
    assert moved.returncode == 1 and "need results for at least two values" in moved.stderr
    # Under --rev, HEAD's workspace is not read: here the uncommitted run of γ=0.5 above,
    # made a run of γ=5; nor are HEAD's params, where the loss is no longer focal (at that
    # commit it was).
    for path, old_gamma in (
        ("params.yaml", r"gamma: [0-9.]+"),
        ("metrics/details/focal.json", r'"gamma": [0-9.]+'),
    ):
        text = (study / path).read_text()
        (study / path).write_text(re.sub(old_gamma, old_gamma.split(":")[0] + ": 5.0", text, count=1))
    committed_params = (study / "params.yaml").read_text()
    write_params(study, params | {"losses": {"focal": {"kind": "ce"}}})
    refused = run_in(study, "lossbench", "sweep-report", "--loss", "focal", check=False)
    assert refused.returncode == 1 and "losses.focal: sweep-report needs a focal loss" in refused.stderr
    run_in(study, "lossbench", "sweep-report", "--loss", "focal", "--rev", "HEAD~1")
    assert (study / "plots" / "sweep.csv").read_text() == swept
    # With HEAD's params a focal loss again, the workspace's γ=5 run is still not read.
    (study / "params.yaml").write_text(committed_params)
    run_in(study, "lossbench", "sweep-report", "--loss", "focal", "--rev", "HEAD~1")
    assert (study / "plots" / "sweep.csv").read_text() == swept
    for rev in ("nope", "--all-commits"):  # an option-like value is a name, never an option
        bad = run_in(study, "lossbench", "sweep-report", "--loss", "focal", f"--rev={rev}", check=False)
        assert bad.returncode == 1 and f"--rev {rev!r}: no such commit" in bad.stderr, bad.stderr
