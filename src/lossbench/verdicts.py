"""Verdicts as data: what a paired comparison and a claim conclude, before a
word of it is written.

A comparison of two settings over the same seeds is *different* when its
two-sided p-value, after Holm's correction within its family, is below 5%
(its 95% interval then excludes 0 in all but the exact small-n cases);
*equivalent within ±margin* when the two one-sided tests (TOST) both reject,
i.e. the 90% interval lies inside the margin; *inconclusive* when neither;
*not testable* with fewer than two seeds or a p-value that is not a number.
The margin is a param (`analysis:` in params.yaml). A sentence is made from
a verdict (`comparison_text`), never parsed back into one.

A claim is *supported*, *contradicted*, *partly supported* (some of its parts
supported, none contradicted), *mixed* (parts each way), *inconclusive* or
*not testable*. A claim that every one of several comparisons goes one way
(an intersection) needs no correction; "any one of them goes the other way"
(a union) is judged on Holm-adjusted p-values within the claim's family.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import pandas as pd

from lossbench.stats import SIGNIFICANCE, above_p, holm, paired_comparison, tost_p, wilcoxon_floor


class Verdict(Enum):
    """What one paired comparison concludes."""

    DIFFERENT = "different"
    EQUIVALENT = "equivalent"  # written with its margin: 'equivalent within ±1.0 points'
    INCONCLUSIVE = "inconclusive"
    NOT_TESTABLE = "not testable"


class ClaimVerdict(Enum):
    """What a claim (or one half of it) concludes from its comparisons."""

    SUPPORTED = "supported"
    CONTRADICTED = "contradicted"
    PARTLY = "partly supported"
    MIXED = "mixed"
    INCONCLUSIVE = "inconclusive"
    NOT_TESTABLE = "not testable"


CLAIM_VERDICT_WORDS = tuple(verdict.value for verdict in ClaimVerdict)


@dataclass(frozen=True)
class Margin:
    """An equivalence margin in the measure's units, and how it is written (scale × value + unit)."""

    size: float
    scale: float = 100.0
    unit: str = " points"

    def text(self, value: float, signed: bool = True) -> str:
        return f"{self.scale * value:{'+' if signed else ''}.1f}"

    def written(self) -> str:
        return f"±{self.scale * self.size:.1f}{self.unit}"


@dataclass(frozen=True)
class Judged:
    """One paired comparison (first − second), its family-adjusted p-value, its
    equivalence test against the margin, and the verdict drawn from them."""

    what: str
    comparison: dict[str, Any]
    margin: Margin
    p_adjusted: float | None
    p_equivalence: float | None
    verdict: Verdict
    family: int = 1  # comparisons in its Holm family (0: told, not judged in one)

    @property
    def higher(self) -> bool:
        return bool(self.comparison["mean_difference"] > 0)

    def went(self, wanted: str) -> bool:
        """Different, in the direction wanted ('higher' or 'lower')."""
        return self.verdict is Verdict.DIFFERENT and self.higher == (wanted == "higher")

    def raw_went(self, wanted: str) -> bool:
        """Significant in the direction wanted before any correction (for a claim that all must hold)."""
        p_value = self.comparison["p_value"]
        return (
            p_value is not None
            and math.isfinite(p_value)
            and p_value < SIGNIFICANCE
            and self.higher == (wanted == "higher")
        )

    def verdict_text(self) -> str:
        if self.verdict is Verdict.EQUIVALENT:
            return f"equivalent within {self.margin.written()}"
        if self.verdict is Verdict.DIFFERENT:
            return f"different ({'higher' if self.higher else 'lower'})"
        return str(self.verdict.value)


def verdict_of(comparison: dict[str, Any], p_adjusted: float | None, p_equivalence: float | None) -> Verdict:
    p_value, difference = comparison["p_value"], comparison["mean_difference"]
    if p_value is None or p_adjusted is None:
        return Verdict.NOT_TESTABLE
    if not (math.isfinite(p_value) and math.isfinite(difference)):
        return Verdict.NOT_TESTABLE  # nan is never read as significant: nan < 0.05 is merely false
    if p_adjusted < SIGNIFICANCE:
        return Verdict.DIFFERENT
    if p_equivalence is not None and p_equivalence < SIGNIFICANCE:
        return Verdict.EQUIVALENT
    return Verdict.INCONCLUSIVE


