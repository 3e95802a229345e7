"""Hostile and damaged input on the analysis side (issue 19): report, publish,
compare, sweep-report and variants-report read what training and git left,
and say in one line what is wrong with it, never a traceback or a verdict
computed from NaN; names from the data reach no report as Markdown or HTML;
a report that fails leaves every previous output as it was."""

import copy
import hashlib
import json
import math
import re
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from conftest import TINY_PARAMS, commit, lossbench, published_details, run_in, write_params

from lossbench.claims import case_verdict, gamma_claim
from lossbench.md import md
from lossbench.verdicts import ClaimVerdict, Margin, Verdict, all_of, judge_pairs

REPORT_OUTPUTS = [
    "plots/curves.png",
    "plots/final_accuracy.png",
    "plots/reliability.png",
    "plots/curves.csv",
    "plots/significance.csv",
    "plots/report.md",
    "metrics/summary.json",
]


def hashes(root: Path, paths: list[str]) -> dict[str, str | None]:
    return {
        path: hashlib.sha256((root / path).read_bytes()).hexdigest() if (root / path).exists() else None
        for path in paths
    }


def temporaries(root: Path) -> list[Path]:
    return [path for path in root.rglob(".*.tmp") if ".dvc" not in path.parts and ".git" not in path.parts]


def file_size_limit(size: int) -> Callable[[], None]:
    """For preexec_fn: in the child, writes beyond `size` bytes fail with EFBIG, as on a full disk."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return limit


def edit_json(path: Path, change: Callable[[Any], Any]) -> None:
    """Rewrite a JSON file through `change` (which may edit in place or return a new value).
    json.dumps writes nan and inf as NaN and Infinity, as Python's json reads them."""
    value = json.loads(path.read_text())
    changed = change(value)
    path.write_text(json.dumps(value if changed is None else changed, indent=2))


def branch(root: Path) -> str:
    """The current branch: `dvc exp show` names HEAD's commit by it."""
    return run_in(root, "git", "rev-parse", "--abbrev-ref", "HEAD").stdout.strip()


def error_lines(result: Any) -> list[str]:
    assert "Traceback" not in result.stderr, result.stderr
    return [line for line in result.stderr.splitlines() if line.strip()]


# --- a nan p-value is never significant ----------------------------------------------------------


def test_a_nan_p_value_is_not_testable_never_significant() -> None:
    (judged,) = judge_pairs([("a", [0.5, math.nan, 0.6], [0.4, 0.5, 0.5])], Margin(0.01))
    assert judged.verdict is Verdict.NOT_TESTABLE
    # Claim 4 from accuracies with a nan in them: neither supported nor contradicted.
    verdict, _ = gamma_claim(
        {0.0: {1: 0.5, 2: 0.55, 3: 0.6}, 1.0: {1: 0.6, 2: math.nan, 3: 0.7}, 3.0: {1: 0.4, 2: 0.45, 3: 0.5}},
        Margin(0.01),
    )
    assert verdict in (ClaimVerdict.NOT_TESTABLE, ClaimVerdict.INCONCLUSIVE)
    assert case_verdict([judged]) is ClaimVerdict.NOT_TESTABLE
    assert all_of([ClaimVerdict.SUPPORTED, ClaimVerdict.NOT_TESTABLE]) is ClaimVerdict.PARTLY


