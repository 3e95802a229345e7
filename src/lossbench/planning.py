"""`lossbench plan`: how many seeds a question needs, from the runs already made.

The spread that decides it is the standard deviation of the paired
differences (the same seed, two losses). It is pooled over every pair of the
losses asked about, with a 95% chi-square interval; because all pairs share
their seeds they are not independent, so the interval is narrower than it
should be, and its ends are what to plan with. For each difference (or
equivalence margin) the plan gives the seeds the paired t-test (or TOST)
needs for 80% power at α = 0.05, at the pooled sd and at both ends.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np
import scipy
from rich.console import Console
from rich.table import Table

from lossbench.errors import ParamsError
from lossbench.params import Params
from lossbench.results import LossResult, load_results, paired, without_chance_runs
from lossbench.stats import POWER, SIGNIFICANCE

MOST_SEEDS = 100_000  # past this a plan says "more than"


@dataclass(frozen=True)
class Spread:
    """The pooled sd of paired differences, its degrees of freedom and 95% interval."""

    sd: float
    df: int
    low: float
    high: float


def pooled_spread(differences: Sequence[Sequence[float]]) -> Spread:
    """Pool the sample variances of several sets of paired differences."""
    df = sum(len(d) - 1 for d in differences)
    if df < 1:
        raise ParamsError("plan needs at least two seeds of two losses")
    variance = sum((len(d) - 1) * float(np.var(d, ddof=1)) for d in differences) / df
    sd = math.sqrt(variance)
    low = sd * math.sqrt(df / float(scipy.stats.chi2.ppf(0.975, df)))
    high = sd * math.sqrt(df / float(scipy.stats.chi2.ppf(0.025, df)))
    return Spread(sd, df, low, high)


def _t_power(n: int, effect: float, alpha: float) -> float:
    """Power of the two-sided paired t-test on n pairs for a true difference of `effect` sds."""
    df = n - 1
    critical = float(scipy.stats.t.ppf(1 - alpha / 2, df))
    shift = effect * math.sqrt(n)
    lower = float(np.nan_to_num(scipy.stats.nct.cdf(-critical, df, shift)))
    return float(scipy.stats.nct.sf(critical, df, shift)) + lower


def _tost_power(n: int, margin: float, alpha: float) -> float:
    """A lower bound on TOST's power on n pairs when the true difference is 0
    (margin in sds): 1 − the two one-sided tests' failure probabilities."""
    df = n - 1
    critical = float(scipy.stats.t.ppf(1 - alpha, df))
    # scipy's noncentral t answers nan far in its lower tail (n = 53,579 at margin 0.167 sd), where
    # the probability is 0; a nan there made the search for n jump past the answer
    failure = float(np.nan_to_num(scipy.stats.nct.cdf(critical, df, margin * math.sqrt(n)), nan=0.0))
    return 1 - 2 * failure


def _smallest_n(power_at: Callable[[int], float], target: float) -> int | None:
    """The smallest n ≥ 2 whose power reaches target (power grows with n), None past MOST_SEEDS."""
    if power_at(MOST_SEEDS) < target:
        return None
    low, high = 2, MOST_SEEDS
    while low < high:
        middle = (low + high) // 2
        if power_at(middle) >= target:
            high = middle
        else:
            low = middle + 1
    return low


def seeds_for_difference(
    sd: float, difference: float, alpha: float = SIGNIFICANCE, power: float = POWER
) -> int | None:
    """Seeds the two-sided paired t-test needs to find `difference` with `power`."""
    return _smallest_n(lambda n: _t_power(n, difference / sd, alpha), power)


def seeds_for_equivalence(
    sd: float, margin: float, alpha: float = SIGNIFICANCE, power: float = POWER
) -> int | None:
    """Seeds TOST needs to show equivalence within ±margin with `power` when the losses are equal."""
    return _smallest_n(lambda n: _tost_power(n, margin / sd, alpha), power)


def spread_of(results: list[LossResult], key: str = "final_test_acc") -> Spread:
    """Pooled over every pair, each on the seeds where neither run stayed at chance: a dead
    run's 40-point gap is not the seed-to-seed noise a plan is for."""
    pairs = []
    for a, b in combinations(without_chance_runs(results), 2):
        first, second = paired(a, b)
        if len(first.seeds) >= 2:
            pairs.append(list(np.subtract(first.values(key), second.values(key))))
    if not pairs:
        raise ParamsError("plan needs two seeds of two losses that left chance to measure the spread")
    return pooled_spread(pairs)


def _left_out(results: list[LossResult]) -> str:
    runs = [f"{r.name} seed {seed}" for r in results for seed in r.at_chance()]
    return f", each pair without its runs at chance ({', '.join(runs)})" if runs else ""


def _count(found: int | None) -> str:
    return f"> {MOST_SEEDS:,}" if found is None else str(found)


def plan(
    params: Params, root: Path, console: Console, differences: Sequence[float], losses: Sequence[str] = ()
) -> Table:
    """Print and return the plan for these differences (fractions: 0.01 = 1 point) on final test accuracy."""
    unknown = [name for name in losses if name not in params.losses]
    if unknown:
        raise ParamsError(f"--loss {unknown[0]}: no such loss in params.yaml ({', '.join(params.losses)})")
    results = [r for r in load_results(params, root) if not losses or r.name in losses]
    if len(results) < 2:
        raise ParamsError("plan needs two losses to pair (--loss names them)")
    spread = spread_of(results)
    console.print(
        f"sd of paired differences in final test accuracy, pooled over {len(results) * (len(results) - 1) // 2} "
        f"pairs of {', '.join(r.name for r in results)} on seeds {', '.join(map(str, params.seeds))}"
        f"{_left_out(results)}: "
        f"{100 * spread.sd:.2f} points, 95% CI [{100 * spread.low:.2f}, {100 * spread.high:.2f}] "
        f"(chi-square, {spread.df} df; the pairs share seeds, so the interval is if anything too narrow)",
        markup=False,
        highlight=False,
    )
    table = Table(
        title=f"seeds needed for {POWER:.0%} power at α = {SIGNIFICANCE} (at the sd's CI low – sd – CI high)"
    )
    table.add_column("difference or margin (points)", justify="right")
    table.add_column("to find a difference (paired t)", justify="right")
    table.add_column("to show equivalence within ±it (TOST)", justify="right")
    for difference in differences:
        cells = []
        for needed in (seeds_for_difference, seeds_for_equivalence):
            counts = [_count(needed(sd, difference)) for sd in (spread.low, spread.sd, spread.high)]
            cells.append(" – ".join(counts))
        table.add_row(f"{100 * difference:g}", *cells)
    console.print(table)
    return table
