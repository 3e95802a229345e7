"""Verdicts and the tests behind them, checked against independent answers:
Holm against statsmodels' multipletests, TOST against statsmodels'
ttost_paired, the sign-flip test against a brute-force enumeration."""

import itertools
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import ttost_paired

from lossbench.claims import rise_epochs
from lossbench.losses.ce import CeLoss
from lossbench.results import LossResult
from lossbench.stats import above_p, holm, paired_comparison, sign_flip_p, tost_p
from lossbench.verdicts import (
    ClaimVerdict,
    Margin,
    Verdict,
    comparison_text,
    directional,
    judge_pairs,
    sameness,
    wilcoxon_note,
)

pytestmark = pytest.mark.fast  # in-process: no trainer, no DVC, no lossbench subprocess

RNG = np.random.default_rng(7)


@pytest.mark.parametrize("size", [1, 2, 6, 21])
def test_holm_matches_statsmodels(size: int) -> None:
    p_values = [*RNG.uniform(0, 0.2, size), 0.01, 0.01]  # ties included
    expected = multipletests(p_values, method="holm")[1]
    assert holm(p_values) == pytest.approx(list(expected), abs=1e-12)


def test_holm_leaves_missing_p_values_out_of_the_family() -> None:
    p_values = [0.01, None, 0.04, math.nan]
    adjusted = holm(p_values)
    assert adjusted[:3] == pytest.approx([0.02, None, 0.04]) and math.isnan(adjusted[3])  # type: ignore[arg-type]


@pytest.mark.parametrize("margin", [0.005, 0.01, 0.03])
@pytest.mark.parametrize("n", [3, 5, 10])
def test_tost_matches_statsmodels_ttost_paired(margin: float, n: int) -> None:
    first = RNG.normal(0.55, 0.02, n)
    second = first - RNG.normal(0.004, 0.01, n)
    expected = ttost_paired(first, second, -margin, margin)[0]
    assert tost_p(first - second, margin) == pytest.approx(expected, rel=1e-9)


def _brute_force_sign_flip(differences: np.ndarray, alternative: str) -> float:
    observed = differences.mean()
    means = np.array(
        [np.mean(differences * signs) for signs in itertools.product([1, -1], repeat=len(differences))]
    )
    tolerance = 1e-12
    if alternative == "greater":
        return float(np.mean(means >= observed - tolerance))
    if alternative == "less":
        return float(np.mean(means <= observed + tolerance))
    return float(np.mean(np.abs(means) >= abs(observed) - tolerance))


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
@pytest.mark.parametrize("n", [2, 4, 5, 7, 10])
def test_sign_flip_matches_brute_force_enumeration(n: int, alternative: str) -> None:
    for _ in range(5):
        differences = np.round(RNG.normal(0.01, 0.02, n), 4)
        expected = _brute_force_sign_flip(differences, alternative)
        assert sign_flip_p(differences, alternative) == pytest.approx(expected, abs=1e-12)


def test_sign_flip_of_a_constant_difference_is_its_floor() -> None:
    assert sign_flip_p([1.0, 1.0, 1.0, 1.0]) == pytest.approx(2 / 2**4)
    assert sign_flip_p([1.0] * 4, "greater") == pytest.approx(1 / 2**4)
    assert sign_flip_p([0.0, 0.0]) == 1.0


def test_all_equal_paired_differences_give_no_verdict_of_difference() -> None:
    """Two seeds, each one test image (1e-4) apart: the differences have no spread, the
    t-test has nothing to go by, and the exact sign-flip test says p = 0.5, not 0."""
    first, second = [0.5001, 0.6001], [0.5000, 0.6000]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no raw RuntimeWarning reaches the user
        comparison = paired_comparison([0.5, 0.5], [0.4999, 0.4999])
        (judged,) = judge_pairs([("a − b", first, second)], Margin(0.01))
    assert comparison["p_value"] == pytest.approx(0.5)
    assert judged.comparison["p_value"] >= 0.5 and judged.verdict is Verdict.INCONCLUSIVE
    # Converged epochs exactly one apart on each of four seeds: p = 2/16, not 0.
    (epochs,) = judge_pairs([("x", [26.0, 25, 27, 24], [25.0, 24, 26, 23])], Margin(2.0, 1.0, " epochs"))
    assert epochs.comparison["p_value"] == pytest.approx(0.125)
    assert epochs.verdict is not Verdict.DIFFERENT


