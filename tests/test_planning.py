"""`lossbench plan` against statsmodels' power solver, on the committed ten-seed JPEG study."""

import json
import math
from itertools import combinations

import numpy as np
import pytest
import yaml
from conftest import PROJECT, lossbench
from scipy import stats
from statsmodels.stats.power import TTestPower

from lossbench.planning import pooled_spread, seeds_for_difference, seeds_for_equivalence

STUDY = PROJECT / "studies" / "cifar10-jpeg"


@pytest.mark.fast
@pytest.mark.parametrize(("sd", "difference"), [(0.0359, 0.01), (0.0271, 0.02), (1.0, 1.0)])
def test_seeds_for_a_difference_match_statsmodels(sd: float, difference: float) -> None:
    expected = TTestPower().solve_power(effect_size=difference / sd, alpha=0.05, power=0.8)
    assert seeds_for_difference(sd, difference) == math.ceil(expected)


@pytest.mark.fast
def test_equivalence_needs_more_seeds_than_the_same_difference() -> None:
    found = seeds_for_equivalence(0.03, 0.01)
    assert found is not None and found > seeds_for_difference(0.03, 0.01)  # type: ignore[operator]


@pytest.mark.fast
@pytest.mark.parametrize(("sd", "margin"), [(0.1198, 0.02), (0.1423, 0.02), (0.0359, 0.01)])
def test_seeds_for_equivalence_are_the_smallest_with_the_power(sd: float, margin: float) -> None:
    """The answer is the first n whose TOST power reaches 80%, found by a plain scan (scipy's
    noncentral t once gave nan at a large n, and the search answered 53,580 for the first case)."""
    found = seeds_for_equivalence(sd, margin)
    assert found is not None
    power = lambda n: 1 - 2 * stats.nct.cdf(stats.t.ppf(0.95, n - 1), n - 1, margin / sd * math.sqrt(n))  # noqa: E731
    assert power(found) >= 0.8 > power(found - 1)


@pytest.mark.fast
def test_pooled_spread_and_its_chi_square_interval() -> None:
    differences = [[0.01, 0.03, -0.02, 0.0], [0.02, -0.01, 0.0]]
    spread = pooled_spread(differences)
    variance = (3 * np.var(differences[0], ddof=1) + 2 * np.var(differences[1], ddof=1)) / 5
    assert spread.sd == pytest.approx(math.sqrt(variance)) and spread.df == 5
    assert spread.low == pytest.approx(spread.sd * math.sqrt(5 / stats.chi2.ppf(0.975, 5)))
    assert spread.high == pytest.approx(spread.sd * math.sqrt(5 / stats.chi2.ppf(0.025, 5)))


def test_plan_on_the_committed_study() -> None:
    """Each pair's spread on the seeds where neither run stayed at chance (the study has such runs)."""
    result = lossbench(STUDY, "plan", "--difference", "1", env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    seeds = {
        name: json.loads((STUDY / f"metrics/details/{name}.json").read_text())["per_seed"]
        for name in yaml.safe_load((STUDY / "params.yaml").read_text())["losses"]
    }
    assert any(seed["at_chance"] for runs in seeds.values() for seed in runs.values())
    differences = []
    for a, b in combinations(seeds, 2):
        kept = [s for s in seeds[a] if not seeds[a][s]["at_chance"] and not seeds[b][s]["at_chance"]]
        differences.append([seeds[a][s]["final_test_acc"] - seeds[b][s]["final_test_acc"] for s in kept])
    spread = pooled_spread([d for d in differences if len(d) >= 2])
    counts = [
        math.ceil(TTestPower().solve_power(effect_size=0.01 / sd, alpha=0.05, power=0.8))
        for sd in (spread.low, spread.sd, spread.high)
    ]
    assert f"{100 * spread.sd:.2f} points" in result.stdout
    assert " – ".join(map(str, counts)) in result.stdout
