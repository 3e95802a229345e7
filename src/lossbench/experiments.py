"""Runs side by side, from DVC's experiments: `lossbench compare` (a table of
what changed and the headline numbers, in a terminal's width), and the
records `lossbench sweep-report` draws from."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from lossbench import errors
from lossbench.errors import DamagedInput, MissingInput, ParamsError, printable_lines, shown_repr
from lossbench.jsonfile import parse_json
from lossbench.md import plus_minus
from lossbench.params import MAX_VALUES, RAW_DIR, Params, _count_values, check_loss_name, parse_params
from lossbench.result_files import HeadlineAccuracy, parsed


def study_prefix(root: Path) -> str:
    """Where root lies in its git repository: '' for the project itself,
    'studies/NAME/' for a study. `dvc exp show` names every file from the top."""
    shown = subprocess.run(["git", "rev-parse", "--show-prefix"], cwd=root, capture_output=True, text=True)
    if shown.returncode != 0:
        raise MissingInput(f"{root.resolve()} is not in a git repository: {shown.stderr.strip()}")
    return shown.stdout.strip()


def untracked_data(params: Params) -> list[PurePosixPath]:
    """The git-ignored raw data a queued experiment's temporary copy of the
    repository needs (`dvc exp run -C`), relative to the project or study."""
    data = params.data
    if data.dataset == "cifar10":
        return [RAW_DIR / "cifar10"]
    if data.dataset != "imagefolder":
        return []  # generated, or the archive committed to git
    folders = (data.imagefolder.root, data.imagefolder.train_root, data.imagefolder.test_root)
    tops = dict.fromkeys(PurePosixPath(folder).parts[0] for folder in folders if folder)
    return [RAW_DIR / "imagefolder" / top for top in tops]


def queue_command(params: Params, root: Path, settings: str) -> str:
    """How to queue experiments that set `settings` (e.g. 'losses.focal.gamma=0,2'),
    for the project or study at root, in words: DVC names a study's pipeline,
    params file and data from the repository's top folder."""
    prefix = study_prefix(root)
    command = ["dvc exp run --queue"]
    if prefix:
        command.append(f"{prefix}dvc.yaml")
    command += [f"-C {prefix}{folder}" for folder in untracked_data(params)]
    command.append(f"-S '{prefix}params.yaml:{settings}'" if prefix else f"-S '{settings}'")
    where = ""
    if prefix:
        top = os.path.relpath(".", prefix)  # 'studies/NAME/' -> '../..'
        where = f"from the repository's top folder (`cd {top}`) "
    return f"{where}run e.g. `{' '.join(command)} && dvc queue start`"