def test_verdicts_three_ways() -> None:
    base = np.array([0.50, 0.60, 0.70, 0.55, 0.52, 0.58])
    noise = np.array([0.001, -0.002, 0.0015, -0.001, 0.0005, 0.0])
    equal, higher, wide = judge_pairs(
        [
            ("equal", base + noise, base),
            ("higher", base + 0.03 + noise, base),
            ("wide", base + 30 * noise, base),
        ],
        Margin(0.01),
    )
    assert equal.verdict is Verdict.EQUIVALENT and "equivalent within ±1.0 points" in comparison_text(equal)
    assert higher.verdict is Verdict.DIFFERENT and higher.went("higher")
    assert wide.verdict is Verdict.INCONCLUSIVE and "wide against ±1.0" in comparison_text(wide)
    assert directional([higher], "higher") is ClaimVerdict.SUPPORTED
    assert directional([higher], "lower") is ClaimVerdict.CONTRADICTED
    assert (
        sameness([equal]) is ClaimVerdict.SUPPORTED and sameness([equal, wide]) is ClaimVerdict.INCONCLUSIVE
    )
    assert sameness([equal, higher]) is ClaimVerdict.CONTRADICTED


def test_the_adjusted_p_value_decides_a_family() -> None:
    # Two raw p-values under 0.05 whose Holm adjustment is not: neither is called different.
    base = np.linspace(0.5, 0.6, 5)
    first = base + np.array([0.012, 0.02, 0.005, 0.018, 0.01])
    judged = judge_pairs([("a", first, base), ("b", first, base)], Margin(0.001))
    raw = judged[0].comparison["p_value"]
    assert raw < 0.05 and judged[0].p_adjusted == pytest.approx(min(1.0, 2 * raw))


def test_not_above_is_one_half_of_tost() -> None:
    differences = RNG.normal(0.0, 0.01, 8)
    assert tost_p(differences, 0.01) == pytest.approx(
        max(above_p(differences, -0.01), above_p(-differences, -0.01))  # type: ignore[type-var]
    )


def test_wilcoxon_note_says_when_five_percent_is_out_of_reach() -> None:
    assert "At n = 4 no Wilcoxon" in wilcoxon_note(4) and "At n = 5 no Wilcoxon" in wilcoxon_note(5)
    assert "cannot go below p = 0.00195" in wilcoxon_note(10)


def test_a_nan_is_not_testable() -> None:
    (judged,) = judge_pairs([("a", [0.5, math.nan, 0.6], [0.4, 0.5, 0.5])], Margin(0.01))
    assert judged.verdict is Verdict.NOT_TESTABLE
    assert directional([judged], "higher") is ClaimVerdict.NOT_TESTABLE


def test_convergence_by_the_rise_fraction() -> None:
    """The first epoch at 90% of the rise from epoch 1 to the last: 0.1 -> 0.6 rises 0.5,
    so the target is 0.55, first reached at epoch 4 (the protocol's rule, within 0.5
    points of the best, gives epoch 5)."""
    history = pd.DataFrame(
        {
            "seed": [1] * 5 + [2] * 5,
            "epoch": [1, 2, 3, 4, 5] * 2,
            "test_acc": [0.1, 0.3, 0.5, 0.55, 0.6, 0.2, 0.2, 0.2, 0.2, 0.2],
        }
    )
    result = LossResult("ce", "CE", CeLoss(kind="ce"), {1: {}, 2: {}}, history, pd.DataFrame(), {})
    assert rise_epochs(result) == [4.0, 1.0]  # a curve that never rose converges at once
