"""What the report finds in the results before a word of it is written: the
ranking, the pairwise comparisons, the claims (with and without runs at
chance), the numerics and the calibration; and metrics/summary.json from them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from lossbench import temperature
from lossbench.claims import Claim, accuracy_margin, ece_margin, measure_claims
from lossbench.params import Params
from lossbench.report_tables import significance_table
from lossbench.results import LossResult, without_chance_runs
from lossbench.run_numerics import RunNumerics, numerics_of


@dataclass(frozen=True)
class Findings:
    """What the report finds in the results, before a word of it is written."""

    ranking: list[str]  # loss names, best mean final test accuracy first
    at_chance: dict[str, dict[int, str]]  # loss -> its seeds at chance, and how
    significance: pd.DataFrame
    claims: list[Claim]
    # The same where some run stayed at chance, without those runs: each comparison
    # on the seeds where neither of its runs did (results.without_chance_runs).
    significance_without: pd.DataFrame | None
    claims_without: list[Claim] | None
    numerics: RunNumerics  # what the runs were made under
    scaled: list[temperature.Scaled]  # each loss's calibration before and after temperature scaling
    scaling: temperature.ScalingAnswer  # each loss against CE on ECE, before and after scaling


def find(
    params: Params, results: list[LossResult], class_counts: dict[str, Any], scaled: list[temperature.Scaled]
) -> Findings:
    """Rank the losses, compare them pairwise and measure the claims, with and without runs at chance."""
    ranking = [r.name for r in sorted(results, key=lambda r: r.mean("final_test_acc"), reverse=True)]
    at_chance = {r.name: r.at_chance() for r in results if r.at_chance()}
    cleaned = without_chance_runs(results)
    left = [r for r in cleaned if r.seeds]  # a loss at chance on every seed has nothing left to claim with
    margin = accuracy_margin(params.analysis)
    return Findings(
        ranking=ranking,
        at_chance=at_chance,
        significance=significance_table(results, margin),
        claims=measure_claims(results, class_counts, params.analysis),
        significance_without=significance_table(cleaned, margin) if at_chance else None,
        claims_without=measure_claims(left, class_counts, params.analysis) if at_chance else None,
        numerics=RunNumerics.of({r.name: numerics_of(r.run["settings"]) for r in results}),
        scaled=scaled,
        scaling=temperature.answer(scaled, ece_margin(params.analysis)),
    )


def summary_of(params: Params, findings: Findings) -> dict[str, Any]:
    """metrics/details/summary.json: the ranking, the runs at chance and the claims' verdicts."""
    without = findings.claims_without
    return {
        "best_loss": findings.ranking[0],
        "rank": {name: findings.ranking.index(name) + 1 for name in params.losses},
        "runs_at_chance": {
            name: {str(seed): why for seed, why in runs.items()} for name, runs in findings.at_chance.items()
        },
        "margins": params.analysis.model_dump(),
        "claims": {str(claim.number): claim.verdict.value for claim in findings.claims},
        "claims_without_runs_at_chance": None
        if without is None
        else {str(c.number): c.verdict.value for c in without},
        "calibration": temperature.summary_of(findings.scaling, findings.scaled),
    }
