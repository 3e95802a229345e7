"""The report's analysis without runs at chance, on constructed results: each
comparison leaves out only the seeds on which one of its own two runs stayed
at chance (pairwise deletion), a loss's mean is over its own seeds that left
chance, and a test over several losses uses the seeds none of them lost."""

from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import PROJECT, TINY_PARAMS, published_details

from lossbench import temperature
from lossbench.findings import Findings, find, summary_of
from lossbench.params import Params, load_params
from lossbench.report_text import report_text
from lossbench.results import LossResult, load_results, read_class_counts
from lossbench.stats import friedman_p, paired_comparison
from lossbench.verdicts import Margin

pytestmark = pytest.mark.fast

STUDY = PROJECT / "studies" / "cifar10-jpeg"

SEEDS = [1, 2, 3, 4, 5, 6]
# Focal γ=2 collapsed to chance on every seed but 5 and 6; CE and Focal γ=0.5 never did.
STUCK = {1: "collapsed to chance", 2: "collapsed to chance", 3: "never left chance", 4: "collapsed to chance"}
PARAMS = Params.model_validate(
    TINY_PARAMS
    | {
        "seeds": SEEDS,
        "losses": {
            "ce": {"kind": "ce"},
            "focal_low": {"kind": "focal", "gamma": 0.5},
            "focal_high": {"kind": "focal", "gamma": 2.0},
        },
    }
)
CLASS_COUNTS = {"dataset": "synthetic", "train": {f"class{i}": 30 for i in range(10)}}
RNG = np.random.default_rng(7)
CE = {seed: 0.50 + 0.03 * float(RNG.normal()) for seed in SEEDS}
FOCAL_LOW = {seed: CE[seed] + 0.02 + 0.01 * float(RNG.normal()) for seed in SEEDS}
FOCAL_HIGH = {seed: 0.10 if seed in STUCK else CE[seed] - 0.01 for seed in SEEDS}


def _result(name: str, accuracy: dict[int, float], stuck: dict[int, str] | None = None) -> LossResult:
    stuck = stuck or {}
    per_seed: dict[int, dict[str, object]] = {
        seed: {
            "final_test_acc": acc,
            "final_train_acc": acc + 0.05,
            "best_test_acc": acc + 0.01,
            "convergence_epoch": 2 + seed % 2,
            "at_chance": stuck.get(seed),
        }
        for seed, acc in accuracy.items()
    }
    details = published_details(name, PARAMS.losses[name].model_dump(), per_seed, TINY_PARAMS)
    history = pd.DataFrame(
        [
            {"seed": seed, "epoch": epoch, "lr": 0.1, "train_loss": 2.0 / epoch, "test_loss": 1.8 / epoch}
            | {"train_acc": acc * epoch / 3, "test_acc": acc * epoch / 3}
            for seed, acc in accuracy.items()
            for epoch in (1, 2, 3)
        ]
    )
    calibration = pd.DataFrame({"seed": list(accuracy)})
    return LossResult.from_details(details, f"{name}.json", SEEDS, (history, calibration))


def _results(stuck: dict[int, str] = STUCK) -> list[LossResult]:
    return [
        _result("ce", CE),
        _result("focal_low", FOCAL_LOW),
        _result("focal_high", FOCAL_HIGH, stuck),
    ]


def _find(results: list[LossResult]) -> Findings:
    return find(PARAMS, results, CLASS_COUNTS, [])


def _row(table: pd.DataFrame, first: str, second: str) -> dict[str, Any]:
    row: dict[str, Any] = table[(table["first"] == first) & (table["second"] == second)].iloc[0].to_dict()
    return row


def _difference_text(first: dict[int, float], second: dict[int, float], seeds: list[int]) -> str:
    """'+2.1 points [+1.0, +3.2], p = ' of first − second on these seeds, as a claim writes it."""
    found = paired_comparison([first[s] for s in seeds], [second[s] for s in seeds])
    margin = Margin(0.01)
    return (
        f"{margin.text(found['mean_difference'])} points [{margin.text(found['ci95_low'])}, "
        f"{margin.text(found['ci95_high'])}], p = {found['p_value']:.3g}"
    )


