"""Seed statistics: summaries with 95% intervals, and paired comparisons.

Losses are compared on the same seeds (same initial weights, batch order and
augmentation), so the differences are paired: the t interval, the paired
t-test and the Wilcoxon signed-rank test all use the per-seed differences.
A "not significant" is only as strong as the seeds behind it, so every
comparison also gives the smallest difference these seeds would have detected.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy  # submodules load on first use: publish needs only scipy.special, 0.5 s less per process

SIGNIFICANCE = 0.05
POWER = 0.8
# direction()'s answers besides 'higher' and 'lower'.
NO_DIFFERENCE = "no significant difference"
CANNOT_TELL = "cannot be told"  # the test gave no p-value to go by (nan: overflowing numbers)


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample standard deviation and the 95% t interval of the mean
    (None where one value cannot give one)."""
    data = np.asarray(values, dtype=float)
    n = len(data)
    mean = float(data.mean())
    std = float(data.std(ddof=1)) if n > 1 else 0.0
    if n < 2:
        return {"mean": mean, "std": std, "ci95_low": None, "ci95_high": None, "n": n}
    # stdtrit is the function scipy.stats.t.ppf calls, without scipy.stats' import.
    half = float(scipy.special.stdtrit(n - 1, 0.975)) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "ci95_low": mean - half, "ci95_high": mean + half, "n": n}


def detectable_difference(
    std: float, n: int, alpha: float = SIGNIFICANCE, power: float = POWER
) -> float | None:
    """The smallest true mean difference that a two-sided paired t-test on n
    pairs whose differences have this standard deviation detects with the
    given power: the noncentral-t answer, not the normal approximation."""
    if n < 2 or not std > 0:
        return None
    df = n - 1
    critical = float(scipy.stats.t.ppf(1 - alpha / 2, df))

    def power_at(effect: float) -> float:
        shift = effect * math.sqrt(n)
        upper = float(scipy.stats.nct.sf(critical, df, shift))
        # The far tail is negligible here, and scipy returns nan for it at large shifts.
        lower = float(np.nan_to_num(scipy.stats.nct.cdf(-critical, df, shift)))
        return upper + lower

    high = 1.0  # in standard deviations of the differences; power grows with it
    while power_at(high) < power:
        high *= 2
    effect = scipy.optimize.brentq(lambda e: power_at(e) - power, 0.0, high)
    return float(effect * std)


def wilcoxon_p(differences: Sequence[float]) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value of the paired differences (exact
    for few seeds; zero differences dropped). With n pairs it cannot go below
    2 / 2**n: 0.125 with four seeds, 0.002 with ten."""
    data = np.asarray(differences, dtype=float)
    if len(data) < 2:
        return None
    if not np.any(data != 0):
        return 1.0
    return float(scipy.stats.wilcoxon(data, zero_method="wilcox", alternative="two-sided").pvalue)


def friedman_p(groups: Sequence[Sequence[float]]) -> float | None:
    """Friedman's rank test that k related groups (one value per seed in each,
    seeds in the same order) come from one distribution: does the setting
    matter at all? None with fewer than three groups or two seeds."""
    if len(groups) < 3 or min(len(group) for group in groups) < 2:
        return None
    if all(np.array_equal(groups[0], group) for group in groups):
        return 1.0
    return float(scipy.stats.friedmanchisquare(*groups).pvalue)


def paired_comparison(first: Sequence[float], second: Sequence[float]) -> dict[str, Any]:
    """first - second, seed by seed: mean difference, its 95% interval, the
    paired t-test's and the Wilcoxon test's two-sided p-values, and the
    smallest difference detectable with 80% power (None with fewer than two seeds)."""
    differences = np.asarray(first, dtype=float) - np.asarray(second, dtype=float)
    summary = summarize(differences)
    if len(differences) < 2:
        p_value = None
    elif summary["std"] == 0:
        p_value = 1.0 if summary["mean"] == 0 else 0.0  # identical differences: no spread to test
    else:
        p_value = float(scipy.stats.ttest_rel(first, second).pvalue)
    return {
        "mean_difference": summary["mean"],
        "ci95_low": summary["ci95_low"],
        "ci95_high": summary["ci95_high"],
        "p_value": p_value,
        "wilcoxon_p": wilcoxon_p(differences),
        "detectable": detectable_difference(summary["std"], summary["n"]),
        "n": summary["n"],
    }


def direction(comparison: dict[str, Any]) -> str:
    """'higher' or 'lower' when first differs from second at the 5% level
    (paired t-test), NO_DIFFERENCE when not, and CANNOT_TELL when the test
    gave nan (never read as significant: nan < 0.05 is merely false)."""
    p_value, difference = comparison["p_value"], comparison["mean_difference"]
    if p_value is not None and not (math.isfinite(p_value) and math.isfinite(difference)):
        return CANNOT_TELL
    if p_value is None or p_value >= SIGNIFICANCE:
        return NO_DIFFERENCE
    return "higher" if difference > 0 else "lower"