# --- report: damaged run files, one line each ----------------------------------------------------


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda root: edit_json(
                root / "metrics/details/ce.json",
                lambda m: m["per_seed"]["seed1"].__setitem__("final_test_acc", math.nan),
            ),
            "error: metrics/details/ce.json: per_seed.seed1.final_test_acc is NaN, not a finite number",
        ),
        (
            lambda root: edit_json(
                root / "metrics/details/focal_low.json",
                lambda m: m["per_seed"]["seed2"].__setitem__("ece", -math.inf),
            ),
            "error: metrics/details/focal_low.json: per_seed.seed2.ece is -Infinity, not a finite number",
        ),
        (
            lambda root: _truncate(root / "metrics/details/ce.json"),
            "error: metrics/details/ce.json is not valid JSON",
        ),
        (
            lambda root: edit_json(
                root / "metrics/details/ce.json", lambda m: m["per_seed"].__delitem__("seed2")
            ),
            "error: metrics/details/ce.json: per_seed has no seed2 (seeds there: seed1)",
        ),
        (
            lambda root: (root / "plots/history/mae.csv").write_text(""),
            "error: plots/history/mae.csv is empty: truncated?",
        ),
        (
            lambda root: _truncate(root / "data/class_counts.json"),
            "error: data/class_counts.json is not valid JSON",
        ),
        (
            lambda root: edit_json(root / "metrics/details/ce.json", lambda m: [m]),
            "error: metrics/details/ce.json: the file is a list, not an object",
        ),
        (
            lambda root: edit_json(
                root / "metrics/details/ce.json", lambda m: m["per_seed"]["seed1"].__setitem__("nll", "abc")
            ),
            "error: metrics/details/ce.json: per_seed.seed1.nll is a string ('abc'), not a number",
        ),
        (
            lambda root: (root / "metrics/details/ce.json").write_bytes(b'{"loss": "\xff"}'),
            "error: metrics/details/ce.json: not UTF-8 text (byte 10); damaged or not written by lossbench?",
        ),
    ],
    ids=[
        "NaN",
        "-Infinity",
        "truncated metrics",
        "a seed missing",
        "empty history",
        "truncated class counts",
        "metrics a list",
        "a number as text",
        "not UTF-8",
    ],
)
def test_report_names_a_damaged_input_in_one_line(
    reproduced: Path, damage: Callable[[Path], None], message: str
) -> None:
    before = hashes(reproduced, REPORT_OUTPUTS)
    damage(reproduced)
    result = lossbench(reproduced, "report")
    assert result.returncode == 1
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
    assert hashes(reproduced, REPORT_OUTPUTS) == before


def test_publish_names_a_truncated_metrics_file(reproduced: Path) -> None:
    _truncate(reproduced / "data/runs/ce/seed1/metrics.json")
    result = lossbench(reproduced, "publish", "ce")
    assert result.returncode == 1
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith(
        "error: data/runs/ce/seed1/metrics.json is not valid JSON ("
    ), lines


# --- report: labels from what a run was trained with ---------------------------------------------


def test_report_labels_each_run_as_trained_and_names_a_params_change(reproduced: Path) -> None:
    params = yaml.safe_load((reproduced / "params.yaml").read_text())
    params["losses"]["focal_high"]["gamma"] = 3.0
    write_params(reproduced, params)
    result = run_in(reproduced, "dvc", "repro", "-s", "report")
    assert (
        "note: data/runs/focal_high was trained with gamma 2 but params.yaml now says gamma 3; "
        "labelled as trained — run `dvc repro`"
    ) in result.stdout, result.stdout
    report = (reproduced / "plots/report.md").read_text()
    assert "Focal (γ=2)" in report and "γ=3" not in report
    curves = pd.read_csv(reproduced / "plots/curves.csv")
    assert set(curves.loc[curves["loss"] == "focal_high", "label"]) == {"Focal (γ=2)"}


# --- names from the data are text in every report ------------------------------------------------

HOSTILE = {"disc": "<img src=x onerror=alert(1)>", "ring": "a|b", "square": "*x*_y_[l](http://e)"}


def test_markdown_escaping_keeps_plain_names_and_defuses_the_rest() -> None:
    for plain in (
        "airplane",
        "h_stripes",
        "Focal (γ=0.5)",
        "MAE (L1, logits)",
        "gamma-0.25",
        "../cifar10-jpeg",
    ):
        assert md(plain) == plain
    assert md("<img src=x onerror=alert(1)>") == "&lt;img src=x onerror=alert(1)&gt;"
    assert md("a|b") == "a\\|b"
    assert md("*x*_y_[l](http://e)") == "\\*x\\*\\_y\\_\\[l\\](http://e)"
    assert md("a\nb") == "a\\\\nb"  # a newline cannot end a table row