def test_a_pair_whose_runs_never_stayed_at_chance_keeps_all_its_seeds() -> None:
    findings = _find(_results())
    assert findings.significance_without is not None
    every, kept = findings.significance, findings.significance_without
    for column in ("mean difference (points)", "95% CI low", "95% CI high", "p (paired t)", "p (Wilcoxon)"):
        assert _row(kept, "CE", "Focal (γ=0.5)")[column] == _row(every, "CE", "Focal (γ=0.5)")[column], column
    # A pair with the loss at chance loses exactly that loss's seeds at chance, and says so.
    assert _row(kept, "CE", "Focal (γ=0.5)")["n"] == 6
    assert _row(kept, "CE", "Focal (γ=0.5)")["left out (at chance)"] == "–"
    assert _row(kept, "CE", "Focal (γ=2)")["n"] == 2
    assert _row(kept, "CE", "Focal (γ=2)")["left out (at chance)"] == "1, 2, 3, 4"
    both = paired_comparison([CE[5], CE[6]], [FOCAL_HIGH[5], FOCAL_HIGH[6]])
    assert _row(kept, "CE", "Focal (γ=2)")["mean difference (points)"] == round(
        100 * both["mean_difference"], 2
    )
    # The table with every run is as it was: no column added.
    assert "n" not in every.columns and "left out (at chance)" not in every.columns


def test_each_comparison_of_a_claim_leaves_out_only_its_own_runs_at_chance() -> None:
    findings = _find(_results())
    assert findings.claims_without is not None
    claims = {claim.number: claim for claim in findings.claims_without}
    # Claim 1: Focal γ=0.5 against CE on all six seeds, against Focal γ=2 on seeds 5 and 6.
    assert f"test vs CE: {_difference_text(FOCAL_LOW, CE, SEEDS)}" in claims[1].evidence
    assert (
        f"test vs Focal (γ=2), without seeds 1, 2, 3, 4: {_difference_text(FOCAL_LOW, FOCAL_HIGH, [5, 6])}"
        in claims[1].evidence
    )
    # Claim 4: each γ's mean over its own seeds that left chance; γ=0.5 − γ=0 paired on
    # all six; Friedman's test over the three γ on the seeds none of them lost.
    evidence = claims[4].evidence
    assert f"γ=0: {100 * np.mean(list(CE.values())):.1f}%" in evidence
    assert f"γ=2: {100 * np.mean([FOCAL_HIGH[5], FOCAL_HIGH[6]]):.1f}%" in evidence
    assert f"γ=0.5 − γ=0: {_difference_text(FOCAL_LOW, CE, SEEDS)}" in evidence
    ranks = friedman_p([[values[5], values[6]] for values in (CE, FOCAL_LOW, FOCAL_HIGH)])
    assert ranks is not None and f"p={ranks:.3g}" in evidence
    summary = summary_of(PARAMS, findings)
    assert set(summary["claims_without_runs_at_chance"]) == {"1", "2", "3", "4", "5"}


def test_the_report_names_the_runs_at_chance_once_and_no_seed_left_out_of_every_pair() -> None:
    results = _results()
    text = report_text(PARAMS, results, CLASS_COUNTS, _find(results))
    assert "Without seeds" not in text
    assert text.count("focal_high seeds 1, 2, 3, 4") == 1, text
    assert "each comparison leaves out the seeds on which one of its two runs stayed at chance" in text


def test_a_loss_at_chance_on_every_seed_leaves_the_other_pairs_judged() -> None:
    results = _results(dict.fromkeys(SEEDS, "never left chance"))
    findings = _find(results)
    assert findings.significance_without is not None and findings.claims_without is not None
    assert _row(findings.significance_without, "CE", "Focal (γ=2)")["verdict"] == "not testable"
    assert _row(findings.significance_without, "CE", "Focal (γ=0.5)")["n"] == 6
    claims = {claim.number: claim for claim in findings.claims_without}
    assert "test vs CE: " in claims[1].evidence and "Focal (γ=2)" not in claims[1].evidence
    assert claims[1].verdict.value == "supported"  # Focal γ=0.5 above CE on every seed of this construction
    text = report_text(PARAMS, results, CLASS_COUNTS, findings)
    assert "Left out of them: focal_high, at chance on every seed." in text
    assert "+nan" not in text and "nan%" not in text  # the table marks its untestable cells nan