def exp_show(root: Path, all_commits: bool = False, rev: str | None = None) -> list[dict[str, Any]]:
    """What `dvc exp show --json` lists, read from git and the workspace: by default
    the workspace, the current commit and its experiments; with `rev`, that commit
    (the one a sweep was run from, when HEAD has moved on since) and its experiments;
    with `all_commits`, every commit's too (other_commits). Only finished runs have
    their files in git: the queued, running and failed ones DVC also lists are left out,
    as experiment_records leaves them out of DVC's list.

    A finished run's files are all a report needs, and DVC builds each revision's whole
    pipeline to list them, every study's dvc.lock parsed: `sweep-report --rev` took 21 s
    in a fresh clone of this repository's γ study (7 revisions), 2.5 s read from git
    (benchmarks/results.md). tests/test_first_hour.py checks each form against DVC's."""
    if rev is not None and all_commits:
        raise MissingInput("--rev and --all-commits: give one of them")
    if rev is not None:
        commit = _commit_of(root, rev)
        check_params_sizes(root, also=[commit])
        return commit_entries(root, [commit])
    check_params_sizes(root, all_commits)
    # The workspace, HEAD and HEAD's experiments, as plain `dvc exp show --json` lists them.
    head = _git_lines(root, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
    result = [workspace_entry(root), *commit_entries(root, head)]
    if all_commits:
        result += other_commits(root, set(head))
    return result


def workspace_entry(root: Path) -> dict[str, Any]:
    """The workspace's entry as `dvc exp show --json` gives it: params.yaml and the
    headline metrics on disk."""
    prefix = study_prefix(root)
    top = root.resolve()
    for _ in PurePosixPath(prefix).parts:  # up from a study's folder to the repository's top
        top = top.parent

    def read(path: str) -> str | None:
        file = top / path
        return file.read_text(errors="replace") if file.is_file() else None

    return _revision(read, "workspace", None, prefix)


def _git_lines(root: Path, *command: str) -> list[str]:
    found = subprocess.run(["git", *command], cwd=root, capture_output=True, text=True)
    return found.stdout.split() if found.returncode == 0 else []


def check_params_sizes(root: Path, all_commits: bool = False, also: Sequence[str] = ()) -> None:
    """Refuse, before DVC or this module reads them, revisions whose params.yaml
    expands to more than MAX_VALUES values (YAML aliases): `dvc exp show` writes every
    expanded value, which can take many minutes. The same guard as params.yaml's
    (params.read_yaml), on HEAD, every experiment, the commits `also` names, and with
    `all_commits` every commit that changed the file."""
    revisions = ["HEAD", *also, *_git_lines(root, "for-each-ref", "--format=%(refname)", "refs/exps/")]
    if all_commits:
        revisions += _git_lines(root, "log", "--all", "--format=%H", "--", "params.yaml")
    listed = subprocess.run(
        ["git", "cat-file", "--batch-check=%(objectname) %(objecttype)"],
        cwd=root,
        input="".join(f"{revision}:./params.yaml\n" for revision in revisions),
        capture_output=True,
        text=True,
    )
    blobs: dict[str, str] = {}
    for revision, line in zip(revisions, listed.stdout.splitlines(), strict=False):
        parts = line.split()
        if len(parts) == 2 and parts[1] == "blob":
            blobs.setdefault(parts[0], revision)
    for blob, revision in blobs.items():
        text = subprocess.run(
            ["git", "cat-file", "blob", blob], cwd=root, capture_output=True, text=True
        ).stdout
        try:
            document = YAML(typ="safe").load(text)
        except (YAMLError, RecursionError):
            continue  # DVC names a file it cannot read; the size is what it cannot survive
        if _count_values(document, MAX_VALUES) > MAX_VALUES:
            if not revision.startswith("refs/exps/"):  # HEAD, or the commit --rev names
                raise ParamsError(
                    f"params.yaml at {shown_repr(revision[:12])} expands to more than {MAX_VALUES:,} values "
                    "(YAML anchors and aliases repeat what they point to); reading it would take minutes. "
                    "Write its values out"
                )
            name = revision.removeprefix("refs/exps/").split("/")[-1]
            raise ParamsError(
                f"params.yaml of {shown_repr(name)} expands to more than {MAX_VALUES:,} values (YAML anchors "
                "and aliases repeat what they point to); DVC would spend minutes writing them out. Remove that "
                f"run (`dvc exp remove {name}`) or write its values out"
            )


# An experiment's ref: refs/exps/<its commit's hash, split 2/38>/<name>.
EXPERIMENT_REF = re.compile(r"\Arefs/exps/([0-9a-f]{2})/([0-9a-f]{38})/([^/]+)\Z")


def other_commits(root: Path, known: set[Any]) -> list[dict[str, Any]]:
    """Every commit of the repository but those in `known`, with its experiments,
    as `dvc exp show --json --all-commits` lists and names them (a tag, else a
    branch, whose tip it is): their params.yaml and
    headline metrics, read from git in one `git cat-file --batch`. (DVC's own
    --all-commits builds each commit's whole pipeline, the studies' included:
    minutes for this repository's history.)"""
    listed = subprocess.run(
        ["git", "rev-list", "HEAD", "--branches", "--tags", "--remotes"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    return commit_entries(root, [commit for commit in listed.stdout.split() if commit not in known])


def commit_entries(root: Path, commits: list[str]) -> list[dict[str, Any]]:
    """Each commit with its finished experiments, newest first, as `dvc exp show --json`
    gives them (a commit named by the tag, else the branch, whose tip it is), read from git."""
    prefix = study_prefix(root)
    refs = subprocess.run(
        [
            "git",
            "for-each-ref",
            "--sort=-committerdate",
            "--format=%(objectname) %(*objectname) %(refname)",
            "refs/",
        ],
        cwd=root,
        capture_output=True,
        text=True,
    )
    experiments: dict[str, list[tuple[str, str]]] = {}
    tags: dict[str, str] = {}
    branches: dict[str, str] = {}
    for line in refs.stdout.splitlines():
        target, peeled, ref = line.split(" ", 2)
        commit = peeled or target
        if match := EXPERIMENT_REF.match(ref):
            experiments.setdefault(match[1] + match[2], []).append((commit, match[3]))
        elif ref.startswith("refs/tags/"):
            tags.setdefault(commit, ref.removeprefix("refs/tags/"))
        elif ref.startswith("refs/heads/"):
            branches.setdefault(commit, ref.removeprefix("refs/heads/"))
    with GitObjects(root) as objects:
        shown = []
        for commit in commits:
            runs = [
                _revision(partial(objects.read, rev), rev, name, prefix)
                for rev, name in experiments.get(commit, [])
            ]
            shown.append(
                _revision(
                    partial(objects.read, commit), commit, tags.get(commit) or branches.get(commit), prefix
                )
                | {"experiments": [{"revs": [run], "executor": None} for run in runs]}
            )
    return shown


def _revision(read: Callable[[str], str | None], rev: str, name: str | None, prefix: str) -> dict[str, Any]:
    """One commit's (or the workspace's) entry as `dvc exp show --json` gives it: its
    params.yaml and the headline metrics of the losses it defines, each file read
    with `read` (a path from the repository's top)."""
    entry: dict[str, Any] = {"rev": rev, "name": name}
    text = read(f"{prefix}params.yaml")
    params = _yaml(text)
    if params is None:  # no such file, or not YAML (then said as DVC says a commit it cannot read)
        return entry if text is None else entry | {"error": {"msg": "not YAML"}}
    revision = {"rev": rev, "params": {f"{prefix}params.yaml": {"data": params}}}
    metrics = {}
    for loss in losses_of(revision, prefix):
        path = f"{prefix}metrics/{loss}.json"
        text = read(path)
        try:
            numbers = json.loads(text) if text is not None else None
        except ValueError:
            numbers = None
        if isinstance(numbers, dict):  # DVC leaves out a null metric
            metrics[path] = {"data": {key: value for key, value in numbers.items() if value is not None}}
    entry["data"] = {"params": revision["params"], "metrics": metrics}
    return entry


def _yaml(text: str | None) -> Any:
    """A committed params.yaml, read as DVC reads it; None where it is not YAML."""
    if text is None:
        return None
    try:
        return YAML(typ="safe").load(text)
    except (YAMLError, RecursionError):
        return None


class GitObjects:
    """Files of any commit, read through one `git cat-file --batch` process
    instead of one `git show` per file."""

    def __init__(self, root: Path) -> None:
        self._process = subprocess.Popen(
            ["git", "cat-file", "--batch"], cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )

    def __enter__(self) -> GitObjects:
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()
        self._process.wait()

    def read(self, rev: str, path: str) -> str | None:
        """The file at `path` (from the repository's top) in commit `rev`; None if there is none."""
        stdin, stdout = self._process.stdin, self._process.stdout
        assert stdin is not None and stdout is not None
        stdin.write(f"{rev}:{path}\n".encode())
        stdin.flush()
        header = stdout.readline().decode().split()
        if len(header) != 3 or header[1] != "blob":  # "<name> missing", or a folder
            if len(header) == 3:
                stdout.read(int(header[2]) + 1)
            return None
        data = stdout.read(int(header[2]) + 1)[:-1]
        return data.decode("utf-8", errors="replace")


def _commit_of(root: Path, rev: str) -> str:
    """The commit `rev` names (a hash, branch or tag), as a full hash."""
    found = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    if found.returncode != 0:
        study_prefix(root)  # outside a git repository, say that, not "no such commit"
        raise MissingInput(f"--rev {shown_repr(rev)}: no such commit in this repository")
    return found.stdout.strip()


def experiment_records(shown: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every revision's data in `dvc exp show --json`: commits and their experiments,
    each distinct run once, by its own name (the workspace repeats its commit or
    the experiment last run until something changes)."""
    # Queued, running and failed experiments show their params over the
    # baseline's files: only finished ones (a pulled one has no executor) count.
    revisions = []
    for commit in shown:
        revisions.append(commit)
        for exp in commit.get("experiments") or []:
            if (exp.get("executor") or {}).get("state", "success") == "success":
                revisions.extend(exp.get("revs", []))
    revisions = [revision for revision in revisions if revision.get("data") and not revision.get("error")]

    def key(revision: dict[str, Any]) -> str:
        data = revision["data"]
        return json.dumps([data.get("params"), data.get("metrics")], sort_keys=True, default=str)

    named = {key(revision) for revision in revisions if revision["rev"] != "workspace"}
    records, seen = [], set()
    for revision in revisions:
        if key(revision) in seen or (revision["rev"] == "workspace" and key(revision) in named):
            continue
        seen.add(key(revision))
        records.append({"rev": revision["rev"], "name": revision.get("name"), **revision["data"]})
    return records


def losses_of(record: dict[str, Any], prefix: str = "") -> list[str]:
    """The loss names a run's own params.yaml defines that could be a loss of this
    project (a commit may hold anything: a name such as `summary` would read
    another metrics file)."""
    losses = params_of(record, prefix).get("losses")
    if not isinstance(losses, dict):
        return []
    names = []
    for name in losses:
        try:
            check_loss_name(str(name))
        except ValueError:
            continue
        names.append(str(name))
    return names


def params_at(root: Path, shown: list[dict[str, Any]], rev: str) -> Params:
    """The folder's params.yaml as commit `rev` has it, from `shown`, what
    exp_show(root, rev=rev) gave (that commit alone): the study a report under
    --rev is about (the workspace's may have moved on)."""
    prefix = study_prefix(root)
    where = f"{prefix}params.yaml at --rev {shown_repr(rev)}"
    revision = shown[0] if len(shown) == 1 else {}
    if error := revision.get("error"):
        raise MissingInput(f"{where}: {errors.shown(error.get('msg') if isinstance(error, dict) else error)}")
    params = ((revision.get("data") or {}).get("params") or {}).get(f"{prefix}params.yaml")
    if not isinstance(params, dict) or "data" not in params:
        raise MissingInput(f"{where}: not there")
    return parse_params(params["data"], f"{where} (of another lossbench version?)")


def params_of(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The record's params.yaml of the project (prefix '') or of a study (its
    study_prefix); {} where that file is not a mapping (any commit may hold anything)."""
    params = record.get("params")
    entry = params.get(f"{prefix}params.yaml") if isinstance(params, dict) else None
    data = entry.get("data") if isinstance(entry, dict) else None
    return data if isinstance(data, dict) else {}


def file_at(root: Path, record: dict[str, Any], path: str) -> str | None:
    """A committed file, relative to root, as the record's revision has it (the workspace: on disk)."""
    if record["rev"] == "workspace":
        target = root / path
        return target.read_text() if target.is_file() else None
    # `REV:./PATH` is relative to the current folder: root, the project or a study.
    shown = subprocess.run(
        ["git", "show", f"{record['rev']}:./{path}"], cwd=root, capture_output=True, text=True
    )
    return shown.stdout if shown.returncode == 0 else None


def json_at(root: Path, record: dict[str, Any], path: str) -> Any | None:
    """file_at, parsed as JSON (NaN and infinities refused); a damaged file is named, not a traceback."""
    text = file_at(root, record, path)
    if text is None:
        return None
    return parse_json(text, f"{path} of run {run_name(record)}")


def run_name(record: dict[str, Any]) -> str:
    """An experiment's name, a commit's short hash, or 'workspace'."""
    name: str = record.get("name") or (record["rev"] if record["rev"] == "workspace" else record["rev"][:7])
    return name


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = json.dumps(value)
    return flat


def headline_of(record: dict[str, Any], name: str, prefix: str = "") -> tuple[float, float] | None:
    """A run's metrics/NAME.json test_acc and test_sd, None where it has no such
    file; one of another shape (an older commit's) raises DamagedInput naming it."""
    numbers = (record.get("metrics") or {}).get(f"{prefix}metrics/{name}.json", {}).get("data")
    if not numbers:
        return None
    headline = parsed(HeadlineAccuracy, numbers, f"metrics/{name}.json of run {run_name(record)}")
    return headline.test_acc, headline.test_sd


def compare(root: Path, console: Console, all_commits: bool = False, rev: str | None = None) -> Table:
    """One row per run: the params that differ between runs, and each loss's
    final test accuracy (seed mean ± std; `dvc metrics show` has the rest).
    A run whose metrics cannot be read (an older format) is left out and named."""
    # Runs with results for some loss; a workspace where nothing has run has none.
    prefix = study_prefix(root)
    # Each run is read for the losses its own params.yaml defines: a commit named by
    # --rev, or an older one, may define others than the workspace.
    records, headlines, left_out = [], [], []
    with console.status("reading the runs…"):
        shown = exp_show(root, all_commits, rev)
    for record in experiment_records(shown):
        try:
            found = {name: headline_of(record, name, prefix) for name in losses_of(record, prefix)}
        except DamagedInput as error:
            left_out.append(str(error))
            continue
        if any(value is not None for value in found.values()):
            records.append(record)
            headlines.append(found)
    if not records:
        raise MissingInput(
            "no runs to compare: run `dvc repro` or `dvc exp run` first"
            + (f" (left out: {'; '.join(left_out)})" if left_out else "")
        )
    for problem in left_out:
        console.print(f"note: left out: {problem}", markup=False, highlight=False)
    shown_tables = runs_tables(records, headlines, prefix, console.width)
    for renderable in shown_tables:
        console.print(renderable)
    table = shown_tables[0]
    assert isinstance(table, Table)
    return table


# A differing param's column is headed by the end of its key (`epochs` for
# train.epochs) where that is this short and names one key; else by a letter.
MAX_LABEL = 10


def param_labels(keys: list[str]) -> dict[str, str]:
    """Short, unambiguous column labels for the differing params' keys."""
    labels: dict[str, str] = {}
    letters = iter("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    for key in keys:
        parts = key.split(".")
        label = None
        for size in range(1, len(parts) + 1):
            suffix = ".".join(parts[-size:])
            if not any(other != key and (other == suffix or other.endswith(f".{suffix}")) for other in keys):
                label = suffix
                break
        if label is None and len(key) <= MAX_LABEL:
            label = key  # `seeds` beside `train.seeds`: the whole key is short
        if label is None or len(label) > MAX_LABEL:
            label = next(letters, key)
        labels[key] = label
    return labels


def _value(text: str) -> str:
    """A param's value as params.yaml writes it: a string without JSON's quotes."""
    value = json.loads(text)
    return value if isinstance(value, str) else text


@dataclass(frozen=True)
class _Runs:
    """The runs compare shows: each one's name, flattened params and headline per loss."""

    names: list[str]
    flat: list[dict[str, str]]
    headlines: list[dict[str, tuple[float, float] | None]]
    changed: list[str]  # the params that differ between runs
    labels: dict[str, str]  # their column labels
    losses: list[str]  # every loss some run has a headline for


def _runs_table(runs: _Runs, title: str, params: bool, accuracies: bool) -> Table:
    """One table of the runs: what differs (`params`), each loss's accuracy (`accuracies`), or both."""
    shown = Table(
        title=title,
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
        title_justify="left",
    )
    shown.add_column("run", no_wrap=True, max_width=32)
    if params:
        for key in runs.changed:
            shown.add_column(Text(printable_lines(runs.labels[key])), justify="right", overflow="fold")
    if accuracies:
        for name in runs.losses:
            shown.add_column(Text(printable_lines(name)), justify="right", no_wrap=True)
    for name, row, found in zip(runs.names, runs.flat, runs.headlines, strict=True):
        cells = [name]
        if params:
            cells += [_value(row[key]) if key in row else "-" for key in runs.changed]
        if accuracies:
            for loss in runs.losses:
                numbers = found.get(loss)
                cells.append("-" if numbers is None else plus_minus(*numbers, digits=3))
        # Names and values from the runs' files: literal text, never rich markup.
        shown.add_row(*(Text(printable_lines(cell)) for cell in cells))
    return shown


def runs_tables(
    records: list[dict[str, Any]],
    headlines: list[dict[str, tuple[float, float] | None]],
    prefix: str,
    width: int,
) -> list[Table | Text]:
    """The runs side by side in `width` columns: one table of what differs and
    each loss's test accuracy, or where that is wider, the two apart; a legend
    for the params' labels. A loss name and an accuracy are never cut or wrapped."""
    losses = list(dict.fromkeys(name for found in headlines for name, numbers in found.items() if numbers))
    flat = [flatten(params_of(record, prefix)) for record in records]
    keys = sorted({key for row in flat for key in row if not key.startswith(("machine.", "analysis."))})
    changed = [key for key in keys if len({row.get(key) for row in flat}) > 1]
    labels = param_labels(changed)
    names = [run_name(record) for record in records]
    runs = f"{len(records)} run" if len(records) == 1 else f"{len(records)} runs"
    shown = _Runs(names, flat, headlines, changed, labels, losses)

    def table(title: str, params: bool, accuracies: bool) -> Table:
        return _runs_table(shown, title, params, accuracies)

    legend = [f"{label:>{MAX_LABEL}}  {key}" for key, label in labels.items() if label != key]
    legend_lines: list[Table | Text] = [Text(printable_lines("\n".join(legend)))] if legend else []
    whole = table(f"{runs}: what differs, and final test accuracy (seed mean ± sd) per loss", True, True)
    wide = Console(width=10_000)
    if Measurement.get(wide, wide.options, whole).maximum <= width or not changed:
        return [whole, *legend_lines]
    return [
        table(f"{runs}: what differs", True, False),
        *legend_lines,
        table("final test accuracy (seed mean ± sd) per loss", False, True),
    ]
