"""The README against the repository, so that what it prints and claims cannot go stale.

Every ```console block in README.md is a transcript: each `$ ` line is a command run
here (read-only commands only) and the lines after it are what it must print. The
headline table, the claims and their verdicts are compared with the committed files,
every `lossbench` command and option the documents name must exist, every YAML example
must be valid, and every relative link must point to a file (and heading) that exists.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from lossbench.claims import STATEMENTS
from lossbench.cli import app
from lossbench.engine import load_cluster_spec
from lossbench.params import parse_params, read_yaml

PROJECT = Path(__file__).resolve().parents[1]
README = PROJECT / "README.md"
DOCUMENTS = [README, *sorted((PROJECT / "docs").glob("*.md")), PROJECT / "benchmarks" / "README.md"]
BIN = str(Path(sys.executable).parent)
MAX_LINE = 150

# What a transcript may run: commands that read the repository and write nothing.
READ_ONLY = ("dvc metrics show", "dvc stage list", "lossbench --help", "lossbench check")
# No pipes, redirections, substitutions or second commands in a transcript's command.
SHELL_SYNTAX = re.compile(r"[;&|<>`$()\n]")

FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]+`")


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def fenced(text: str, *languages: str) -> list[str]:
    return [body for language, body in FENCE.findall(text) if language in languages]


def transcripts(text: str) -> list[tuple[str, str]]:
    """(command, expected output) for every `$ ` line of every console block."""
    found: list[tuple[str, str]] = []
    for block in fenced(text, "console"):
        command: str | None = None
        output: list[str] = []
        for line in block.splitlines():
            if line.startswith("$ "):
                if command is not None:
                    found.append((command, "\n".join(output)))
                command, output = line[2:].strip(), []
            else:
                output.append(line)
        if command is not None:
            found.append((command, "\n".join(output)))
    return found


def normalised(output: str) -> str:
    """Trailing spaces and trailing blank lines do not count."""
    return "\n".join(line.rstrip() for line in output.rstrip().splitlines())


def run_here(command: str) -> str:
    env = os.environ | {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "COLUMNS": "80",
        "NO_COLOR": "1",
        "TERM": "dumb",
        "DVC_NO_ANALYTICS": "1",
    }
    result = subprocess.run(
        ["bash", "-c", command],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return result.stdout


TRANSCRIPTS = transcripts(_text(README))


def test_the_readme_shows_printed_output_only_in_checked_transcripts() -> None:
    assert TRANSCRIPTS, "no ```console block: this test would check nothing"
    for command, _ in TRANSCRIPTS:
        assert command.startswith(READ_ONLY), f"not a read-only command this test may run: {command}"
        assert not SHELL_SYNTAX.search(command), f"shell syntax in a transcript: {command}"


@pytest.mark.parametrize(("command", "expected"), TRANSCRIPTS, ids=[command for command, _ in TRANSCRIPTS])
def test_a_transcript_is_what_the_command_prints(command: str, expected: str) -> None:
    if not command.startswith(READ_ONLY) or SHELL_SYNTAX.search(command):
        pytest.fail(f"not run: {command}")
    assert normalised(run_here(command)) == normalised(expected)


def test_no_readme_line_is_over_150_characters() -> None:
    long = [
        f"README.md:{number}: {len(line)} characters"
        for number, line in enumerate(_text(README).splitlines(), 1)
        if len(line) > MAX_LINE
    ]
    assert not long, "\n".join(long)


# The headline table: its loss names, numbers and sizes against the committed metrics.


def _table(text: str, header_start: str) -> list[list[str]]:
    """The rows (cells stripped) of the first Markdown table whose header starts so."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def _params() -> dict[str, Any]:
    raw = read_yaml(PROJECT / "params.yaml")
    assert isinstance(raw, dict)
    return raw


def test_the_results_table_is_the_committed_metrics() -> None:
    rows = _table(_text(README), "| loss | final test accuracy")
    names = []
    for loss, accuracy, ece in rows:
        match = re.fullmatch(r".*\(`(\w+)`\)", loss)
        assert match, loss
        name = match.group(1)
        names.append(name)
        metrics = json.loads((PROJECT / "metrics" / f"{name}.json").read_text())
        mean, sd = accuracy.split(" ± ")
        assert (float(mean), float(sd), float(ece)) == (
            metrics["test_acc"],
            metrics["test_sd"],
            metrics["ece"],
        )
    assert sorted(names) == sorted(_params()["losses"])
    accuracies = [json.loads((PROJECT / "metrics" / f"{n}.json").read_text())["test_acc"] for n in names]
    assert accuracies == sorted(accuracies, reverse=True), "rows are ranked by test accuracy"


def test_the_first_screen_names_the_default_sizes_and_seeds() -> None:
    first_screen = "\n".join(_text(README).splitlines()[:45])
    seeds = _params()["seeds"]
    assert seeds == list(range(seeds[0], seeds[-1] + 1))
    details = json.loads((PROJECT / "metrics" / "details" / "ce.json").read_text())
    sizes = f"{details['train_samples']:,} training and {details['test_samples']:,} test images"
    assert sizes in first_screen
    assert f"seeds {seeds[0]}–{seeds[-1]}" in first_screen
    assert f"{_params()['train']['epochs']} epochs" in first_screen
    assert f"`seeds: {seeds}`" in _text(README)


