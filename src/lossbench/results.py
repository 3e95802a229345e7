"""What the analysis side reads, read in one place: one seed's finished run
(data/runs/NAME/seedN), a loss's published details as a `LossResult` (the
report's, the γ sweep's and variants-report's alike), class counts, whether a
result is stale (`changed_settings`), and the seed arithmetic every comparison
shares; and how a name or a mean ± sd from the data is written into a report.

Every JSON file goes through `parse_json`, which refuses NaN and infinities
(Python's json reads `NaN` and `Infinity` as numbers), and every value is
checked for its type where it is read (`Field`): a damaged file stops the
command with one line naming the file and the key, never a traceback or a
verdict computed from nonsense.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from lossbench.errors import DamagedInput, MissingInput, printable_lines, read_utf8, shown
from lossbench.evaluation import SEED_METRICS
from lossbench.numerics import PINNED_KERNELS
from lossbench.params import LOSS_KINDS, LossParams, Params, loss_label
from lossbench.restore import another_runs_files
from lossbench.storage import RUNS_DIR, PublishedFiles, SeedRunFiles

# --- JSON, checked -------------------------------------------------------------------------------


class _NotFinite:
    """Stands in, while a file is checked, for a NaN or an infinity read from it."""

    def __init__(self, text: str) -> None:
        self.text = text


def _float(text: str) -> float | _NotFinite:
    value = float(text)  # 1e999 reads as inf
    return value if math.isfinite(value) else _NotFinite(text)


def _first_not_finite(value: Any, key: str = "") -> tuple[str, str] | None:
    """(key path, the text in the file) of the first non-finite number in value."""
    if isinstance(value, _NotFinite):
        return key, value.text
    children: Any = ()
    if isinstance(value, dict):
        children = ((_join(key, str(name)), item) for name, item in value.items())
    elif isinstance(value, list):
        children = ((f"{key}[{index}]", item) for index, item in enumerate(value))
    for child_key, item in children:
        found = _first_not_finite(item, child_key)
        if found is not None:
            return found
    return None


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def parse_json(text: str, where: str) -> Any:
    """JSON text as Python values; NaN, Infinity and out-of-range numbers refused.
    `where` names the file in messages (e.g. 'metrics/details/ce.json of run lt10')."""
    try:
        value = json.loads(text, parse_constant=_NotFinite, parse_float=_float)
        found = _first_not_finite(value)
    except json.JSONDecodeError as error:
        problem = "empty" if not text.strip() else f"not valid JSON ({error.msg}, line {error.lineno})"
        raise DamagedInput(f"{where} is {problem}: truncated or not written by lossbench?") from None
    except RecursionError:
        raise DamagedInput(f"{where} is nested too deeply: not written by lossbench?") from None
    if found is not None:
        key, number = found
        raise DamagedInput(f"{where}: {shown(key) or 'the file'} is {shown(number)}, not a finite number")
    return value


def read_json(path: Path, where: str | None = None) -> Any:
    """A JSON file on disk, through `parse_json`."""
    text = read_utf8(path, where or str(path), DamagedInput, "damaged or not written by lossbench?")
    return parse_json(text, where or str(path))


def _kind(value: Any) -> str:
    """What a JSON value is, for a message: 'null', "a string ('abc')", 'a list', ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"a string ({shown(repr(value))})"
    if isinstance(value, int | float):
        return f"the number {shown(value)}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


@dataclass(frozen=True)
class Field:
    """One value of a JSON file, with where it is (the file, the key path in it):
    each accessor returns it as the type asked for, or raises DamagedInput
    naming the file, the key and what is there instead."""

    value: Any
    where: str  # the file, e.g. data/runs/ce/metrics.json
    key: str = ""  # the key path inside it; '' for the whole file

    def damaged(self, problem: str) -> DamagedInput:
        return DamagedInput(f"{self.where}: {shown(self.key) if self.key else 'the file'} {problem}")

    def _wrong(self, wanted: str) -> DamagedInput:
        return self.damaged(f"is {_kind(self.value)}, not {wanted}")

    def mapping(self) -> dict[str, Any]:
        if not isinstance(self.value, dict):
            raise self._wrong("an object")
        return self.value

    def get(self, name: str) -> Field | None:
        mapping = self.mapping()
        return Field(mapping[name], self.where, _join(self.key, name)) if name in mapping else None

    def child(self, name: str) -> Field:
        found = self.get(name)
        if found is None:
            raise DamagedInput(f"{self.where}: {shown(_join(self.key, name))} is missing")
        return found

    def items(self) -> list[Field]:
        if not isinstance(self.value, list):
            raise self._wrong("a list")
        return [Field(item, self.where, f"{self.key}[{index}]") for index, item in enumerate(self.value)]

    def number(self) -> float:
        if isinstance(self.value, bool) or not isinstance(self.value, int | float):
            raise self._wrong("a number")
        try:
            number = float(self.value)
        except OverflowError:
            raise self.damaged("is too large a number") from None
        if not math.isfinite(number):
            raise self.damaged(f"is {number}, not a finite number")
        return number

    def integer(self) -> int:
        if isinstance(self.value, bool) or not isinstance(self.value, int):
            raise self._wrong("a whole number")
        return self.value

    def text(self) -> str:
        if not isinstance(self.value, str):
            raise self._wrong("text")
        return self.value


