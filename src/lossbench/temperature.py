"""What temperature scaling changes, as the reports say it: the calibrate
stage's files read back, the measures before and after tabulated (each ECE
beside its floor), and the question the report answers next to the claims:
does a loss's calibration differ from cross-entropy's once each is scaled?

Each loss is compared with the reference loss (the first of kind `ce`) on
ECE, paired by seed, before and after scaling: one Holm family per side,
*equivalent* when the 90% interval lies inside `analysis.ece_margin`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lossbench.errors import MissingInput
from lossbench.md import md
from lossbench.results import LossResult, read_table, without_chance_runs
from lossbench.runfiles import CalibrationFiles, LossCalibration, read_calibration
from lossbench.verdicts import Judged, Margin, Verdict, comparison_text, judge_pairs

RELIABILITY_COLUMNS = ("seed", "bin", "lower", "upper", "count", "confidence", "accuracy")
# The measures of the report's tables: (key, heading, has a floor).
ECE_MEASURES = (("ece", "ECE", True), ("ada_ece", "AdaECE", True), ("classwise_ece", "class-wise ECE", True))
OTHER_MEASURES = (("nll", "NLL", False), ("brier", "Brier", False), ("gap", "confidence − accuracy", False))


@dataclass(frozen=True)
class Scaled:
    """One loss's calibration before and after scaling, for exactly the seeds asked."""

    result: LossResult
    calibration: LossCalibration
    reliability: pd.DataFrame  # bins per seed after scaling

    def values(self, side: str, measure: str) -> list[float]:
        """One number per seed (`side`: 'before' or 'after')."""
        return seed_values(self.calibration, self.result.seeds, side, measure)

    def mean(self, side: str, measure: str) -> float:
        return float(np.mean(self.values(side, measure)))

    def temperatures(self) -> list[float]:
        return [
            t for seed in self.result.seeds for t in self.calibration.per_seed[f"seed{seed}"].temperatures
        ]

    def learned(self) -> Scaled:
        """The same on the seeds whose run left chance (every seed when none or
        all stayed there): what a reliability diagram pools, as comparisons pair."""
        (learned,) = without_chance_runs([self.result])
        if not learned.left_out or not learned.seeds:
            return self
        rows = self.reliability[self.reliability["seed"].isin(learned.seeds)]
        return Scaled(learned, self.calibration, rows)


def load_scaled(results: list[LossResult], root: Path) -> list[Scaled]:
    """Every result's calibrate files, for the result's seeds."""
    found = []
    for result in results:
        files = CalibrationFiles.of(root, result.name)
        for path in files.all():
            if not path.is_file():
                raise MissingInput(f"{path} is missing: run `dvc repro calibrate` first")
        calibration = read_calibration(files.scores)
        missing = [seed for seed in result.seeds if f"seed{seed}" not in calibration.per_seed]
        if missing:
            raise MissingInput(f"{files.scores} has no seed {missing[0]}: run `dvc repro calibrate`")
        reliability = read_table(files.scaled_reliability, RELIABILITY_COLUMNS, result.seeds)
        found.append(Scaled(result, calibration, reliability))
    return found


def reference_of(scaled: list[Scaled]) -> Scaled | None:
    """The loss the others are compared with: the first of kind `ce`."""
    return next((s for s in scaled if s.result.spec.kind == "ce"), None)


@dataclass(frozen=True)
class EceCase:
    """One paired comparison on ECE, before and after scaling: (first, second) per seed."""

    what: str  # 'Focal (γ=2) − CE'
    before: tuple[list[float], list[float]]
    after: tuple[list[float], list[float]]


@dataclass(frozen=True)
class EceVerdicts:
    """Cases judged on ECE before and after scaling: one Holm family per side."""

    cases: list[EceCase]
    before: list[Judged]
    after: list[Judged]

    def lines(self) -> list[str]:
        return [
            f"- **{case.what}**: before scaling {comparison_text(before)}; after scaling "
            f"{comparison_text(after)} — *{after.verdict_text()}*."
            for case, before, after in zip(self.cases, self.before, self.after, strict=True)
        ]


def judge_ece(cases: list[EceCase], margin: Margin) -> EceVerdicts:
    return EceVerdicts(
        cases,
        judge_pairs([(case.what, *case.before) for case in cases], margin),
        judge_pairs([(case.what, *case.after) for case in cases], margin),
    )


def seed_values(
    calibration: LossCalibration, seeds: list[int], side: str, measure: str = "ece"
) -> list[float]:
    """One number per seed of `seeds` (`side`: 'before' or 'after' scaling)."""
    return [getattr(getattr(calibration.per_seed[f"seed{seed}"], side), measure) for seed in seeds]


