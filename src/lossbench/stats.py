"""Seed statistics: summaries with 95% intervals, and paired comparisons.

Losses are compared on the same seeds (same initial weights, batch order and
augmentation), so the differences are paired: the t interval, the paired
t-test and the Wilcoxon signed-rank test all use the per-seed differences.
Where the differences have no spread (an integer measure that differs by the
same amount on every seed) the t-test has nothing to go by, and the exact
sign-flip test of the differences gives the p-value instead: exact at any n,
it cannot go below 2 / 2**n. The smallest difference these seeds detect with
80% power is a planning number (how many seeds a question needs), never a
bound on the true difference: only an interval bounds it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy  # submodules load on first use: publish needs only scipy.special, 0.5 s less per process

SIGNIFICANCE = 0.05
EXACT_PAIRS = 16  # the sign-flip test enumerates 2**16 assignments at most
SAMPLED_FLIPS = 100_000
POWER = 0.8


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample standard deviation and the 95% t interval of the mean
    (None where one value cannot give one)."""
    data = np.asarray(values, dtype=float)
    n = len(data)
    mean = float(data.mean()) if n else math.nan  # no seed to pair: numpy would warn
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


def _mean(values: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.asarray(np.mean(values, axis=axis))


def sign_flip_p(differences: Sequence[float] | np.ndarray, alternative: str = "two-sided") -> float | None:
    """The exact sign-flip (paired permutation) test of the mean of the
    differences against 0: every one of the 2**n assignments of signs, which
    under the null hypothesis of a distribution symmetric about 0 are equally
    likely. No normality needed; with n pairs it cannot go below 2 / 2**n
    (two-sided), 1 / 2**n one-sided. None with fewer than two pairs."""
    data = np.asarray(differences, dtype=float)
    if len(data) < 2 or not np.all(np.isfinite(data)):
        return None if len(data) < 2 else math.nan
    result = scipy.stats.permutation_test(
        (data,),
        _mean,
        permutation_type="samples",
        alternative=alternative,
        # Every sign assignment (exact) up to EXACT_PAIRS pairs; past that a fixed
        # sample of them, so the same differences always give the same p-value.
        n_resamples=2 ** len(data) if len(data) <= EXACT_PAIRS else SAMPLED_FLIPS,
        vectorized=True,
        rng=np.random.default_rng(0),
    )
    return float(min(1.0, result.pvalue))


def no_spread(differences: np.ndarray) -> bool:
    """The differences are one value (to float rounding: 0.5523 − 0.5522 and
    0.6001 − 0.6 differ in the 17th digit), so a t statistic has nothing to go by."""
    largest = float(np.max(np.abs(differences))) if len(differences) else 0.0
    return bool(np.ptp(differences) <= 1e-9 * largest)


def above_p(differences: Sequence[float] | np.ndarray, bound: float) -> float | None:
    """One-sided p-value of H0 'the mean difference is at most `bound`'
    (small: it lies above it): paired t, or the exact one-sided sign-flip test
    where the differences have no spread. None with fewer than two pairs."""
    data = np.asarray(differences, dtype=float)
    if len(data) < 2:
        return None
    if not np.all(np.isfinite(data)):
        return math.nan
    if no_spread(data):
        return sign_flip_p(data - bound, "greater")
    std = float(data.std(ddof=1))
    error = std / math.sqrt(len(data))
    return float(scipy.special.stdtr(len(data) - 1, -(float(data.mean()) - bound) / error))


def tost_p(differences: Sequence[float] | np.ndarray, margin: float) -> float | None:
    """Two one-sided tests (TOST) that the mean difference lies inside
    (-margin, +margin): the larger of the two one-sided p-values (the 90%
    interval lies inside the margin exactly when p < 0.05). None with fewer
    than two pairs."""
    data = np.asarray(differences, dtype=float)
    above = above_p(data, -margin)
    below = above_p(-data, -margin)  # mean below +margin: -mean above -margin
    if above is None or below is None:
        return None
    return max(above, below)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of a family's p-values (None and nan stay
    as they are and do not count towards the family): the smallest times m,
    the next times m - 1, ..., each at least the one before, at most 1."""
    valid = [(p, index) for index, p in enumerate(p_values) if p is not None and math.isfinite(p)]
    adjusted: list[float | None] = list(p_values)
    running = 0.0
    for rank, (p, index) in enumerate(sorted(valid)):
        running = max(running, min(1.0, (len(valid) - rank) * p))
        adjusted[index] = running
    return adjusted


def paired_comparison(first: Sequence[float], second: Sequence[float]) -> dict[str, Any]:
    """first - second, seed by seed: mean difference, its 95% and 90% t
    intervals, the two-sided p-value (paired t; the exact sign-flip test's
    where the differences have no spread), the Wilcoxon and sign-flip tests'
    p-values, the differences themselves, and the smallest difference detectable
    with 80% power (a planning number; None with fewer than two seeds)."""
    differences = np.asarray(first, dtype=float) - np.asarray(second, dtype=float)
    summary = summarize(differences)
    flips = sign_flip_p(differences)
    if len(differences) < 2:
        p_value = None
    elif not math.isfinite(summary["std"]) or no_spread(differences):
        p_value = flips  # no spread: the t statistic is undefined, the sign-flip test is exact
    else:
        p_value = float(scipy.stats.ttest_rel(first, second).pvalue)
    ci90 = (None, None)
    if summary["n"] >= 2:
        half = float(scipy.special.stdtrit(summary["n"] - 1, 0.95)) * summary["std"] / math.sqrt(summary["n"])
        ci90 = (summary["mean"] - half, summary["mean"] + half)
    return {
        "mean_difference": summary["mean"],
        "ci95_low": summary["ci95_low"],
        "ci95_high": summary["ci95_high"],
        "ci90_low": ci90[0],
        "ci90_high": ci90[1],
        "p_value": p_value,
        "wilcoxon_p": wilcoxon_p(differences),
        "sign_flip_p": flips,
        "detectable": detectable_difference(summary["std"], summary["n"]),
        "n": summary["n"],
        "differences": differences.tolist(),
    }


def wilcoxon_floor(n: int) -> float:
    """The smallest two-sided p-value an exact Wilcoxon (or sign-flip) test of n pairs can give."""
    return float(2.0 / 2**n)
