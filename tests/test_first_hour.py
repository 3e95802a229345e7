"""What a new user meets in the first hour: readable messages and help, checks
that find missing data, `lossbench compare` within a terminal's width, and the
commands the READMEs give."""

from __future__ import annotations

import copy
import csv
import io
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import PROJECT, TINY_PARAMS, commit, lossbench, run_in, write_params
from rich.console import Console
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
    from lossbench import cifar10, cifar10_jpeg, validate

    assert validate.CIFAR10_FILES == (cifar10.BATCH_FOLDER, cifar10.ARCHIVE_NAME)
    assert validate.CIFAR10_JPEG_ARCHIVE == cifar10_jpeg.ARCHIVE_NAME


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
                {
                    path: entry.get("data")
                    for path, entry in record["metrics"].items()
                    if path.count("/") == 1
                },
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


def test_this_commit_lists_what_dvc_exp_show_lists(project: Path) -> None:
    (project / "dvc.yaml").write_text(HEADLINES_ONLY)
    _headlines(project, 0.5)
    commit(project, "first")
    ours = experiments.exp_show(project)  # nothing run: the workspace is the commit
    assert [record["rev"] for record in experiments.experiment_records(ours)] != ["workspace"]
    params = copy.deepcopy(TINY_PARAMS)
    for epochs, accuracy in ((3, 0.6), (4, 0.65)):
        params["train"]["epochs"] = epochs  # type: ignore[index]
        write_params(project, params)
        _headlines(project, accuracy)
        run_in(project, "dvc", "exp", "save", "-n", f"epochs-{epochs}")
    _headlines(project, 0.7)  # a run in the workspace, not saved: its own row
    for workspace_row in (True, False):
        by_dvc = json.loads(run_in(project, "dvc", "exp", "show", "--json").stdout)
        ours = experiments.exp_show(project)
        assert _essentials(experiments.experiment_records(ours)) == _essentials(
            experiments.experiment_records(by_dvc)
        )
        assert (
            "workspace" in {record["rev"] for record in experiments.experiment_records(ours)}
        ) == workspace_row
        _headlines(project, 0.65)  # the last experiment's numbers again: the workspace is that run


def test_rev_lists_what_dvc_exp_show_rev_lists(project: Path) -> None:
    (project / "dvc.yaml").write_text(HEADLINES_ONLY)
    _headlines(project, 0.5)
    commit(project, "first")
    params = copy.deepcopy(TINY_PARAMS)
    for epochs, accuracy in ((3, 0.6), (4, 0.65)):  # two experiments of the first commit
        params["train"]["epochs"] = epochs  # type: ignore[index]
        write_params(project, params)
        _headlines(project, accuracy)
        run_in(project, "dvc", "exp", "save", "-n", f"epochs-{epochs}")
        run_in(project, "git", "checkout", "-q", "--", ".")
    _headlines(project, 0.8)
    commit(project, "last")  # HEAD has moved on: the sweep's commit is HEAD~1
    run_in(project, "dvc", "exp", "save", "-n", "of-the-last")

    for rev in ("HEAD~1", "HEAD"):  # a commit inside the branch, and the branch's tip
        sha = run_in(project, "git", "rev-parse", rev).stdout.strip()
        by_dvc = json.loads(
            run_in(project, "dvc", "exp", "show", "--json", f"--rev={sha}", "--hide-workspace").stdout
        )
        ours = experiments.exp_show(project, rev=rev)
        assert _essentials(experiments.experiment_records(ours)) == _essentials(
            experiments.experiment_records(by_dvc)
        ), rev
    names = {
        record.get("name")
        for record in experiments.experiment_records(experiments.exp_show(project, rev="HEAD~1"))
    }
    assert {"epochs-3", "epochs-4"} <= names and "of-the-last" not in names


# --- compare within a terminal's width ------------------------------------------------------------