def test_without_runs_at_chance_is_not_given_when_no_run_stayed_there() -> None:
    findings = _find(_results({}))
    assert findings.significance_without is None and findings.claims_without is None
    assert summary_of(PARAMS, findings)["claims_without_runs_at_chance"] is None


def test_the_jpeg_studys_pairs_lose_only_their_own_seeds_at_chance() -> None:
    """The committed ten-seed JPEG study: GCE at chance on six seeds no longer takes
    those seeds from the pairs it is not in; the table with every run is the one the
    study published."""
    params = load_params(STUDY / "params.yaml")
    results = load_results(params, STUDY)
    findings = find(params, results, read_class_counts(STUDY / "data" / "class_counts.json"), [])
    assert findings.at_chance == {
        "ce": {1: "never left chance"},
        "focal_high": {5: "never left chance"},
        "gce": dict.fromkeys([1, 2, 3, 4, 5, 7], "collapsed to chance"),
    }
    published = pd.read_csv(STUDY / "plots" / "significance.csv")
    assert findings.significance.round(4).equals(published.round(4))
    kept = findings.significance_without
    assert kept is not None
    for first, second in (("MAE (L1)", "Focal (γ=0.5)"), ("MAE (L1)", "SCE (α=0.1, β=1)")):
        assert (_row(kept, first, second)["n"], _row(kept, first, second)["left out (at chance)"]) == (
            10,
            "–",
        )
        for column in ("mean difference (points)", "p (paired t)", "p (sign-flip)"):
            assert _row(kept, first, second)[column] == _row(findings.significance, first, second)[column]
    assert (
        _row(kept, "CE", "Focal (γ=0.5)")["n"],
        _row(kept, "CE", "Focal (γ=0.5)")["left out (at chance)"],
    ) == (
        9,
        "1",
    )
    assert _row(kept, "CE", "Focal (γ=2)")["left out (at chance)"] == "1, 5"
    assert _row(kept, "CE", "GCE (q=0.7)")["left out (at chance)"] == "1, 2, 3, 4, 5, 7"


def test_two_losses_at_chance_on_seeds_that_leave_them_none_in_common_are_not_compared() -> None:
    first_half = {seed: "never left chance" for seed in (1, 2, 3)}
    results = [
        _result("ce", {seed: 0.10 if seed in first_half else CE[seed] for seed in SEEDS}, first_half),
        _result("focal_low", FOCAL_LOW),
        _result(
            "focal_high",
            {seed: CE[seed] - 0.01 if seed < 4 else 0.10 for seed in SEEDS},
            {seed: "collapsed to chance" for seed in (4, 5, 6)},
        ),
    ]
    findings = _find(results)
    assert findings.claims_without is not None and findings.significance_without is not None
    assert _row(findings.significance_without, "CE", "Focal (γ=2)")["n"] == 0
    same_speed = findings.claims_without[1].evidence
    assert "CE − Focal (γ=2), without seeds 1, 2, 3, 4, 5, 6: no seed to pair: not testable" in same_speed
    assert "nan" not in same_speed


def test_calibration_against_ce_leaves_out_the_runs_at_chance_of_its_pair() -> None:
    """A network that never learned fits T at the search's bound and has no calibration to
    compare: Focal γ=2 − CE on ECE pairs the JPEG study's seeds but CE's 1 and Focal γ=2's 5;
    SCE − CE loses only seed 1."""
    params = load_params(STUDY / "params.yaml")
    results = load_results(params, STUDY)
    found = temperature.answer(temperature.load_scaled(results, STUDY), Margin(0.01))
    cases = {case.what: case for case in found.judged.cases}
    pair = cases["Focal (γ=2) − CE (without seeds 1, 5: at chance)"]
    assert len(pair.after[0]) == len(pair.after[1]) == 8
    assert len(cases["SCE (α=0.1, β=1) − CE (without seed 1: at chance)"].after[0]) == 9
    assert len(cases["MAE (L1) − CE (without seed 1: at chance)"].before[1]) == 9