def _table_after(text: str, heading: str) -> list[str]:
    lines = text.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    return lines[start:end]


def _cells(row: str) -> int:
    return len(re.findall(r"(?<!\\)\|", row))


def test_class_names_reach_report_md_as_text(reproduced: Path) -> None:
    def rename(names: list[str]) -> list[str]:
        return [HOSTILE.get(name, name) for name in names]

    edit_json(
        reproduced / "data/class_counts.json",
        lambda counts: (
            counts
            | {split: {HOSTILE.get(k, k): v for k, v in counts[split].items()} for split in ("train", "test")}
        ),
    )
    for name in TINY_PARAMS["losses"]:  # type: ignore[attr-defined]
        edit_json(
            reproduced / f"metrics/details/{name}.json",
            lambda m: m.__setitem__("classes", rename(m["classes"])),
        )
    result = lossbench(reproduced, "report")
    assert result.returncode == 0, result.stderr
    report = (reproduced / "plots/report.md").read_text()
    assert "<img" not in report and "&lt;img src=x onerror=alert(1)&gt;" in report
    assert "a\\|b" in report and "\\*x\\*\\_y\\_\\[l\\](http://e)" in report
    table = _table_after(report, "## Per-class recall")
    assert len({_cells(row) for row in table}) == 1, table  # every row as many cells as the header


# --- a report's outputs are one set --------------------------------------------------------------


def test_a_report_that_cannot_write_leaves_every_previous_output(reproduced: Path) -> None:
    # A longer training history: the report's curves table becomes its largest file,
    # so a file size limit lets the figures be written and stops at that table.
    for name in TINY_PARAMS["losses"]:  # type: ignore[attr-defined]
        path = reproduced / f"plots/history/{name}.csv"
        history = pd.read_csv(path)
        epochs = history["epoch"].max()
        longer = pd.concat(
            [history.assign(epoch=history["epoch"] + k * epochs) for k in range(400)], ignore_index=True
        ).sort_values(["seed", "epoch"], kind="stable")
        longer.to_csv(path, index=False)
    before = hashes(reproduced, REPORT_OUTPUTS)
    limit = 300_000
    assert max((reproduced / p).stat().st_size for p in REPORT_OUTPUTS) < limit  # the previous set fits
    result = lossbench(reproduced, "report", preexec_fn=file_size_limit(limit))
    assert result.returncode == 1
    assert error_lines(result) == [
        "error: could not write plots/curves.csv: File too large; the previous version, if any, is unchanged"
    ]
    assert hashes(reproduced, REPORT_OUTPUTS) == before
    assert temporaries(reproduced) == []
    # Without the limit the same report writes the new set whole.
    assert lossbench(reproduced, "report").returncode == 0
    assert (reproduced / "plots/curves.csv").stat().st_size > limit
    assert hashes(reproduced, ["plots/curves.png"]) != {"plots/curves.png": before["plots/curves.png"]}


# --- compare: revisions whose metrics it cannot read -----------------------------------------------

HEADLINE = {"test_acc": 0.5, "test_sd": 0.01, "best_acc": 0.52, "ece": 0.03, "conv_ep": 2.0, "at_chance": 0}


def _write_headlines(root: Path, change: Callable[[dict[str, Any]], None] = lambda h: None) -> None:
    (root / "metrics").mkdir(exist_ok=True)
    for name in TINY_PARAMS["losses"]:  # type: ignore[attr-defined]
        headline = dict(HEADLINE)
        if name == "ce":
            change(headline)
        (root / "metrics" / f"{name}.json").write_text(json.dumps(headline))