# --- per-seed numbers: one reader for runs, details and every report -----------------------------

# What the report reads of each seed of a run (evaluation.seed_metrics and train.py).
RUN_SEED_KEYS = (*SEED_METRICS, "at_chance", "per_class_recall")


def _seed_of(key: str, per_seed: Field) -> int:
    number = key.removeprefix("seed")
    if not key.startswith("seed") or not number.isdigit():
        raise per_seed.damaged(f"has the entry {shown(repr(key))}; every entry is seed<N>")
    return int(number)


def per_seed_numbers(
    per_seed: Field, keys: Sequence[str], seeds: Sequence[int] | None = None, classes: int | None = None
) -> dict[int, dict[str, Any]]:
    """A run's or details file's `per_seed` object: for each seed (those given,
    in that order, or every one there) its numbers, with each of `keys`
    checked: a finite number, except `at_chance` (text or null) and
    `per_class_recall` (a list of numbers, `classes` of them when given)."""
    entries = per_seed.mapping()
    wanted = list(seeds) if seeds is not None else [_seed_of(key, per_seed) for key in entries]
    found: dict[int, dict[str, Any]] = {}
    for seed in wanted:
        entry = per_seed.get(f"seed{seed}")
        if entry is None:
            raise per_seed.damaged(f"has no seed{seed} (seeds there: {', '.join(entries) or 'none'})")
        numbers = entry.mapping()
        for key in keys:
            value = entry.child(key)
            if key == "at_chance":
                if value.value is not None:
                    value.text()
            elif key == "per_class_recall":
                recall = [item.number() for item in value.items()]
                if classes is not None and len(recall) != classes:
                    raise value.damaged(f"has {len(recall)} values for {classes} classes")
            else:
                value.number()
        found[seed] = numbers
    return found


# --- class counts ---------------------------------------------------------------------------------


def checked_class_counts(value: Any, where: str) -> dict[str, Any]:
    """data/class_counts.json's contents, checked: the dataset's name, the
    training images per class, and the data variant if set."""
    counts = Field(value, where)
    counts.child("dataset").text()
    train = counts.child("train")
    if not train.mapping():
        raise train.damaged("names no class")
    for name in train.mapping():
        train.child(name).integer()
    for key in ("imbalance_ratio", "label_noise"):
        if (field := counts.get(key)) is not None:
            field.number()
    return counts.mapping()