@dataclass
class Family:
    """Paired comparisons judged together: Holm's correction runs over the
    p-values of every comparison added with `counts` (the family), while
    `told` ones are judged on their own."""

    margin: Margin
    pending: list[tuple[str, dict[str, Any], bool]] = field(default_factory=list)

    def add(self, what: str, first: Sequence[float], second: Sequence[float], counts: bool = True) -> None:
        self.pending.append((what, paired_comparison(first, second), counts))

    def judged(self) -> list[Judged]:
        counted = [comparison["p_value"] for _, comparison, counts in self.pending if counts]
        adjusted = iter(holm(counted))
        found = []
        for what, comparison, counts in self.pending:
            p_adjusted = next(adjusted) if counts else comparison["p_value"]
            p_equivalence = tost_p(comparison["differences"], self.margin.size)
            verdict = verdict_of(comparison, p_adjusted, p_equivalence)
            family = len(counted) if counts else 0
            found.append(Judged(what, comparison, self.margin, p_adjusted, p_equivalence, verdict, family))
        return found


def judge_pairs(
    pairs: Sequence[tuple[str, Sequence[float], Sequence[float]]], margin: Margin
) -> list[Judged]:
    """Each (what, first, second) compared, Holm over all of them."""
    family = Family(margin)
    for what, first, second in pairs:
        family.add(what, first, second)
    return family.judged()


def not_above(judged: Judged) -> bool:
    """The second is not better than the first by the margin or more (TOST's
    lower one-sided test at 5%: the 90% interval's low end above −margin)."""
    p_value = above_p(judged.comparison["differences"], -judged.margin.size)
    return p_value is not None and p_value < SIGNIFICANCE


def _p(value: float | None) -> str:
    if value is None:
        return "–"
    return "nan" if not math.isfinite(value) else f"{value:.3g}"


def comparison_text(judged: Judged) -> str:
    """'+1.2 points [−0.3, +2.7], p = 0.08 (Holm 0.16; Wilcoxon 0.12): inconclusive, 95% CI 3.0 points
    wide against ±1.0' — the interval, never the detectable difference, bounds the difference."""
    comparison, margin = judged.comparison, judged.margin
    if not comparison["n"]:
        return "no seed to pair: not testable"
    text = f"{margin.text(comparison['mean_difference'])}{margin.unit}"
    if comparison["ci95_low"] is not None:
        text += f" [{margin.text(comparison['ci95_low'])}, {margin.text(comparison['ci95_high'])}]"
    if comparison["p_value"] is None:
        return text + ": not testable (one seed)"
    text += f", p = {_p(comparison['p_value'])}"
    notes = []
    if judged.family > 1:
        notes.append(f"Holm {_p(judged.p_adjusted)}")
    notes.append(f"Wilcoxon {_p(comparison['wilcoxon_p'])}")
    text += f" ({'; '.join(notes)}): {judged.verdict_text()}"
    if judged.verdict is Verdict.INCONCLUSIVE and comparison["ci95_low"] is not None:
        width = comparison["ci95_high"] - comparison["ci95_low"]
        text += f", 95% CI {margin.text(width, signed=False)}{margin.unit} wide against {margin.written()}"
    return text


def wilcoxon_note(n: int) -> str:
    """What a Wilcoxon test can say with n seeds, where it cannot reach 5%."""
    floor = wilcoxon_floor(n)
    if floor < SIGNIFICANCE:
        return f"With {n} seeds the exact Wilcoxon and sign-flip tests cannot go below p = {floor:.3g}."
    return (
        f"At n = {n} no Wilcoxon (or sign-flip) test can reach p < {SIGNIFICANCE}: its smallest p-value is "
        f"{floor:.3g}, so only the t-test can find a difference here."
    )