def test_compare_all_commits_names_a_revision_in_an_older_format(project: Path) -> None:
    # An older commit's metrics/ce.json in the old layout: the details under the headline's name.
    (project / "metrics").mkdir()
    (project / "metrics/ce.json").write_text(
        json.dumps({"loss": "ce", "label": "CE", "final_test_acc": 0.73})
    )
    commit(project, "older format")
    older = run_in(project, "git", "rev-parse", "--short=7", "HEAD").stdout.strip()
    _write_headlines(project)
    commit(project, "current format")
    result = lossbench(project, "compare", "--all-commits")
    assert result.returncode == 0, result.stderr
    assert f"note: left out: metrics/ce.json of run {older}: test_acc is missing" in result.stdout
    assert "1 run: " in result.stdout and "0.500 ± 0.010" in result.stdout


@pytest.mark.parametrize("command", [["compare"], ["sweep-report", "--loss", "focal_high"]])
def test_rev_outside_a_git_repository_says_so(tmp_path: Path, command: list[str]) -> None:
    write_params(tmp_path, TINY_PARAMS)
    result = lossbench(tmp_path, *command, "--rev", "HEAD")
    assert result.returncode == 1 and error_lines(result) == [
        f"error: {tmp_path} is not in a git repository: fatal: not a git repository "
        "(or any of the parent directories): .git"
    ]


@pytest.mark.parametrize(
    ("older", "expected"),
    [
        (None, ["error: params.yaml at --rev 'HEAD~1': not there"]),
        ("colour: [red", ["error: params.yaml at --rev 'HEAD~1': not YAML"]),
        (
            {**TINY_PARAMS, "colour": "red"},
            [
                "error: params.yaml at --rev 'HEAD~1' (of another lossbench version?): invalid parameters",
                "  colour: unknown key (check its spelling)",
            ],
        ),
    ],
    ids=["no params", "not YAML", "params of another format"],
)
@pytest.mark.parametrize(
    "command", [["sweep-report", "--loss", "focal_high"], ["variants-report", "--clean", "."]]
)
def test_a_rev_whose_params_cannot_be_read_is_named(
    project: Path, older: dict[str, object] | str | None, expected: list[str], command: list[str]
) -> None:
    # The workspace's params are fine; the commit's, which --rev reads, are missing or of another shape.
    current = (project / "params.yaml").read_text()
    if older is None:
        (project / "params.yaml").unlink()
    elif isinstance(older, str):
        (project / "params.yaml").write_text(older)
    else:
        write_params(project, older)
    commit(project, "older")
    (project / "params.yaml").write_text(current)
    commit(project, "current")
    result = lossbench(project, *command, "--rev", "HEAD~1")
    assert result.returncode == 1 and error_lines(result) == expected, result.stderr


