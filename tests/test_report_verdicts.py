"""The report's verdicts on the committed ten-seed JPEG study, rebuilt in a
temporary folder from its published files (no training): Holm's column
against statsmodels, and labels that name one loss each."""

import json
import shutil
from itertools import combinations
from pathlib import Path

import pandas as pd
import pytest
from conftest import PROJECT, lossbench
from ruamel.yaml import YAML
from scipy import stats
from statsmodels.stats.multitest import multipletests

STUDY = PROJECT / "studies" / "cifar10-jpeg"


def _copy_study(root: Path) -> Path:
    for folder in ("metrics", "plots"):
        shutil.copytree(STUDY / folder, root / folder)
    (root / "data").mkdir()
    shutil.copy(STUDY / "data" / "class_counts.json", root / "data")
    shutil.copy(STUDY / "params.yaml", root / "params.yaml")
    return root


def _accuracy(root: Path, name: str) -> list[float]:
    details = json.loads((root / "metrics" / "details" / f"{name}.json").read_text())
    return [numbers["final_test_acc"] for numbers in details["per_seed"].values()]


def test_the_holm_column_matches_statsmodels(tmp_path: Path) -> None:
    root = _copy_study(tmp_path)
    result = lossbench(root, "report")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(root / "plots" / "significance.csv")
    names = list(YAML(typ="safe").load((root / "params.yaml").read_text())["losses"])  # the table's pairs
    raw = [stats.ttest_rel(_accuracy(root, a), _accuracy(root, b)).pvalue for a, b in combinations(names, 2)]
    assert list(table["p (paired t)"]) == pytest.approx(raw, abs=5e-5)
    assert list(table["p (Holm)"]) == pytest.approx(list(multipletests(raw, method="holm")[1]), abs=5e-5)
    # The JPEG study's Focal γ=0.5 − SCE gap (1.8 points) does not survive the family's correction.
    pair = table[(table["first"] == "Focal (γ=0.5)") & (table["second"] == "SCE (α=0.1, β=1)")].iloc[0]
    assert pair["p (paired t)"] < 0.05 and pair["p (Holm)"] > 0.05
    assert pair["verdict"] == "inconclusive"
    summary = json.loads((root / "metrics" / "summary.json").read_text())
    assert summary["margins"] == {"accuracy_margin": 0.01, "ece_margin": 0.01, "epoch_margin": 2.0}
    report = (root / "plots" / "report.md").read_text()
    for words in ("rules out", "ruled out", "would have detected", "could detect"):
        assert words not in report


def test_two_losses_with_the_same_settings_get_distinct_labels(tmp_path: Path) -> None:
    root = _copy_study(tmp_path)
    yaml = YAML()
    params = yaml.load((root / "params.yaml").read_text())
    params["losses"]["ce2"] = {"kind": "ce"}
    with (root / "params.yaml").open("w") as file:
        yaml.dump(params, file)
    for folder, suffix in (
        ("metrics/details", "json"),
        ("metrics/calibration", "json"),
        ("plots/calibration_scaled", "csv"),
        ("metrics", "json"),
        ("plots/history", "csv"),
        ("plots/calibration", "csv"),
        ("plots/confusion", "csv"),
    ):
        source = root / folder / f"ce.{suffix}"
        text = source.read_text()
        if folder in ("metrics/details", "metrics/calibration"):
            details = json.loads(text)
            details["loss"] = "ce2"
            text = json.dumps(details)
        (root / folder / f"ce2.{suffix}").write_text(text)
    result = lossbench(root, "report")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(root / "plots" / "significance.csv")
    labels = set(table["first"]) | set(table["second"])
    assert {"ce", "ce2"} <= labels and "CE" not in labels
    recall = (root / "plots" / "report.md").read_text().split("## Per-class recall")[1].split("##")[0]
    rows = [line.split("|")[1].strip() for line in recall.splitlines() if line.startswith("| ")][1:]
    assert len(rows) == len(set(rows)) == len(params["losses"])
