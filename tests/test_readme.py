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
import shlex
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
            if "log_directory" in example:  # a cluster's folder: one that exists here instead
                (tmp_path / "logs").mkdir(exist_ok=True)
                path.write_text(yaml.safe_dump(example | {"log_directory": str(tmp_path / "logs")}))
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


def test_dvc_exp_show_is_wide_and_its_narrow_form_is_as_wide_as_readme_says() -> None:
    env = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "COLUMNS": "2000"}

    def shown(*options: str) -> list[str]:
        command = ["dvc", "exp", "show", "--no-pager", *options]
        result = subprocess.run(command, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()

    assert len(shown("--csv")[0].split(",")) > 250
    narrow = shown("--drop", ".*", "--keep", "Experiment|metrics/[^:]*:test_acc")
    width = max(len(line.rstrip()) for line in narrow)
    stated = re.search(r"test accuracies only: (\d+) characters with no experiments", _text(README))
    assert stated, "README gives the narrow form's width"
    if any("├" in line or "└" in line for line in narrow):  # experiments add their names
        assert width > int(stated.group(1)), narrow
    else:
        assert width == int(stated.group(1)), narrow


# Every command README.md and benchmarks/README.md give: run, run in a fresh clone, or
# (too long for a test) parsed by its own program with its params validated.

COMMAND_DOCUMENTS = [README, PROJECT / "benchmarks" / "README.md"]
PROGRAMS = re.compile(r"(?:\$ )?((?:dvc|lossbench|python|bash|git|tar|mkdir|dask) .*|dvc|lossbench)$")

# Read-only and quick: run in this repository.
RUN_HERE = {
    "dvc metrics show",
    "dvc metrics show metrics/{mae,ce,focal_low,focal_high}.json",
    "dvc metrics diff",
    "dvc params diff",
    "dvc stage list",
    "dvc status",
    "dvc status dvc.yaml",
    "dvc exp show",
    "dvc exp show --drop '.*' --keep 'Experiment|metrics/[^:]*:test_acc'",
    "lossbench check",
    "lossbench compare",
    "lossbench numerics",
    "lossbench plan",
    "lossbench plan --loss ce --loss focal_low --loss focal_high",
}
# They write: run, in this order, in a fresh clone of the committed repository.
RUN_IN_A_CLONE = [
    "dvc pull --run-cache --allow-missing dvc.yaml",
    "git checkout -- dvc-remote",
    "dvc status dvc.yaml",
    "dvc plots show",
    "dvc plots show 'dvc.yaml::' plots/history plots/confusion",
    "dvc plots show data/live -x epoch -y test_acc",
    "dvc plots diff HEAD~1",
    "git checkout dvc.lock",
    "git checkout metrics plots",
    "mkdir -p studies/cifar10-jpeg/data/raw/imagefolder/cifar10-jpeg",
    "tar -xzf data/raw/cifar10_jpeg/cifar10-jpeg.tar.gz -C studies/cifar10-jpeg/data/raw/imagefolder/cifar10-jpeg",
]
# Minutes to hours, or another machine: parsed only.
PARSED_ONLY = {
    "bash .ci/setup && source .venv/bin/activate",
    "bash .ci/setup",
    "bash .ci/setup --cpu",
    "bash .ci/run",
    "dvc pull",
    "dvc pull --run-cache --allow-missing",
    "dvc pull --run-cache --allow-missing studies/cifar10-jpeg/dvc.yaml",
    "dvc repro",
    "dvc repro -f",
    "dvc repro --dry",  # fails before the first `dvc repro` (DVC's behaviour, README says so)
    "dvc exp show --all-commits",
    "dvc repro studies/cifar10-jpeg/dvc.yaml",
    "dvc exp run",
    "dvc exp run -S losses.focal_high.gamma=3.0",
    "dvc queue start -j 1",
    "dvc plots show studies/cifar10-jpeg/dvc.yaml:: studies/cifar10-jpeg/plots/history studies/cifar10-jpeg/plots/confusion",
    "lossbench run",
    "lossbench run -S 'losses.focal_high.gamma=0.5,1.0,3.0'",
    "lossbench run --cluster cluster.yaml --remote DVC_REMOTE",
    "lossbench run --scheduler tcp://HOST:8786 --remote DVC_REMOTE --repo GIT_URL",
    "lossbench train",
    "dask scheduler",
    'dask worker tcp://HOST:8786 --nworkers "$(nproc)" --nthreads 1 --resources train=1',
    "python benchmarks/speed.py",
    "python benchmarks/seed_unit.py",
    "python benchmarks/engine.py",
    "python benchmarks/numerics_cost.py",
    "python benchmarks/numerics_cost.py --rounds 7 --variant MKL_CBWR=AVX2,STRICT",
    "python benchmarks/stage_cost.py",
    "dvc repro -f report",
    "python benchmarks/suite_profile.py",
    "python benchmarks/linear_baseline.py",
}
# Named in the text as a part of another command, not run alone.
MENTIONS = {"dvc exp run -S", "dvc queue", "dvc"}


def _commands_given() -> set[str]:
    found = set()
    for document in COMMAND_DOCUMENTS:
        for line in _code(_text(document)):
            if match := PROGRAMS.match(line.split(" #")[0].strip()):
                found.add(match.group(1).strip())
    return found


def test_every_command_the_readmes_give_is_checked() -> None:
    given = _commands_given()
    checked = RUN_HERE | set(RUN_IN_A_CLONE) | PARSED_ONLY | MENTIONS
    assert given - checked == set(), "commands no test checks"
    assert checked - given - {"lossbench --help", "dvc"} == set(), "checked commands no README gives"


@pytest.mark.parametrize("command", sorted(RUN_HERE))
def test_a_readme_command_runs(command: str) -> None:
    run_here(command)


def test_the_readme_commands_that_write_run_in_a_fresh_clone(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(PROJECT), str(clone)], check=True)
    env = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1"}
    for command in RUN_IN_A_CLONE:
        result = subprocess.run(
            ["bash", "-c", command], cwd=clone, env=env, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        if command.startswith("dvc plots show") and "data/live" not in command:
            page = (clone / "dvc_plots" / "index.html").read_text()
            body = page[page.rindex("</style>") :]
            shown = re.findall(r'<div id = "([^"]+)"|<img[^>]*src="static/([^"]+)"', body)
            assert len(set(shown)) == len(shown), "a plot shown twice"
            studies = [item for item in shown if "studies" in "".join(item)]
            assert bool(studies) == (command == "dvc plots show"), shown


def _parses(command: str) -> None:
    words = shlex.split(command)
    if words[0] == "dvc":
        from dvc.cli import parse_args

        parse_args(words[1:])
    elif words[0] == "lossbench":
        group = typer.main.get_command(app)
        name, rest = words[1], words[2:]
        command_object = group.commands[name]  # type: ignore[attr-defined]
        command_object.make_context(name, [word.replace("$(nproc)", "2") for word in rest])
    elif words[0] == "bash":
        subprocess.run(["bash", "-n", "-c", command], check=True)
        subprocess.run(["bash", "-n", str(PROJECT / words[1])], check=True)
    elif words[0] == "dask":
        run_here(f"{words[0]} {words[1]} --help")
    elif words[0] == "python":
        script = PROJECT / words[1]
        if "__main__" in _text(script) and re.search(r"typer|argparse", _text(script)):
            run_here(f"python {words[1]} --help")
        else:  # no options: its imports must resolve (its folder first on sys.path, as for a script)
            load = f"import runpy, sys; sys.path.insert(0, {str(script.parent)!r}); runpy.run_path({str(script)!r})"
            subprocess.run([sys.executable, "-c", load], check=True)
    else:
        raise AssertionError(f"no parser for {command}")


@pytest.mark.parametrize("command", sorted(PARSED_ONLY))
def test_a_long_readme_command_parses(command: str) -> None:
    _parses(command)


@pytest.mark.parametrize("tiny", [False, True], ids=["full", "tiny"])
def test_the_speed_benchmarks_params_validate(tiny: bool) -> None:
    sys.path.insert(0, str(PROJECT / "benchmarks"))
    try:
        import speed
    finally:
        sys.path.remove(str(PROJECT / "benchmarks"))
    update, cifar_update = speed.part_updates(tiny)
    parse_params(speed.study_params(speed.updated(_params(), update), [1, 2, 3, 4], 30))
    parse_params(speed.updated(_params(), update))  # the pipeline part
    cifar = parse_params(speed.updated(_params(), cifar_update))
    assert cifar.data.dataset == "synthetic" and cifar.seeds == [1]
