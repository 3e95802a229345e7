"""What the analysis side reads, read in one place: one seed's finished run
(data/runs/NAME/seedN), a loss's published details as a `LossResult` (the
report's, the γ sweep's and variants-report's alike), class counts, and the
seed arithmetic every comparison shares; and how a name or a mean ± sd from
the data is written into a report.

Every JSON file goes through `parse_json`, which refuses NaN and infinities
(Python's json reads `NaN` and `Infinity` as numbers), and is checked
against its model in runfiles (a params file of another run, `Field`): a
damaged file stops the command with one line naming the file and the key,
never a traceback or a verdict computed from nonsense.
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

from lossbench.errors import DamagedInput, MissingInput, printable_lines, read_utf8, shown
from lossbench.params import LossParams, Params, loss_label
from lossbench.restore import another_runs_files
from lossbench.runfiles import (
    ClassCounts,
    LossDetails,
    SeedRunMetrics,
    kind_of,
    listed_seeds,
    loss_of,
    parsed,
    seed_numbers,
)
from lossbench.storage import PublishedFiles, SeedRunFiles

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
        return self.damaged(f"is {kind_of(self.value)}, not {wanted}")

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


# --- class counts ---------------------------------------------------------------------------------


def checked_class_counts(value: object, where: str) -> dict[str, Any]:
    """data/class_counts.json's contents, checked (runfiles.ClassCounts), as written."""
    counts = parsed(ClassCounts, value, where)
    if not counts.train:
        raise DamagedInput(f"{where}: train names no class")
    assert isinstance(value, dict)  # a ClassCounts
    return value


def read_class_counts(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise MissingInput(f"{path} is missing: run `dvc repro prepare` first")
    return checked_class_counts(read_json(path), str(path))


# --- one loss's run --------------------------------------------------------------------------------

HISTORY_COLUMNS = ("seed", "epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc")
CALIBRATION_COLUMNS = ("seed", "bin", "lower", "upper", "count", "confidence", "accuracy")
# Calibration bins no test image fell into have no confidence or accuracy.
MAY_BE_EMPTY = ("confidence", "accuracy")


def read_seed_run(files: SeedRunFiles, name: str, seed: int) -> dict[str, Any]:
    """data/runs/NAME/seedN/metrics.json, checked (runfiles.SeedRunMetrics):
    what train@NAME-N wrote, with the one seed N; as written, for publish to gather."""
    for path in (files.metrics, files.history, files.calibration, files.predictions):
        if not path.is_file():
            raise MissingInput(f"{path} is missing: run `dvc repro train@{name}-{seed}` first")
    where = str(files.metrics)
    value = read_json(files.metrics)
    run = parsed(SeedRunMetrics, value, where)
    if run.loss != name:
        raise DamagedInput(f"{where}: loss is not {shown(name)}: {another_runs_files(name, seed)}")
    if run.seeds != [seed]:
        raise DamagedInput(f"{where}: seeds is {run.seeds}, not [{seed}]: {another_runs_files(name, seed)}")
    seed_numbers(run.per_seed, where, [seed], len(run.classes))
    loss_of(run.settings, where)
    assert isinstance(value, dict)  # a SeedRunMetrics
    return value


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
        value: object,
        where: str,
        seeds: Sequence[int] | None = None,
        tables: tuple[pd.DataFrame, pd.DataFrame] | None = None,
    ) -> LossResult:
        """A details file's result (`value`, its parsed JSON; `where`, the file),
        checked (runfiles.LossDetails): its seeds (or `seeds`, in that order, so
        that results pair by seed); the loss as its settings record it; and its
        (history, calibration) tables where the caller read them (a report
        across experiments has none)."""
        details = parsed(LossDetails, value, where)
        numbers = seed_numbers(details.per_seed, where, seeds, len(details.classes))
        spec = loss_of(details.settings, where)
        history, calibration = tables or (pd.DataFrame(), pd.DataFrame())
        assert isinstance(value, dict)  # a LossDetails
        rest = {key: item for key, item in value.items() if key != "per_seed"}
        per_seed = {seed: entry.model_dump(exclude_unset=True) for seed, entry in numbers.items()}
        return cls(details.loss, loss_label(spec), spec, per_seed, history, calibration, rest)

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
        details = read_json(run.details)
        listed = parsed(LossDetails, details, str(run.details)).seeds
        listed_seeds(listed, params.seeds, str(run.details), f"publish@{name}")
        tables = (
            read_table(run.history, HISTORY_COLUMNS, params.seeds),
            read_table(run.calibration, CALIBRATION_COLUMNS, params.seeds),
        )
        results.append(LossResult.from_details(details, str(run.details), params.seeds, tables))
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