def test_compare_rev_shows_the_losses_of_that_commit(project: Path) -> None:
    _write_headlines(project)  # four losses, committed
    commit(project, "four losses")
    params = copy.deepcopy(TINY_PARAMS)
    params["losses"] = {"ce": {"kind": "ce"}}
    write_params(project, params)  # the workspace has moved on to one loss
    commit(project, "ce only")
    result = lossbench(project, "compare", "--rev", "HEAD~1", env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    header = next(line for line in result.stdout.splitlines() if line.startswith("run "))
    assert header.split() == ["run", *TINY_PARAMS["losses"]]  # type: ignore[misc]


def test_compare_reads_each_commit_for_its_own_losses_whatever_its_params_hold(project: Path) -> None:
    # An older commit whose params.yaml is a list, and one that names a loss after
    # another metrics file: neither may stop compare or drop another commit's runs.
    (project / "params.yaml").write_text("- 1\n- 2\n")
    _write_headlines(project)
    commit(project, "params a list")
    params = copy.deepcopy(TINY_PARAMS)
    params["losses"] = {"ce": {"kind": "ce"}, "summary": {"kind": "ce"}}
    write_params(project, params)
    (project / "metrics" / "summary.json").write_text(json.dumps({"rank": {"ce": 1}}))
    commit(project, "a loss named summary")
    write_params(project, TINY_PARAMS)
    _write_headlines(project, lambda h: h.__setitem__("test_acc", 0.6))
    commit(project, "valid")
    result = lossbench(project, "compare", "--all-commits", env={"COLUMNS": "200"})
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "2 runs: " in result.stdout and "left out" not in result.stdout, result.stdout
    header = next(line for line in result.stdout.splitlines() if line.startswith("run "))
    columns = header.split()
    assert "summary" not in columns and columns[-4:] == list(TINY_PARAMS["losses"]), columns  # type: ignore[call-overload]
    assert "0.600 ± 0.010" in result.stdout and "0.500 ± 0.010" in result.stdout


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda h: h.__setitem__("test_acc", "0.5"), "test_acc is a string ('0.5'), not a number"),
        (lambda h: h.__setitem__("test_acc", None), "test_acc is missing"),  # DVC drops a null metric
        (lambda h: h.pop("test_acc"), "test_acc is missing"),
        (lambda h: h.__setitem__("test_sd", math.nan), "test_sd is nan, not a finite number"),
    ],
    ids=["string", "null", "missing", "NaN"],
)
def test_compare_names_a_headline_it_cannot_read(
    project: Path, change: Callable[[dict[str, Any]], None], problem: str
) -> None:
    _write_headlines(project, change)
    commit(project, "damaged")
    result = lossbench(project, "compare")
    assert result.returncode == 1
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error: no runs to compare"), lines
    assert lines[0].endswith(f"(left out: metrics/ce.json of run {branch(project)}: {problem})"), lines


# --- sweep-report: details and params of another shape --------------------------------------------


def details(name: str, spec: dict[str, Any], accuracy: dict[int, float]) -> dict[str, Any]:
    """metrics/details/NAME.json as publish writes it, with these final test accuracies."""
    return published_details(
        name, spec, {seed: {"final_test_acc": value} for seed, value in accuracy.items()}
    )


def _focal_commit(root: Path, gamma: float, accuracy: dict[int, float]) -> None:
    params = copy.deepcopy(TINY_PARAMS)
    params["losses"]["focal_high"]["gamma"] = gamma  # type: ignore[index]
    write_params(root, params)
    path = root / "metrics/details/focal_high.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(details("focal_high", {"kind": "focal", "gamma": gamma}, accuracy)))
    commit(root, f"gamma {gamma}")


@pytest.fixture
def swept(project: Path) -> Path:
    """γ=2 and then γ=3 of focal_high, one commit each, with their details (no training)."""
    _focal_commit(project, 2.0, {1: 0.60, 2: 0.62, 3: 0.64})
    _focal_commit(project, 3.0, {1: 0.55, 2: 0.58, 3: 0.60})
    return project


def _damage_head_details(root: Path, change: Callable[[Any], None]) -> str:
    edit_json(root / "metrics/details/focal_high.json", change)
    commit(root, "damaged")
    return branch(root)


