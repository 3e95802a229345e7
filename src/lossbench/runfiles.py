"""The files stages write for the analysis side to read, as strict models:
what a file holds is declared once, checked when it is read, and a reader
gets typed values, never a dict it has to trust.

Below every analysis module (it imports only the params base and the
layout), so a stage that writes a file and a report that reads it share it
without an import pointing up.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, ValidationError

from lossbench.errors import DamagedInput, read_utf8, shown
from lossbench.strict import Strict

CALIBRATION_DIR = Path("metrics/calibration")  # temperature scaling per loss (calibrate)
SCALED_RELIABILITY_DIR = Path("plots/calibration_scaled")  # reliability bins after scaling


@dataclass(frozen=True)
class CalibrationFiles:
    """What calibrate writes for one loss."""

    scores: Path  # metrics/calibration/NAME.json: T and the measures per seed
    scaled_reliability: Path  # plots/calibration_scaled/NAME.csv: bins per seed after scaling

    @classmethod
    def of(cls, root: Path, name: str) -> CalibrationFiles:
        return cls(root / CALIBRATION_DIR / f"{name}.json", root / SCALED_RELIABILITY_DIR / f"{name}.csv")

    def all(self) -> list[Path]:
        return [self.scores, self.scaled_reliability]


class Measures(Strict):
    """calibration.Scores, as written: the ECEs and their floors, NLL, Brier, the gap."""

    ece: float
    ada_ece: float
    classwise_ece: float
    nll: float
    brier: float
    gap: float
    ece_floor: float
    ada_ece_floor: float
    classwise_ece_floor: float


class SeedCalibration(Strict):
    # [k]: T fitted on half k of the test set, which scored the other half
    temperatures: list[float] = Field(min_length=2, max_length=2)
    before: Measures  # each the mean over the two scored halves
    after: Measures


class LossCalibration(Strict):
    """metrics/calibration/NAME.json."""

    loss: str
    label: str
    split_seed: int
    bins: int
    floor_draws: int
    half_sizes: list[int]
    per_seed: dict[str, SeedCalibration]  # "seed1": ...

    def seeds(self) -> list[int]:
        return [int(key.removeprefix("seed")) for key in self.per_seed]


def parsed_calibration(value: object, where: str) -> LossCalibration:
    """A calibration file's parsed JSON, checked; a damaged one is named (`where`) with what is wrong."""
    try:
        return LossCalibration.model_validate(value)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "the file"
        raise DamagedInput(
            f"{where}: not a calibration file ({field}: {first['msg']}); run `dvc repro` to rewrite it"
        ) from None


def read_calibration(path: Path) -> LossCalibration:
    """A calibration file, checked; a damaged one is named with what is wrong."""
    where = shown(str(path))
    text = read_utf8(path, where, DamagedInput, "run `dvc repro` to rewrite it")
    try:
        value = json.loads(text)
    except ValueError as error:
        raise DamagedInput(f"{where}: not JSON ({error}); run `dvc repro` to rewrite it") from None
    return parsed_calibration(value, where)
