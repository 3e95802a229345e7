"""A loss's results as the analysis side reads them: its published details as
a `LossResult` (the report's, the γ sweep's and variants-report's alike, each
file checked against runfiles.LossDetails), its per-epoch tables, the class
counts, and the seed arithmetic every comparison shares.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lossbench.errors import DamagedInput, MissingInput, printable_lines, shown
from lossbench.jsonfile import read_json
from lossbench.params import LossParams, Params, loss_label
from lossbench.result_files import (
    ClassCounts,
    LossDetails,
    listed_seeds,
    loss_of,
    parsed,
    seed_numbers,
)
from lossbench.storage import PublishedFiles

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
    left_out: tuple[int, ...] = ()  # seeds taken out because the run stayed at chance there

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
            history=_rows_of(self.history, seeds),
            calibration=_rows_of(self.calibration, seeds),
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


def _rows_of(table: pd.DataFrame, seeds: list[int]) -> pd.DataFrame:
    """A per-seed table's rows of these seeds (a result read without its table has none)."""
    return table[table["seed"].isin(seeds)] if "seed" in table.columns else table


def without_chance_runs(results: list[LossResult]) -> list[LossResult]:
    """Each result on its own seeds that left chance, the others in its `left_out`:
    a comparison then pairs two of them on the seeds both kept (`paired`)."""
    cleaned = []
    for result in results:
        stuck = result.at_chance()
        kept = [seed for seed in result.seeds if seed not in stuck]
        cleaned.append(replace(result.only(kept), left_out=tuple(stuck)))
    return cleaned


def paired(*results: LossResult) -> list[LossResult]:
    """The results on the seeds every one of them has, in the first's seed order:
    what a comparison pairs by seed. Results on the same seeds come back as they are."""
    common = [seed for seed in results[0].seeds if all(seed in result.per_seed for result in results)]
    return [result if result.seeds == common else result.only(common) for result in results]


def lost_seeds(*results: LossResult) -> list[int]:
    """The seeds a comparison of these results leaves out: where one of them stayed at chance."""
    return sorted(set().union(*(result.left_out for result in results)))