def test_sweep_report_runs_on_the_fixture(swept: Path) -> None:
    result = lossbench(swept, "sweep-report", "--loss", "focal_high", "--all-commits")
    assert result.returncode == 0, result.stderr
    assert "best mean test accuracy at γ=2" in result.stdout
    # A loss that is not focal is a clear error.
    wrong = lossbench(swept, "sweep-report", "--loss", "ce", "--all-commits")
    assert wrong.returncode == 1 and "sweep-report needs a focal loss" in wrong.stderr, wrong.stderr


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            lambda d: d["per_seed"]["seed2"].__setitem__("final_test_acc", math.nan),
            "per_seed.seed2.final_test_acc is NaN, not a finite number",
        ),
        (
            lambda d: d["per_seed"]["seed1"].__setitem__("ece", math.inf),
            "per_seed.seed1.ece is Infinity, not a finite number",
        ),
        (lambda d: d.__setitem__("settings", [3.0]), "settings is a list, not an object"),
        (lambda d: d["settings"].__setitem__("gamma", None), "settings.gamma is null, not a number"),
        (
            lambda d: d["per_seed"]["seed1"].__setitem__("final_test_acc", "0.5"),
            "per_seed.seed1.final_test_acc is a string ('0.5'), not a number",
        ),
    ],
    ids=["NaN", "Infinity", "settings a list", "gamma null", "a number as text"],
)
def test_sweep_report_names_damaged_details_in_one_line(
    swept: Path, change: Callable[[Any], None], problem: str
) -> None:
    branch = _damage_head_details(swept, change)
    result = lossbench(swept, "sweep-report", "--loss", "focal_high", "--all-commits")
    assert result.returncode == 1
    assert error_lines(result) == [f"error: metrics/details/focal_high.json of run {branch}: {problem}"]
    assert not (swept / "plots/sweep.md").exists()


def test_sweep_report_leaves_out_a_commit_whose_loss_is_a_number(project: Path) -> None:
    params = copy.deepcopy(TINY_PARAMS)
    params["losses"]["focal_high"] = 3  # type: ignore[index]
    write_params(project, params)
    commit(project, "a loss given as a number")
    odd = run_in(project, "git", "rev-parse", "--short=7", "HEAD").stdout.strip()
    _focal_commit(project, 2.0, {1: 0.60, 2: 0.62, 3: 0.64})
    _focal_commit(project, 3.0, {1: 0.55, 2: 0.58, 3: 0.60})
    result = lossbench(project, "sweep-report", "--loss", "focal_high", "--all-commits")
    assert result.returncode == 0, result.stderr
    assert (
        f"note: left out: params.yaml of run {odd}: losses.focal_high is the number 3, not an object"
        in result.stdout
    )


def test_sweep_md_names_runs_as_text(swept: Path) -> None:
    run_in(swept, "git", "branch", "-m", "<b>x|y")
    result = lossbench(swept, "sweep-report", "--loss", "focal_high", "--all-commits")
    assert result.returncode == 0, result.stderr
    text = (swept / "plots/sweep.md").read_text()
    experiments = text.split("Experiments: ", 1)[1]
    assert "&lt;b&gt;x\\|y" in experiments and "<b>" not in text


# --- variants-report ---------------------------------------------------------------------------------


@pytest.fixture
def study(reproduced: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The reproduced project as a long-tailed study (imbalance ratio 4 in its
    workspace, its results standing in for that run's) and a copy of it as the clean run."""
    clean = tmp_path / "clean"
    shutil.copytree(reproduced, clean, symlinks=True)
    params = yaml.safe_load((reproduced / "params.yaml").read_text())
    params["data"]["imbalance_ratio"] = 4
    write_params(reproduced, params)
    edit_json(
        reproduced / "data/class_counts.json", lambda counts: counts.__setitem__("imbalance_ratio", 4.0)
    )
    return reproduced, clean


def test_variants_md_names_the_clean_folder_relative_to_the_study(study: tuple[Path, Path]) -> None:
    root, clean = study
    result = lossbench(root, "variants-report", "--clean", str(clean.resolve()))
    assert result.returncode == 0, result.stderr
    text = (root / "plots/variants.md").read_text()
    assert "clean runs from ../clean (same protocol)" in text
    assert str(clean.resolve()) not in text


@pytest.mark.parametrize(
    ("where", "change", "problem"),
    [
        ("clean", lambda d: d.__setitem__("settings", ["lr", 0.1]), "settings is a list, not an object"),
        (
            "clean",
            lambda d: d["per_seed"]["seed1"].__setitem__("final_test_acc", math.inf),
            "per_seed.seed1.final_test_acc is Infinity, not a finite number",
        ),
        (
            "study",
            lambda d: d["per_seed"]["seed2"].__setitem__("final_test_acc", "abc"),
            "per_seed.seed2.final_test_acc is a string ('abc'), not a number",
        ),
        (
            "study",
            lambda d: d["per_seed"]["seed1"].__setitem__("final_test_acc", None),
            "per_seed.seed1.final_test_acc is null, not a number",
        ),
    ],
    ids=["clean settings a list", "clean Infinity", "abc", "null"],
)
def test_variants_report_names_damaged_details_in_one_line(
    study: tuple[Path, Path], where: str, change: Callable[[Any], None], problem: str
) -> None:
    root, clean = study
    edit_json((clean if where == "clean" else root) / "metrics/details/ce.json", change)
    result = lossbench(root, "variants-report", "--clean", "../clean")
    assert result.returncode == 1
    file = "../clean/metrics/details/ce.json" if where == "clean" else "metrics/details/ce.json of workspace"
    assert error_lines(result) == [f"error: {file}: {problem}"]
    assert not (root / "plots/variants.md").exists()


def _alias_bomb(levels: int = 6) -> str:
    """A params.yaml whose aliases expand to 10**levels values (a few hundred bytes)."""
    lines = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for level in range(1, levels):
        lines.append(f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * 10)}]")
    lines.append(f"bomb: *a{levels - 1}")
    return "\n".join(lines) + "\n"