LOSSES = list(TINY_PARAMS["losses"])  # type: ignore[call-overload]
# Four params that differ, with the long keys a new user changes first.
CHANGES = [
    ("data", "cifar10_jpeg", "train_per_class"),
    ("data", "cifar10_jpeg", "test_per_class"),
    ("losses", "focal_low", "gamma"),
    ("losses", "focal_high", "gamma"),
]


def _run_params(index: int) -> dict[str, Any]:
    params = copy.deepcopy(TINY_PARAMS)
    params["data"] = {"dataset": "cifar10_jpeg", "cifar10_jpeg": {}}
    for number, (top, middle, key) in enumerate(CHANGES):
        params[top].setdefault(middle, {})[key] = (  # type: ignore[index]
            float(index + number) / 4 if key == "gamma" else 100 * (index + 1) + number
        )
    return params


def _accuracy(run: int, loss: int) -> float:
    return round(0.3 + run / 20 + loss / 100, 3)


def _rendered(width: int, runs: int = 6) -> list[str]:
    """compare's output for `runs` experiments with long names, in a console `width` wide."""
    records, headlines = [], []
    for index in range(runs):
        records.append(
            {
                "rev": f"{index}" * 40,
                "name": f"tiny-epochs-images-{index}",
                "params": {"params.yaml": {"data": _run_params(index)}},
            }
        )
        headlines.append({name: (_accuracy(index, number), 0.012) for number, name in enumerate(LOSSES)})
    console = Console(width=width, record=True, file=io.StringIO())
    for renderable in experiments.runs_tables(records, headlines, "", width):
        console.print(renderable)
    return console.export_text().splitlines()


def _assert_readable(lines: list[str], width: int, runs: int) -> None:
    text = "\n".join(lines)
    assert max(len(line) for line in lines) <= width, text
    assert "…" not in text, text
    header = next(line for line in lines if line.startswith("run ") and "mae" in line)
    assert header.split()[-len(LOSSES) :] == LOSSES, text  # each loss name whole
    for index in range(runs):
        row = next(line for line in lines if line.startswith(f"tiny-epochs-images-{index} ") and "±" in line)
        cells = re.findall(r"\d\.\d{3} ± \d\.\d{3}", row)
        assert cells == [f"{_accuracy(index, n):.3f} ± 0.012" for n in range(len(LOSSES))], text
    for top, middle, key in CHANGES:  # every differing param is named in full somewhere
        assert f"{top}.{middle}.{key}" in text, text


def test_compare_fits_120_columns_with_four_differing_params_and_six_runs() -> None:
    lines = _rendered(120)
    _assert_readable(lines, 120, 6)
    # One table: each run is one line holding its params and its accuracies.
    assert sum("what differs, and final test accuracy" in line for line in lines) == 1, lines
    assert len([line for line in lines if line.startswith("tiny-epochs-images-")]) == 6, lines


@pytest.mark.parametrize("width", [80, 100])
def test_compare_in_a_narrower_terminal_cuts_and_wraps_nothing(width: int) -> None:
    _assert_readable(_rendered(width), width, 6)


def test_compare_labels_are_short_and_unambiguous() -> None:
    keys = ["losses.focal_low.gamma", "losses.focal_high.gamma", "seeds", "train.seeds", "train.epochs"]
    labels = experiments.param_labels(keys)
    assert len(set(labels.values())) == len(keys), labels
    assert labels["train.epochs"] == "epochs" and labels["seeds"] == "seeds", labels
    assert all(len(label) <= experiments.MAX_LABEL for label in labels.values()), labels


@pytest.mark.parametrize("columns", [80, 120])
def test_compare_through_the_cli_fits_the_terminal(project: Path, columns: int) -> None:
    for index in range(6):  # six commits, four params differing between them
        write_params(project, _run_params(index))
        (project / "metrics").mkdir(exist_ok=True)
        for number, name in enumerate(LOSSES):
            headline = {"test_acc": _accuracy(index, number), "test_sd": 0.012}
            (project / "metrics" / f"{name}.json").write_text(json.dumps(headline))
        commit(project, f"run {index}")
    result = lossbench(project, "compare", "--all-commits", env={"COLUMNS": str(columns)})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    text = result.stdout
    assert max(len(line) for line in lines) <= columns, text
    assert "…" not in text and "6 runs" in text, text
    header = next(line for line in lines if line.startswith("run ") and "mae" in line)
    assert header.split()[-len(LOSSES) :] == LOSSES, text
    for index in range(6):
        assert f"{_accuracy(index, 0):.3f} ± 0.012" in text, text
    if columns == 120:
        assert sum("what differs, and final test accuracy" in line for line in lines) == 1, text