# The claims: the report's own wording, and the default's verdicts from its summary.


def test_the_claims_are_worded_as_the_report_words_them() -> None:
    lines = _text(README).splitlines()
    for number, (statement, _) in enumerate(STATEMENTS, 1):
        assert f"{number}. {statement}" in lines, statement


def test_the_default_verdicts_are_the_reports() -> None:
    summary = json.loads((PROJECT / "metrics" / "summary.json").read_text())
    rows = _table(_text(README), "| claim |")
    assert [row[0] for row in rows] == [str(number) for number in range(1, len(STATEMENTS) + 1)]
    for number, default, _ in rows:
        assert default.startswith(f"*{summary['claims'][number]}*:"), (number, default)


# Commands and options the documents name, and their YAML examples.


def _code(text: str) -> list[str]:
    """The lines of every fenced block and every inline code span."""
    spans = [span.strip("`") for span in INLINE_CODE.findall(FENCE.sub("", text))]
    return [line for block in FENCE.findall(text) for line in block[1].splitlines()] + spans


# `lossbench ...` where a command starts: at the start of a line or span, or after `$ `,
# `&&`, `|` or `(`; not inside a quoted message ("...; lossbench does not follow ...").
COMMAND = re.compile(r"(?:^\s*|[$(&|]\s*)lossbench[ \t]+(--?[\w-]+|[a-z][\w-]*)([^#;&|)]*)", re.M)
OPTION = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(PROJECT)))
def test_every_lossbench_command_and_option_named_exists(document: Path) -> None:
    group = typer.main.get_command(app)
    assert hasattr(group, "commands")
    top = {option for param in group.params for option in param.opts} | {"--help"}
    unknown = []
    for line in _code(_text(document)):
        for word, rest in COMMAND.findall(line):
            if word.startswith("-"):
                if word not in top:
                    unknown.append(f"lossbench {word}")
                continue
            command = group.commands.get(word)
            if command is None:
                unknown.append(f"lossbench {word}")
                continue
            options = {option for param in command.params for option in param.opts} | {"--help"}
            unknown += [
                f"lossbench {word} {option}" for option in OPTION.findall(rest) if option not in options
            ]
    assert not unknown, "\n".join(unknown)


def _merged(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in change.items():
        merged[key] = _merged(base[key], value) if isinstance(value, dict) and key in base else value
    return merged


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(PROJECT)))
def test_every_yaml_example_is_valid(document: Path, tmp_path: Path) -> None:
    params = _params()
    for block in fenced(_text(document), "yaml"):
        example = yaml.safe_load(block)
        assert isinstance(example, dict), block
        if "kind" in example and "cores" in example:  # a `lossbench run --cluster` file
            path = tmp_path / "cluster.yaml"
            path.write_text(block)
            load_cluster_spec(path)
        else:  # a change to params.yaml
            assert set(example) <= set(params), block
            parse_params(_merged(params, example))


# Links.


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    anchors: set[str] = set()
    for line in FENCE.sub("", _text(path)).splitlines():
        if match := re.match(r"#{1,6} (.+)", line):
            slug = _slug(match.group(1))
            count = sum(anchor == slug or anchor.startswith(f"{slug}-") for anchor in anchors)
            anchors.add(slug if slug not in anchors else f"{slug}-{count}")
    return anchors


LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
REFERENCE = re.compile(r"^\[[^\]]+\]:\s*(\S+)", re.M)


@pytest.mark.parametrize(
    "document",
    DOCUMENTS,
    ids=lambda path: str(path.relative_to(PROJECT)),
)
def test_every_relative_link_points_to_something_that_exists(document: Path) -> None:
    text = INLINE_CODE.sub("", FENCE.sub("", _text(document)))
    broken = []
    for target in LINK.findall(text) + REFERENCE.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        path = (document.parent / path_part).resolve() if path_part else document
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{target}: no such heading")
    assert not broken, "\n".join(broken)


def test_dvc_metrics_show_fits_120_columns_and_shows_each_result_once() -> None:
    # The root's, the JPEG study's, the γ study's (γ=1) and the variants study's (the long
    # tail) headline files: no study's commit repeats another's runs under another name.
    lines = normalised(run_here("dvc metrics show")).splitlines()
    assert max(len(line) for line in lines) <= 120, lines
    rows = [line.split()[1:] for line in lines[1:]]
    assert len(rows) >= 12 and len({tuple(row) for row in rows}) == len(rows), lines


def test_dvc_exp_show_is_wide_and_its_narrow_form_fits_140_characters() -> None:
    env = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "COLUMNS": "2000"}

    def shown(*options: str) -> list[str]:
        command = ["dvc", "exp", "show", "--no-pager", *options]
        result = subprocess.run(command, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()

    assert len(shown("--csv")[0].split(",")) > 250
    narrow = shown("--drop", ".*", "--keep", "Experiment|metrics/[^:]*:test_acc")
    assert 100 < max(len(line.rstrip()) for line in narrow) <= 140, narrow