def calibrated_pair(what: str, first: LossResult, second: LossResult) -> tuple[str, list[int]]:
    """A calibration comparison's name and seeds: those where neither run stayed at chance
    (a network that never learned has no calibration to speak of: T ends at its bound)."""
    stuck = set(first.at_chance()) | set(second.at_chance())
    seeds = [seed for seed in first.seeds if seed not in stuck and seed in second.per_seed]
    return what + without_at_chance(stuck), seeds


def without_at_chance(stuck: set[int]) -> str:
    """What a calibration comparison's name says of the seeds it left out: '' for none."""
    if not stuck:
        return ""
    return f" (without seed{'s' if len(stuck) > 1 else ''} {', '.join(map(str, sorted(stuck)))}: at chance)"


def ece_case(what: str, first: LossCalibration, second: LossCalibration, seeds: list[int]) -> EceCase:
    return EceCase(
        what,
        (seed_values(first, seeds, "before"), seed_values(second, seeds, "before")),
        (seed_values(first, seeds, "after"), seed_values(second, seeds, "after")),
    )


@dataclass(frozen=True)
class ScalingAnswer:
    """Each other loss − the reference on ECE, judged before and after scaling."""

    reference: Scaled | None
    others: list[Scaled]
    judged: EceVerdicts

    def verdicts(self, side: str) -> dict[str, Verdict]:
        judged = self.judged.before if side == "before" else self.judged.after
        return {other.result.name: found.verdict for other, found in zip(self.others, judged, strict=True)}


def answer(scaled: list[Scaled], margin: Margin) -> ScalingAnswer:
    reference = reference_of(scaled)
    others = [] if reference is None else [s for s in scaled if s is not reference]
    cases = []
    for other in others:
        assert reference is not None  # others is empty without one
        what, seeds = calibrated_pair(
            f"{md(other.result.label)} − {md(reference.result.label)}", other.result, reference.result
        )
        cases.append(ece_case(what, other.calibration, reference.calibration, seeds))
    return ScalingAnswer(reference, others, judge_ece(cases, margin))


def _with_floor(s: Scaled, side: str, measure: str) -> str:
    return f"{s.mean(side, measure):.4f} ({s.mean(side, measure + '_floor'):.4f})"


def measures_table(scaled: list[Scaled]) -> pd.DataFrame:
    """One row per loss: T, and each ECE before → after with its floor in brackets."""
    rows = []
    for s in scaled:
        temperatures = s.temperatures()
        row = {
            "loss": md(s.result.label),
            # the median: a run at chance fits T at its bound (100) and would drag a mean
            "T (median; range)": f"{np.median(temperatures):.3f}; {min(temperatures):.2f}–{max(temperatures):.2f}",
        }
        for key, heading, _ in ECE_MEASURES:
            row[f"{heading} before"] = _with_floor(s, "before", key)
            row[f"{heading} after"] = _with_floor(s, "after", key)
        rows.append(row)
    return pd.DataFrame(rows)


def others_table(scaled: list[Scaled]) -> pd.DataFrame:
    """One row per loss: NLL, Brier score and the signed gap before → after."""
    return pd.DataFrame(
        [
            {"loss": md(s.result.label)}
            | {
                f"{heading} {side}": f"{s.mean(side, key):+.4f}"
                if key == "gap"
                else f"{s.mean(side, key):.4f}"
                for key, heading, _ in OTHER_MEASURES
                for side in ("before", "after")
            }
            for s in scaled
        ]
    )


def answer_lines(found: ScalingAnswer) -> list[str]:
    """The question and its answer per loss, in the report's words."""
    if found.reference is None:
        return ["Not testable here: no loss of kind `ce` to compare with."]
    if not found.others:
        return ["Not testable here: no other loss beside cross-entropy."]
    return found.judged.lines()


def summary_of(found: ScalingAnswer, scaled: list[Scaled]) -> dict[str, object]:
    """summary.json's `calibration`: the seed means and the verdicts, by loss name."""
    return {
        "reference": None if found.reference is None else found.reference.result.name,
        "temperature": {s.result.name: round(float(np.median(s.temperatures())), 4) for s in scaled},
        "ece_before": {s.result.name: round(s.mean("before", "ece"), 4) for s in scaled},
        "ece_after": {s.result.name: round(s.mean("after", "ece"), 4) for s in scaled},
        "ece_after_floor": {s.result.name: round(s.mean("after", "ece_floor"), 4) for s in scaled},
        "verdict_before": {name: v.value for name, v in found.verdicts("before").items()},
        "verdict_after": {name: v.value for name, v in found.verdicts("after").items()},
    }