# --- the protocol the defaults follow is in the repository ----------------------------------------


def test_params_files_point_to_the_protocol_in_the_repository() -> None:
    for path in [PROJECT / "params.yaml", *sorted(PROJECT.glob("studies/*/params.yaml"))]:
        comments = "\n".join(line for line in path.read_text().splitlines() if "#" in line)
        assert "shared/" not in comments, path  # outside the repository
    assert "(docs/protocol.md)" in (PROJECT / "params.yaml").read_text().splitlines()[1]
    protocol = (PROJECT / "docs" / "protocol.md").read_text()
    for key in ("train.lr: 0.1", "train.epochs: 30", "train.batch_size: 128", "train.lr_step_epochs: 5"):
        assert f"`{key}`" in protocol, key


# --- dvc plots show's page -------------------------------------------------------------------------


def test_no_plot_is_declared_twice_across_the_dvc_yaml_files() -> None:
    declared: list[str] = []
    for path in sorted(PROJECT.glob("**/dvc.yaml")):
        if ".venv" in path.parts or ".git" in path.parts:
            continue
        for entry in yaml.safe_load(path.read_text()).get("plots", []):
            names = [entry] if isinstance(entry, str) else list(entry)
            declared += [str((path.parent / name).resolve().relative_to(PROJECT)) for name in names]
    repeated = {name for name in declared if declared.count(name) > 1 and name.endswith(".png")}
    assert not repeated, repeated


def _template(name: str) -> dict[str, Any]:
    return json.loads((PROJECT / ".dvc" / "plots" / f"{name}.json").read_text())


RELIABILITY_PLOTS = {
    "calibration": "Reliability before temperature scaling",
    "calibration_scaled": "Reliability after temperature scaling",
}


@pytest.mark.parametrize("folder", [".", "studies/cifar10-jpeg"])
def test_plots_show_draws_each_losss_reliability_bins_before_and_after_scaling(
    tmp_path: Path, folder: str
) -> None:
    """The committed reliability bins (publish's plots/calibration, calibrate's
    plots/calibration_scaled) as Vega in `dvc plots show`: a plot per loss and side,
    with every seed's non-empty bins and their counts, on the offline page."""
    source, root = PROJECT / folder, tmp_path / "project"
    root.mkdir()
    run_in(root, "git", "init", "-q")
    run_in(root, "dvc", "init", "-q")
    shutil.copy(PROJECT / ".dvc" / "config", root / ".dvc" / "config")
    shutil.copytree(PROJECT / ".dvc" / "plots", root / ".dvc" / "plots", dirs_exist_ok=True)
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(source / name, root / name)
    for side in RELIABILITY_PLOTS:
        shutil.copytree(source / "plots" / side, root / "plots" / side)
    losses = list(yaml.safe_load((root / "params.yaml").read_text())["losses"])
    assert len(losses) >= 4

    shown = json.loads(run_in(root, "dvc", "plots", "show", "--json").stdout)
    # The other plots' files are not copied here.
    assert not [e for e in shown.get("errors", []) if "/calibration" in e["source"]], shown["errors"]
    for side, title in RELIABILITY_PLOTS.items():
        for loss in losses:
            path = f"plots/{side}/{loss}.csv"
            (plot,) = shown["data"][path]
            assert plot["type"] == "vega" and plot["content"]["title"]["text"] == title, path
            drawn = [
                (d["seed"], d["bin"], d["count"], d["confidence"], d["accuracy"])
                for d in plot["content"]["data"]["values"]
                if d["filename"] == path and int(d["count"]) > 0
            ]
            with (root / path).open() as rows:
                written = [
                    (r["seed"], r["bin"], r["count"], r["confidence"], r["accuracy"])
                    for r in csv.DictReader(rows)
                    if int(r["count"]) > 0
                ]
            assert drawn == written and len({seed for seed, *_ in drawn}) >= 2, path

    run_in(root, "dvc", "plots", "show", "-o", "page")
    page = (root / "page" / "index.html").read_text()
    assert not re.search(r"<script[^>]*\bsrc=", page), "the page loads a script"
    for side, title in RELIABILITY_PLOTS.items():
        assert page.count(json.dumps(title)) == len(losses), title
        for loss in losses:
            assert f'<div id = "plots_{side}_{loss}_csv"' in page, (side, loss)