def read_class_counts(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise MissingInput(f"{path} is missing: run `dvc repro prepare` first")
    return checked_class_counts(read_json(path), str(path))


# --- one loss's run --------------------------------------------------------------------------------

HISTORY_COLUMNS = ("seed", "epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc")
CALIBRATION_COLUMNS = ("seed", "bin", "lower", "upper", "count", "confidence", "accuracy")
PROTOCOL_SETTINGS = ("epochs", "batch_size", "lr", "momentum", "lr_decay_factor", "lr_step_epochs")
# Calibration bins no test image fell into have no confidence or accuracy.
MAY_BE_EMPTY = ("confidence", "accuracy")


# A setting of the wrong type, read as its type: the same message as any other value of a file.
_READ_AS = {"float_type": Field.number, "int_type": Field.integer, "string_type": Field.text}


def trained_spec(settings: Field) -> LossParams:
    """The loss a run was trained with, from its recorded settings."""
    kind = settings.child("kind")
    model = LOSS_KINDS.get(kind.text())
    if model is None:
        raise kind.damaged(f"is {shown(repr(kind.value))}, not one of {', '.join(LOSS_KINDS)}")
    recorded = settings.mapping()
    try:
        return model.model_validate({key: recorded[key] for key in model.model_fields if key in recorded})
    except ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        read = _READ_AS.get(first["type"])
        if read is not None and len(first["loc"]) == 1:
            read(settings.child(key))  # raises in the words of every other value: 'is null, not a number'
        raise settings.damaged(
            f"do not describe a {kind.value} loss ({shown(key)}: {first['msg']})"
        ) from None


def check_run(run: Field, seeds: Sequence[int] | None = None, stage: str | None = None) -> dict[str, Any]:
    """A loss's run as publish@NAME writes it to metrics/details/NAME.json,
    checked: every seed's numbers included (the seeds it lists, which must be
    `seeds` when given)."""
    listed = [item.integer() for item in run.child("seeds").items()]
    name = run.child("loss").text()
    if seeds is not None and listed != list(seeds):
        raise MissingInput(
            f"{run.where} holds seeds {listed}, params.yaml asks for {list(seeds)}: "
            f"run `dvc repro {stage or f'publish@{name}'}` first"
        )
    run.child("label").text()
    classes = [item.text() for item in run.child("classes").items()]
    per_seed_numbers(run.child("per_seed"), RUN_SEED_KEYS, listed, len(classes))
    _check_sizes_and_settings(run)
    return run.mapping()


def _check_sizes_and_settings(run: Field) -> None:
    run.child("train_samples").integer()
    run.child("test_samples").integer()
    settings = run.child("settings")
    trained_spec(settings)
    for key in PROTOCOL_SETTINGS:  # what the report states of the protocol
        settings.child(key).number()


def read_run(path: Path, seeds: Sequence[int] | None = None) -> dict[str, Any]:
    """metrics/details/NAME.json (or a run mapping of that form), checked: see `check_run`."""
    return check_run(Field(read_json(path), str(path)), seeds)


def read_seed_run(files: SeedRunFiles, name: str, seed: int) -> dict[str, Any]:
    """data/runs/NAME/seedN/metrics.json, checked: what train@NAME-N wrote, a
    run of the form `check_run` reads, with the one seed N."""
    for path in (files.metrics, files.history, files.calibration, files.predictions):
        if not path.is_file():
            raise MissingInput(f"{path} is missing: run `dvc repro train@{name}-{seed}` first")
    run = Field(read_json(files.metrics), str(files.metrics))
    if run.child("loss").text() != name:
        raise run.child("loss").damaged(f"is not {shown(name)}: {another_runs_files(name, seed)}")
    listed = [item.integer() for item in run.child("seeds").items()]
    if listed != [seed]:
        raise run.child("seeds").damaged(f"is {listed}, not [{seed}]: {another_runs_files(name, seed)}")
    return check_run(run, [seed], f"train@{name}-{seed}")


def read_table(path: Path, columns: Sequence[str], seeds: Sequence[int]) -> pd.DataFrame:
    """A CSV a training stage wrote: these numeric columns, finite (but
    MAY_BE_EMPTY), with rows for every seed."""
    try:
        table = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise DamagedInput(f"{path} is empty: truncated?") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as error:
        reason = printable_lines(str(error).splitlines()[0] if str(error) else type(error).__name__)
        raise DamagedInput(f"{path} is not a readable table ({shown(reason)})") from None
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise DamagedInput(f"{path} has no column {', '.join(missing)}: truncated or another format?")
    for column in columns:
        values = pd.to_numeric(table[column], errors="coerce")
        bad = table[column].notna() & ~np.isfinite(values) if column in MAY_BE_EMPTY else ~np.isfinite(values)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DamagedInput(
                f"{path}: {column} in row {row + 1} is {shown(repr(table[column].iloc[row]))}, not a finite number"
            )
    absent = sorted(set(seeds) - set(table["seed"].astype(int)))
    if absent:
        raise DamagedInput(f"{path} has no rows for seed {', '.join(map(str, absent))}: truncated?")
    return table


@dataclass(frozen=True)
class LossResult:
    """One loss's results over its seeds, as its details file (metrics/details/NAME.json) has them."""

    name: str
    label: str  # from the loss it was trained with, which `spec` is
    spec: LossParams
    per_seed: dict[int, dict[str, Any]]  # seed -> that seed's numbers (evaluation.SEED_METRICS, ...)
    history: pd.DataFrame  # one row per seed and epoch
    calibration: pd.DataFrame  # one row per seed and confidence bin
    run: dict[str, Any]  # the rest of metrics/details/NAME.json: settings, sizes, classes

    @classmethod
    def from_details(
        cls,
        details: Field,
        seeds: Sequence[int] | None = None,
        keys: Sequence[str] = RUN_SEED_KEYS,
        tables: tuple[pd.DataFrame, pd.DataFrame] | None = None,
    ) -> LossResult:
        """A details file's result: its seeds (or `seeds`, in that order, so that
        results pair by seed), each with `keys` checked (`per_seed_numbers`); the
        loss as its settings record it; and its (history, calibration) tables
        where the caller read them (a report across experiments has none)."""
        name = details.child("loss").text()
        per_seed = details.child("per_seed")
        classes = details.get("classes")
        numbers = per_seed_numbers(per_seed, keys, seeds, None if classes is None else len(classes.items()))
        if not numbers:
            raise per_seed.damaged("names no seed")
        spec = trained_spec(details.child("settings"))
        history, calibration = tables or (pd.DataFrame(), pd.DataFrame())
        rest = {key: value for key, value in details.mapping().items() if key != "per_seed"}
        return cls(name, loss_label(spec), spec, numbers, history, calibration, rest)

    @property
    def seeds(self) -> list[int]:
        return list(self.per_seed)

    def values(self, key: str) -> list[float]:
        """One number per seed, in seed order."""
        return [float(numbers[key]) for numbers in self.per_seed.values()]

    def mean(self, key: str) -> float:
        return float(np.mean(self.values(key)))

    def at_chance(self) -> dict[int, str]:
        """Seeds whose run never left chance or collapsed to it, and which."""
        return {seed: numbers["at_chance"] for seed, numbers in self.per_seed.items() if numbers["at_chance"]}

    def only(self, seeds: list[int]) -> LossResult:
        """The same result restricted to `seeds`."""
        return replace(
            self,
            per_seed={seed: self.per_seed[seed] for seed in seeds},
            history=self.history[self.history["seed"].isin(seeds)],
            calibration=self.calibration[self.calibration["seed"].isin(seeds)],
        )


def with_unique_labels(results: list[LossResult]) -> list[LossResult]:
    """The results, each loss whose label another shares (two entries with the
    same settings) labelled by its entry name instead: a table row, a legend
    entry and a verdict must name one loss."""
    labels = [result.label for result in results]
    relabelled = [
        replace(result, label=result.name) if labels.count(result.label) > 1 else result for result in results
    ]
    names = [result.label for result in relabelled]
    return [
        replace(result, label=f"{result.label} [{result.name}]") if names.count(result.label) > 1 else result
        for result in relabelled
    ]


def load_results(params: Params, root: Path) -> list[LossResult]:
    """Every loss's published files (publish@NAME), checked, for exactly params.yaml's seeds."""
    results = []
    for name in params.losses:
        run = PublishedFiles.of(root, name)
        for path in (run.details, run.history, run.calibration, run.confusion):
            if not path.is_file():
                raise MissingInput(f"{path} is missing: run `dvc repro publish@{name}` first")
        details = Field(read_run(run.details, params.seeds), str(run.details))  # checked whole, seeds too
        tables = (
            read_table(run.history, HISTORY_COLUMNS, params.seeds),
            read_table(run.calibration, CALIBRATION_COLUMNS, params.seeds),
        )
        results.append(LossResult.from_details(details, params.seeds, tables=tables))
    return with_unique_labels(results)


# The data variant of a clean run: neither long-tailed nor noisy.
CLEAN_DATA = {"imbalance_ratio": 1.0, "label_noise": 0.0}


@dataclass(frozen=True)
class VariantRun:
    """A finished run of a study on one data variant (a long-tailed or noisy
    training set): each loss's result on the study's seeds, and its class counts."""

    experiment: str
    imbalance_ratio: float
    label_noise: float
    results: dict[str, LossResult]  # by loss name, in params.yaml's order
    class_counts: dict[str, Any]


# --- stale results: trained otherwise than the params beside them say --------------------------

# Recorded as the machine resolved them ('auto' as the device used, 0 threads as
# the count used), so never equal to params.yaml's: not compared.
RESOLVED_SETTINGS = {"device", "threads"}


def settings_now(params: Params, name: str) -> dict[str, Any]:
    """What params.yaml gives loss `name` and its training, as a run records it."""
    return params.losses[name].model_dump() | params.train.model_dump(exclude=RESOLVED_SETTINGS)


def changed_settings(result: LossResult, now: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, trained with, now) for each setting of `now`, and each setting of
    the loss it was trained with, that differ: the one staleness check, which
    the report notes and the reports across experiments refuse. A setting the
    run did not record, or `now` does not give, counts as unset."""
    trained = result.run["settings"] | result.spec.model_dump()
    keys = dict.fromkeys([*result.spec.model_dump(), *now])
    return [(key, trained.get(key), now.get(key)) for key in keys if trained.get(key) != now.get(key)]


def _setting(value: Any) -> str:
    if value is None:
        return "unset"
    return f"{value:g}" if isinstance(value, float) else str(value)


def trained_but(changed: list[tuple[str, Any, Any]]) -> str:
    """'was trained with gamma 2 but params.yaml now says gamma 3' for `changed_settings`."""
    return (
        "was trained with "
        + ", ".join(f"{key} {_setting(before)}" for key, before, _ in changed)
        + " but params.yaml now says "
        + ", ".join(f"{key} {_setting(now)}" for key, _, now in changed)
    )


def trained_otherwise(params: Params, result: LossResult) -> str | None:
    """A note when a run was trained with other loss or training settings than
    params.yaml now gives it (edited since, and not rerun), else None."""
    changed = changed_settings(result, settings_now(params, result.name))
    if not changed:
        return None
    return f"note: {RUNS_DIR / result.name} {trained_but(changed)}; labelled as trained — run `dvc repro`"


def without_chance_runs(results: list[LossResult]) -> tuple[list[LossResult], list[int]]:
    """Every result restricted to the seeds on which no loss stayed at chance
    (pairs stay pairs), and the seeds dropped."""
    dropped = sorted({seed for result in results for seed in result.at_chance()})
    kept = [seed for seed in results[0].seeds if seed not in dropped]
    return [result.only(kept) for result in results], dropped


# --- names and numbers in reports ------------------------------------------------------------

# Characters Markdown gives a meaning to anywhere in a line (emphasis, code,
# links, tables, strikethrough, math; '#': GitHub's issue links).
_MARKDOWN = re.compile(r"[\\`*\[\]|~$#]|(?<![^\W_])_|_(?![^\W_])")
_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def md(name: object) -> str:
    """A name from the data (class, loss label, experiment, path) as literal
    Markdown text: no HTML, links, emphasis or table cells can come from it.
    Plain names come out unchanged (an '_' inside a word is left as it is:
    Markdown does not read it as emphasis)."""
    text = printable_lines(str(name)).replace("\n", "\\n")
    text = _MARKDOWN.sub(lambda match: "\\" + match.group(), text)
    return "".join(_HTML.get(character, character) for character in text)


def plus_minus(mean: float, sd: float, digits: int = 4) -> str:
    """'0.5506 ± 0.0312': a seed mean and its standard deviation, as every report writes them."""
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def markdown_names(table: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """A copy of `table` whose named columns (names from the data) are `md`-escaped."""
    return table.assign(
        **{column: [md(value) for value in table[column]] for column in columns if column in table}
    )


# --- the numerics a run was made under -----------------------------------------------------------


def numerics_of(settings: Any) -> str:
    """The numerics a run was made under, from its recorded settings, in words."""
    recorded = settings.get("numerics") if isinstance(settings, dict) else None
    if not isinstance(recorded, dict):
        return "not recorded (made before runs recorded their numerics)"
    kernels = recorded.get("kernels")
    if kernels == PINNED_KERNELS:
        choice = "pinned"
    elif isinstance(kernels, dict) and set(kernels.values()) == {"native"}:
        choice = "native"
    else:
        choice = "set as " + (
            ", ".join(f"{name}={value}" for name, value in kernels.items())
            if isinstance(kernels, dict)
            else str(kernels)
        )
    return (
        f"torch {recorded.get('torch')}, {recorded.get('cpu_capability')} kernels ({choice}), "
        f"{recorded.get('device')}"
    )


def numerics_line(made_under: dict[str, str]) -> str:
    """One sentence: the numerics every run shares, or which runs were made
    under which, so that results of unlike machines are never pooled unsaid."""
    groups: dict[str, list[str]] = {}
    for run, numerics in made_under.items():
        groups.setdefault(numerics, []).append(run)
    if len(groups) == 1:
        return f"Numerics: {next(iter(groups))}."
    return (
        "Runs made under different numerics (their numbers are not bit-comparable, and are compared "
        "anyway): " + "; ".join(f"{', '.join(runs)}: {numerics}" for numerics, runs in groups.items()) + "."
    )