def all_of(parts: Sequence[ClaimVerdict]) -> ClaimVerdict:
    """A claim made of parts that must all hold."""
    found = set(parts)
    if not parts or found == {ClaimVerdict.NOT_TESTABLE}:
        return ClaimVerdict.NOT_TESTABLE
    if found == {ClaimVerdict.SUPPORTED}:
        return ClaimVerdict.SUPPORTED
    if ClaimVerdict.SUPPORTED in found and ClaimVerdict.CONTRADICTED in found:
        return ClaimVerdict.MIXED
    if ClaimVerdict.CONTRADICTED in found:
        return ClaimVerdict.CONTRADICTED
    if ClaimVerdict.SUPPORTED in found or ClaimVerdict.PARTLY in found:
        return ClaimVerdict.PARTLY
    return ClaimVerdict.INCONCLUSIVE


def directional(judged: Sequence[Judged], wanted: str) -> ClaimVerdict:
    """Every comparison goes the wanted way at p < 0.05 (an intersection: the
    raw p-values): supported; any different the other way (a union: the
    Holm-adjusted ones): contradicted; none testable: not testable."""
    if not judged or all(j.verdict is Verdict.NOT_TESTABLE for j in judged):
        return ClaimVerdict.NOT_TESTABLE
    opposite = "lower" if wanted == "higher" else "higher"
    if all(j.raw_went(wanted) for j in judged):
        return ClaimVerdict.SUPPORTED
    if any(j.went(opposite) for j in judged):
        return ClaimVerdict.CONTRADICTED
    return ClaimVerdict.INCONCLUSIVE


def sameness(judged: Sequence[Judged]) -> ClaimVerdict:
    """Every comparison equivalent within its margin: supported; any different: contradicted."""
    if not judged or any(j.verdict is Verdict.NOT_TESTABLE for j in judged):
        return ClaimVerdict.NOT_TESTABLE
    if all(j.verdict is Verdict.EQUIVALENT for j in judged):
        return ClaimVerdict.SUPPORTED
    if any(j.verdict is Verdict.DIFFERENT for j in judged):
        return ClaimVerdict.CONTRADICTED
    return ClaimVerdict.INCONCLUSIVE


def _rounded(value: float | None, scale: float = 1.0, digits: int = 4) -> float | None:
    return None if value is None else round(scale * value, digits)


def pairwise_table(
    pairs: Sequence[tuple[str, str, Sequence[float], Sequence[float]]], margin: Margin
) -> pd.DataFrame:
    """One row per (first, second, first's values, second's values), paired by
    seed, the rows one family for Holm's correction: the difference and its
    95% CI (in the margin's units), raw and Holm-adjusted paired-t p, the
    Wilcoxon, sign-flip and TOST p-values, the detectable difference (a
    planning number) and the verdict."""
    judged = judge_pairs([(f"{first} − {second}", a, b) for first, second, a, b in pairs], margin)
    unit = margin.unit.strip()
    rows = []
    for (first, second, _, _), found in zip(pairs, judged, strict=True):
        comparison = found.comparison
        verdict = found.verdict_text()
        if found.verdict is Verdict.DIFFERENT:
            verdict = f"different: {first if found.higher else second} higher"
        rows.append(
            {
                "first": first,
                "second": second,
                f"mean difference ({unit})": _rounded(comparison["mean_difference"], margin.scale, 2),
                "95% CI low": _rounded(comparison["ci95_low"], margin.scale, 2),
                "95% CI high": _rounded(comparison["ci95_high"], margin.scale, 2),
                "p (paired t)": _rounded(comparison["p_value"]),
                "p (Holm)": _rounded(found.p_adjusted),
                "p (Wilcoxon)": _rounded(comparison["wilcoxon_p"]),
                "p (sign-flip)": _rounded(comparison["sign_flip_p"]),
                f"p (TOST ±{margin.scale * margin.size:g})": _rounded(found.p_equivalence),
                f"detectable ({unit}, planning)": _rounded(comparison["detectable"], margin.scale, 1),
                "verdict": verdict,
            }
        )
    return pd.DataFrame(rows)
