"""What a new user meets in the first hour: readable messages and help, checks
that find missing data, `lossbench compare` within a terminal's width, and the
commands the READMEs give."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import PROJECT, TINY_PARAMS, commit, lossbench, run_in, write_params
from typer.testing import CliRunner

from lossbench import experiments
from lossbench.cli import app
from lossbench.errors import ParamsError
from lossbench.params import parse_params


def _refusal(change: dict[str, object]) -> str:
    params = copy.deepcopy(TINY_PARAMS) | change
    with pytest.raises(ParamsError) as refused:
        parse_params(params)
    return str(refused.value)


# --- messages -----------------------------------------------------------------------------------


def test_a_word_where_a_number_belongs_is_called_text_not_a_quoted_string() -> None:
    losses = {"focal_high": {"kind": "focal", "gamma": "two"}}
    assert "losses.focal_high.gamma: Input should be a valid number, not text ('two')" in _refusal(
        {"losses": losses}
    )
    # A number in quotes is still called what it is.
    losses = {"focal_high": {"kind": "focal", "gamma": "2.0"}}
    assert "gamma: Input should be a valid number, not a quoted string" in _refusal({"losses": losses})


def test_duplicate_seeds_are_named() -> None:
    assert "seeds must be distinct; 2 is given more than once" in _refusal({"seeds": [1, 2, 3, 2]})
    assert "seeds must be distinct; 1, 3 are given more than once" in _refusal({"seeds": [3, 1, 3, 1]})


@pytest.mark.parametrize("command", [[], ["compare"], ["check"], ["train"], ["run"]])
def test_dash_h_is_help(command: list[str]) -> None:
    shown = CliRunner().invoke(app, [*command, "-h"], env={"COLUMNS": "120"})
    assert shown.exit_code == 0, shown.output
    assert "Usage: " in shown.output and "-h" in shown.output


@pytest.mark.parametrize("command", [[], ["compare"], ["numerics"], ["check"]])
def test_help_shows_no_bool_metavar_beside_a_flag(command: list[str]) -> None:
    shown = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "120"})
    assert shown.exit_code == 0, shown.output
    assert "<bool>" not in shown.output, shown.output
    if "--params" in shown.output:
        assert "<path>" in shown.output  # options that take a value keep theirs


# --- check and validate find missing data -------------------------------------------------------


@pytest.mark.parametrize("command", ["check", "validate"])
def test_check_and_validate_refuse_a_missing_cifar10_jpeg_archive(tmp_path: Path, command: str) -> None:
    params = copy.deepcopy(TINY_PARAMS)
    params["data"] = {"dataset": "cifar10_jpeg"}
    write_params(tmp_path, params)
    (tmp_path / "data" / "raw" / "cifar10_jpeg").mkdir(parents=True)
    result = lossbench(tmp_path, command)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: data/raw/cifar10_jpeg/cifar10-jpeg.tar.gz is missing"), lines
    assert not (tmp_path / "data" / "validated.txt").exists()


def test_check_refuses_missing_cifar10_when_download_is_off(tmp_path: Path) -> None:
    params = copy.deepcopy(TINY_PARAMS)
    params["data"] = {"dataset": "cifar10", "cifar10": {"download": False}}
    write_params(tmp_path, params)
    result = lossbench(tmp_path, "check")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: CIFAR-10 not found: no data/raw/cifar10/cifar-10-batches-py"), lines


def test_check_passes_with_the_shipped_archive() -> None:
    result = lossbench(PROJECT, "check")
    assert result.returncode == 0, result.stderr


def test_validate_names_cifar10s_files_as_the_reader_does() -> None:
    from lossbench import cifar10, validate

    assert validate.CIFAR10_FILES == (cifar10.BATCH_FOLDER, cifar10.ARCHIVE_NAME)


# --- compare --all-commits reads other commits from git, as DVC would list them -------------------


def _headlines(root: Path, accuracy: float) -> None:
    (root / "metrics").mkdir(exist_ok=True)
    for name in TINY_PARAMS["losses"]:  # type: ignore[attr-defined]
        headline = {"test_acc": accuracy, "test_sd": 0.01, "best_acc": accuracy, "ece": 0.03, "conv_ep": 2.0}
        (root / "metrics" / f"{name}.json").write_text(json.dumps(headline))


def _essentials(records: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """What compare, sweep-report and variants-report read of each run."""
    return sorted(
        (
            record["rev"],
            record.get("name"),
            json.dumps(record["params"], sort_keys=True),
            json.dumps(
                {path: entry.get("data") for path, entry in record["metrics"].items() if path.count("/") == 1},
                sort_keys=True,
            ),
        )
        for record in records
    )


# A pipeline that only declares the headline files, so that `dvc exp save` takes them as they are.
HEADLINES_ONLY = """\
stages:
  publish:
    foreach: ${losses}
    do:
      cmd: "true"
      metrics:
        - metrics/${key}.json:
            cache: false
"""


def test_all_commits_lists_what_dvc_exp_show_all_commits_lists(project: Path) -> None:
    (project / "dvc.yaml").write_text(HEADLINES_ONLY)
    _headlines(project, 0.5)
    commit(project, "first")
    params = copy.deepcopy(TINY_PARAMS)
    params["train"]["epochs"] = 3  # type: ignore[index]
    write_params(project, params)
    _headlines(project, 0.6)
    run_in(project, "dvc", "exp", "save", "-n", "three-epochs")  # an experiment of the first commit
    run_in(project, "git", "checkout", "-q", "--", ".")
    run_in(project, "git", "checkout", "-q", "-b", "side")
    _headlines(project, 0.7)
    commit(project, "on a branch")
    run_in(project, "git", "checkout", "-q", "-")
    _headlines(project, 0.8)
    commit(project, "last")

    by_dvc = json.loads(run_in(project, "dvc", "exp", "show", "--json", "--all-commits").stdout)
    ours = experiments.exp_show(project, all_commits=True)
    assert _essentials(experiments.experiment_records(ours)) == _essentials(
        experiments.experiment_records(by_dvc)
    )
    assert "three-epochs" in {record.get("name") for record in experiments.experiment_records(ours)}
