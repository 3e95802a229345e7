"""Seed statistics: summaries with 95% intervals, and paired comparisons.

Losses are compared on the same seeds (same initial weights, batch order and
augmentation), so the differences are paired: the t interval and the paired
t-test use the per-seed differences.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

SIGNIFICANCE = 0.05


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample standard deviation and the 95% t interval of the mean
    (None where one value cannot give one)."""
    data = np.asarray(values, dtype=float)
    n = len(data)
    mean = float(data.mean())
    std = float(data.std(ddof=1)) if n > 1 else 0.0
    if n < 2:
        return {"mean": mean, "std": std, "ci95_low": None, "ci95_high": None, "n": n}
    half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "ci95_low": mean - half, "ci95_high": mean + half, "n": n}


def paired_comparison(first: Sequence[float], second: Sequence[float]) -> dict[str, Any]:
    """first - second, seed by seed: mean difference, its 95% interval and the
    paired t-test's two-sided p-value (None with fewer than two seeds)."""
    differences = np.asarray(first, dtype=float) - np.asarray(second, dtype=float)
    summary = summarize(differences)
    if len(differences) < 2:
        p_value = None
    elif summary["std"] == 0:
        p_value = 1.0 if summary["mean"] == 0 else 0.0  # identical differences: no spread to test
    else:
        p_value = float(stats.ttest_rel(first, second).pvalue)
    return {
        "mean_difference": summary["mean"],
        "ci95_low": summary["ci95_low"],
        "ci95_high": summary["ci95_high"],
        "p_value": p_value,
        "n": summary["n"],
    }


def direction(comparison: dict[str, Any]) -> str:
    """'higher' or 'lower' when first differs from second at the 5% level, else 'no significant difference'."""
    p_value = comparison["p_value"]
    if p_value is None or p_value >= SIGNIFICANCE:
        return "no significant difference"
    return "higher" if comparison["mean_difference"] > 0 else "lower"
