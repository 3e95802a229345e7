"""End to end with real DVC in a temporary git repository, at tiny sizes."""

import json
import os
import re
import signal
from pathlib import Path

import pytest
import yaml
from conftest import run_in, start_repro_until_a_checkpoint, write_params

LOSSES = ["mae", "ce", "focal_low", "focal_high"]
SEEDS = [1, 2]
TRAIN = [f"train@{n}-{s}" for n in LOSSES for s in SEEDS]
PUBLISH = [f"publish@{n}" for n in LOSSES]
STAGES = ["validate", "prepare", *TRAIN, *PUBLISH, "calibrate", "report"]


def ran(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


@pytest.mark.slow
def test_repro_caching_gamma_change_metrics_diff_plots_and_a_fifth_loss(
    reproduced: Path, reproduced_template: tuple[Path, str]
) -> None:
    project = reproduced
    assert ran(reproduced_template[1]) == STAGES  # the first `dvc repro`, in pipeline order
    # Tiny seeds: the first training stage trains all eight, one after another; the
    # other stages move theirs into place (tests/test_rerun.py: the same bytes).
    others = ", ".join(f"{n} seed {s}" for n in LOSSES for s in SEEDS if (n, s) != ("mae", 1))
    assert f"; then, in this process (tiny seeds): {others}\n" in reproduced_template[1]
    assert reproduced_template[1].count("by train@mae-1 in this dvc run; its files moved into place") == 7
    for name in ("mae", "ce", "focal_low", "focal_high"):
        assert all((project / "data" / "runs" / name / f"seed{s}" / "model.pt").is_file() for s in SEEDS)
        details = json.loads((project / "metrics" / "details" / f"{name}.json").read_text())
        assert details["train_samples"] == 300 and details["test_samples"] == 100
        history = (project / "plots" / "history" / f"{name}.csv").read_text().splitlines()
        assert history[0] == "seed,epoch,lr,train_loss,train_acc,test_loss,test_acc"
        assert len(history) == 1 + 2 * 2  # two seeds, two epochs
        assert sorted(details["per_seed"]) == ["seed1", "seed2"] and details["final_test_acc"]["n"] == 2
        # The declared metrics: a few numbers, the seed means of the details.
        headline = json.loads((project / "metrics" / f"{name}.json").read_text())
        assert list(headline) == [
            "test_acc",
            "test_sd",
            "best_acc",
            "ece",
            "conv_ep",
            "at_chance",
        ]
        assert headline["test_acc"] == round(details["final_test_acc"]["mean"], 4)
    for output in (
        "curves.png",
        "final_accuracy.png",
        "reliability.png",
        "report.md",
        "curves.csv",
        "significance.csv",
    ):
        assert (project / "plots" / output).stat().st_size > 0
    summary = json.loads((project / "metrics" / "summary.json").read_text())
    assert sorted(summary["rank"].values()) == [1, 2, 3, 4]
    report = (project / "plots" / "report.md").read_text()
    assert "Focal (γ=0.5)" in report and "Focal (γ=2)" in report
    assert all(f"**{n}." in report for n in range(1, 6))  # a paragraph per claim

    # Nothing changed: nothing runs.
    second = run_in(project, "dvc", "repro")
    assert ran(second.stdout) == [] and "up to date" in second.stdout

    # The interface's verbs fit a terminal: the few headline numbers per loss.
    shown = run_in(project, "dvc", "metrics", "show").stdout
    assert max(len(line) for line in shown.splitlines()) <= 120, shown
    assert shown.count("metrics/") == 4 and "test_acc" in shown and "label" not in shown

    # The number of seed workers never changes results, so it reruns nothing (validate
    # reads all of params.yaml; its stamp stays the same) and keeps the run-cache.
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["machine"] = {"workers": 2}
    write_params(project, params)
    assert sorted(json.loads(run_in(project, "dvc", "status", "--json").stdout)) == ["validate"]
    assert ran(run_in(project, "dvc", "repro").stdout) == ["validate"]

    # Files the pipeline does not own, beside its own, are never deleted, and are named.
    mine = [project / "metrics" / "mine.json", project / "plots" / "history" / "mine.csv"]
    for path in mine:
        path.write_text("{}\n")

    # Change one focal gamma: DVC sees exactly that training stage, its publishing and the
    # report as changed (and validate, which reads all of params.yaml and reruns nothing).
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["losses"]["focal_high"]["gamma"] = 0.0
    write_params(project, params)
    status = json.loads(run_in(project, "dvc", "status", "--json").stdout)
    assert sorted(status) == ["calibrate", "report", "train@focal_high-1", "train@focal_high-2", "validate"]
    third = run_in(project, "dvc", "repro")
    assert ran(third.stdout) == [
        "validate",
        "train@focal_high-1",
        "train@focal_high-2",
        "publish@focal_high",
        "calibrate",
        "report",
    ]
    assert "Focal (γ=0)" in (project / "plots" / "report.md").read_text()
    assert "note: metrics/mine.json is not written by this pipeline" in third.stdout
    assert "note: plots/history/mine.csv is not written" in third.stdout
    assert all(path.read_text() == "{}\n" for path in mine)

    # After one γ edit `dvc metrics diff` shows that loss's rows only, and `dvc params diff` the γ.
    diff = json.loads(run_in(project, "dvc", "metrics", "diff", "--json").stdout)
    assert set(diff) == {"metrics/focal_high.json"}, diff
    table = run_in(project, "dvc", "metrics", "diff").stdout
    assert max(len(line) for line in table.splitlines()) <= 120, table
    assert "losses.focal_high.gamma" in run_in(project, "dvc", "params", "diff").stdout

    # dvc plots show renders every loss's curves, from any folder, with no remote script.
    run_in(project / "plots", "dvc", "plots", "show", "-o", str(project / "html"))
    page = (project / "html" / "index.html").read_text()
    assert not re.search(r"<script[^>]*\bsrc=", page), "the page loads a script"
    assert "vegaEmbed(" in page and "vega-embed 6." in page  # inlined, from .dvc/plots/offline.html
    for name in ("mae", "ce", "focal_low", "focal_high"):
        assert json.dumps({"loss": name})[1:-1] in page, name  # overlays coloured by loss name
        assert f"{name}: test set, first seed" in page, name  # a confusion matrix per loss
        for side in ("calibration", "calibration_scaled"):  # reliability before and after scaling
            assert f'plots_{side}_{name}_csv"' in page, (side, name)

    # A fifth loss adds a stage, its curves and its report row, with no other edit.
    params["losses"]["focal_mid"] = {"kind": "focal", "gamma": 1.0}
    write_params(project, params)
    stages = run_in(project, "dvc", "stage", "list", "--names-only").stdout.split()
    assert "train@focal_mid-1" in stages and "train@focal_mid-2" in stages
    fourth = run_in(project, "dvc", "repro")
    assert ran(fourth.stdout) == [
        "validate",
        "train@focal_mid-1",
        "train@focal_mid-2",
        "publish@focal_mid",
        "calibrate",
        "report",
    ]
    assert "Focal (γ=1)" in (project / "plots" / "curves.csv").read_text()
    assert "focal_mid" in (project / "plots" / "report.md").read_text()
    assert json.loads((project / "metrics" / "summary.json").read_text())["rank"]["focal_mid"] >= 1
    assert run_in(project, "dvc", "status", "--json").stdout.strip() == "{}"


@pytest.mark.slow
def test_determinism_tampering_and_a_killed_repro(project: Path) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["losses"] = {"ce": {"kind": "ce"}}
    params["data"]["synthetic"]["train_size"] = 600
    params["train"]["epochs"] = 12
    params["seeds"] = [1]
    write_params(project, params)
    run_in(project, "dvc", "repro")
    run_in(project, "git", "add", "-A")
    run_in(project, "git", "commit", "-qm", "baseline")

    # Tampered prepared data: DVC sees it and rebuilds it; training is not redone.
    labels = project / "data" / "prepared" / "train_labels.npy"
    original = labels.read_bytes()
    labels.write_bytes(original[:-8] + bytes(8))
    assert "prepare" in json.loads(run_in(project, "dvc", "status", "--json").stdout)
    rebuilt = run_in(project, "dvc", "repro")
    assert ran(rebuilt.stdout) == ["prepare"] and labels.read_bytes() == original

    # SIGKILL the whole `dvc repro` mid-training of a new configuration (a known one
    # would come straight from DVC's run cache); the next repro resumes and ends
    # identical to an uninterrupted run.
    params["train"]["lr"] = 0.05
    write_params(project, params)
    process = start_repro_until_a_checkpoint(project, project / "data" / "checkpoints" / "ce")
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    metrics_file = project / "metrics" / "ce.json"
    assert not metrics_file.exists() or json.loads(metrics_file.read_text())  # complete or absent
    resumed = run_in(project, "dvc", "repro")
    assert (
        ran(resumed.stdout) == ["train@ce-1", "publish@ce", "calibrate", "report"]
        and "resuming after epoch" in resumed.stdout
    )
    assert run_in(project, "dvc", "status", "--json").stdout.strip() == "{}"
    assert [p for p in project.rglob(".*.tmp") if ".dvc" not in p.parts] == []
    run_in(project, "git", "add", "-A")
    run_in(project, "git", "commit", "-qm", "resumed")
    # Same params and seed, every stage run again from scratch: identical metrics (the
    # pipeline is deterministic, and a resumed run equals an uninterrupted one).
    forced = run_in(project, "dvc", "repro", "-f")
    assert ran(forced.stdout) == ["validate", "prepare", "train@ce-1", "publish@ce", "calibrate", "report"]
    assert "resuming" not in forced.stdout
    assert json.loads(run_in(project, "dvc", "metrics", "diff", "--json").stdout) == {}


@pytest.mark.slow
def test_one_seed_is_the_unit_dvc_caches(reproduced: Path) -> None:
    """Adding a seed trains that seed once per loss; removing it trains nothing."""
    before = {name: (reproduced / "metrics" / f"{name}.json").read_bytes() for name in LOSSES}
    params = yaml.safe_load((reproduced / "params.yaml").read_text())
    params["seeds"] = [*SEEDS, 3]
    write_params(reproduced, params)
    added = run_in(reproduced, "dvc", "repro")
    assert ran(added.stdout) == [
        "validate",
        *(f"train@{n}-3" for n in LOSSES),
        *PUBLISH,
        "calibrate",
        "report",
    ]
    details = json.loads((reproduced / "metrics" / "details" / "ce.json").read_text())
    assert sorted(details["per_seed"]) == ["seed1", "seed2", "seed3"]

    params["seeds"] = SEEDS
    write_params(reproduced, params)
    removed = run_in(reproduced, "dvc", "repro")
    assert ran(removed.stdout) == ["validate", *PUBLISH, "calibrate", "report"]
    assert {name: (reproduced / "metrics" / f"{name}.json").read_bytes() for name in LOSSES} == before
    assert run_in(reproduced, "git", "status", "--porcelain", "metrics", "plots").stdout == ""