def _refused_within_two_minutes(project: Path, *arguments: str) -> list[str]:
    """The error lines of `lossbench ARGUMENTS`, which must exit 1: reading an alias bomb
    unguarded takes minutes, so the test fails at two."""
    result = subprocess.run(
        [sys.executable, "-m", "lossbench", *arguments],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    return result.stderr.strip().splitlines()


@pytest.mark.parametrize(
    "command", [["compare", "--rev", "HEAD"], ["sweep-report", "--loss", "focal_high", "--rev", "HEAD"]]
)
def test_an_experiment_whose_params_expand_to_a_million_values_is_refused(
    project: Path, command: list[str]
) -> None:
    _write_headlines(project)
    commit(project, "four losses")
    baseline = run_in(project, "git", "rev-parse", "HEAD").stdout.strip()
    # An experiment (as a bundle brings it) whose params.yaml is an alias bomb.
    (project / "params.yaml").write_text(_alias_bomb())
    run_in(project, "git", "add", "params.yaml")
    tree = run_in(project, "git", "write-tree").stdout.strip()
    bomb = run_in(project, "git", "commit-tree", tree, "-p", baseline, "-m", "bomb").stdout.strip()
    run_in(project, "git", "update-ref", f"refs/exps/{baseline[:2]}/{baseline[2:]}/bomb", bomb)
    run_in(project, "git", "reset", "-q")
    run_in(project, "git", "checkout", "-q", "--", ".")
    # Unguarded, reading it takes minutes (`dvc exp show` took over five, writing the values out).
    assert _refused_within_two_minutes(project, *command) == [
        "error: params.yaml of 'bomb' expands to more than 100,000 values (YAML anchors and aliases repeat "
        "what they point to); DVC would spend minutes writing them out. Remove that run (`dvc exp remove bomb`) "
        "or write its values out"
    ]


def test_a_commit_named_by_rev_whose_params_expand_to_a_million_values_is_refused(project: Path) -> None:
    _write_headlines(project)
    (project / "params.yaml").write_text(_alias_bomb())
    commit(project, "a bomb")
    bomb = run_in(project, "git", "rev-parse", "HEAD").stdout.strip()
    write_params(project, TINY_PARAMS)
    commit(project, "fixed")
    assert _refused_within_two_minutes(project, "compare", "--rev", "HEAD~1") == [
        f"error: params.yaml at '{bomb[:12]}' expands to more than 100,000 values (YAML anchors and aliases "
        "repeat what they point to); reading it would take minutes. Write its values out"
    ]