def test_seed_colours_are_not_loss_colours() -> None:
    from lossbench.figures import FIXED_COLOURS, OTHER_COLOURS

    colour = _template("by_seed")["encoding"]["color"]
    assert colour["field"] == "seed_number"
    scheme = colour.get("scale", {}).get("scheme")
    assert scheme is not None and scheme["name"] == "greys", colour  # no loss is grey
    assert not {c.lower() for c in (*FIXED_COLOURS.values(), *OTHER_COLOURS)} & {"#7f7f7f", "grey"}


@pytest.mark.parametrize("name", ["by_loss", "by_loss_log"])
def test_overlays_draw_the_seed_band_from_curves_csv(name: str) -> None:
    from test_figures import RESULTS

    from lossbench.report_tables import overlay_table

    template = _template(name)
    calculated = {step["as"]: step["calculate"] for step in template["transform"] if "calculate" in step}
    assert calculated["lowest_seed"] == "datum['<DVC_METRIC_Y>_min']"
    assert calculated["highest_seed"] == "datum['<DVC_METRIC_Y>_max']"
    band, line = template["layer"]
    assert band["mark"]["type"] == "area" and band["encoding"]["y2"] == {"field": "highest_seed"}
    assert line["mark"]["type"] == "line"
    table = overlay_table(RESULTS)
    for column in ("test_acc", "train_acc", "test_loss", "train_loss"):
        assert {f"{column}_min", f"{column}_max"} <= set(table.columns)
        assert (table[f"{column}_min"] <= table[column]).all() and (
            table[column] <= table[f"{column}_max"]
        ).all()


def test_the_curves_figure_says_which_variant_it_shows() -> None:
    import matplotlib.pyplot as plt
    from test_figures import RESULTS

    from lossbench import figures
    from lossbench.params import DataParams

    assert figures.data_variant(DataParams()) == ""
    variant = figures.data_variant(DataParams(imbalance_ratio=100.0))
    assert variant == "long-tailed training set (imbalance ratio 100)"
    assert figures.data_variant(DataParams(label_noise=0.4)) == "40% of training labels flipped"
    figure = figures.draw_curves(RESULTS, chance=0.1, variant=variant)
    try:
        assert figure.get_suptitle().startswith("Long-tailed training set (imbalance ratio 100)")
    finally:
        plt.close(figure)


def test_compare_of_this_commit_is_as_wide_as_the_readme_says() -> None:
    stated = re.search(r"± sd: (\d+) characters wide for this commit", (PROJECT / "README.md").read_text())
    assert stated, "README gives the width"
    result = lossbench(PROJECT, "compare", env={"COLUMNS": "120"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    if lines[0].startswith("1 run: "):  # no experiments here
        assert max(len(line) for line in lines) == int(stated.group(1)), result.stdout


def test_the_report_names_runs_at_chance_in_words(reproduced: Path) -> None:
    # The tiny project's runs (2 epochs on 300 images) stay at chance.
    result = lossbench(reproduced, "report")
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if "runs at chance" in line)
    assert line.strip().startswith("runs at chance: mae seed 1 (never left chance); mae seed 2 ("), line
    assert "{" not in line, line
