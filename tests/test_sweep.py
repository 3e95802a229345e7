import pandas as pd
import pytest

from lossbench.claims import gamma_claim
from lossbench.experiments import experiment_records
from lossbench.sweep import _without_chance, scaling_section, sweep_records
from lossbench.verdicts import ClaimVerdict, Margin

pytestmark = pytest.mark.fast  # in-process: no trainer, no DVC, no lossbench subprocess


def _record(name: str, gamma: float, **data: object) -> dict[str, object]:
    params = {
        "data": {"seed": 0, **data},
        "losses": {"f": {"kind": "focal", "gamma": gamma}, "ce": {"kind": "ce"}},
        "machine": {"workers": len(name)},  # how a run was run never splits a sweep
    }
    return {
        "rev": name * 7,
        "name": name,
        "data": {
            "params": {"params.yaml": {"data": params}},
            "metrics": {"metrics/f.json": {"data": {"x": gamma}}},
        },
    }


def test_only_runs_that_differ_in_this_gamma_form_the_sweep() -> None:
    shown = [
        {**_record("a", 0.0), "rev": "workspace"},  # the workspace: its commit's run, until it changes
        {**_record("a", 0.0), "experiments": [{"revs": [_record("b", 1.0), _record("cc", 2.0)]}]},
        _record("d", 2.0, imbalance_ratio=10),  # another experiment, not part of the sweep
    ]
    records = experiment_records(shown)
    assert [r["name"] for r in records] == ["a", "b", "cc", "d"]  # a's run once, by its commit's name
    assert records[0]["rev"] == "aaaaaaa"
    swept = sweep_records(records, "f")
    assert [r["name"] for r in swept] == ["a", "b", "cc"]


def test_only_finished_experiments_count() -> None:
    # Queued, running and failed experiments show their params over the baseline's files.
    def experiment(name: str, state: str | None, error: object = None) -> dict[str, object]:
        return {
            "executor": None if state is None else {"state": state},
            "revs": [{**_record(name, len(name)), "error": error}],
        }

    shown = [
        {
            **_record("a", 0.0),
            "experiments": [
                experiment("b", "success"),
                experiment("cc", None),  # pulled from another machine
                experiment("ddd", "queued"),
                experiment("eeee", "running"),
                experiment("fffff", "failed"),
                experiment("gggggg", "success", error={"msg": "broken"}),
            ],
        }
    ]
    assert [r["name"] for r in experiment_records(shown)] == ["a", "b", "cc"]


def test_claim_4_pairs_gammas_by_seed_whatever_the_order() -> None:
    # Seed 10 first in one, last in the other: differences 5, 4 and 6 points only when paired by seed.
    accuracy = {1.0: {10: 0.90, 1: 0.50, 2: 0.60}, 0.0: {1: 0.45, 2: 0.56, 10: 0.84, 3: 0.7}}
    verdict, evidence = gamma_claim(accuracy, Margin(0.01))
    assert verdict is ClaimVerdict.SUPPORTED
    assert "γ=1 − γ=0: +5.0 points [+2.5, +7.5]" in evidence
    assert "seeds 3 left out" in evidence and "no γ above 2 was trained" in evidence
    # nothing outside [0.5, 2]
    assert gamma_claim({1.0: {1: 0.5}, 2.0: {1: 0.4}}, Margin(0.01))[0] is ClaimVerdict.NOT_TESTABLE


def test_claim_4_is_also_judged_without_the_runs_at_chance() -> None:
    """γ=0's seed 1 never learned: with it, γ=0.5 looks far ahead of γ=0; without it
    γ=0 is measured on its other seeds and the text names the seed it lost. The ECE
    comparisons before and after scaling leave that seed out."""
    accuracy = {0.0: [0.10, 0.56, 0.58, 0.57], 0.5: [0.55, 0.553, 0.578, 0.566]}
    ece = {0.0: [0.0, 0.020, 0.022, 0.021], 0.5: [0.040, 0.039, 0.043, 0.042]}
    scaled = {0.0: [0.0, 0.020, 0.021, 0.023], 0.5: [0.031, 0.030, 0.032, 0.033]}
    points = pd.DataFrame(
        {
            "gamma": gamma,
            "seed": seed,
            "final_test_acc": accuracy[gamma][seed - 1],
            "ece": ece[gamma][seed - 1],
            "ece_scaled": scaled[gamma][seed - 1],
            "at_chance": gamma == 0.0 and seed == 1,
        }
        for gamma in accuracy
        for seed in range(1, 5)
    )
    text = _without_chance(points, Margin(0.01))
    assert text.startswith(" *Without the runs at chance: ")
    assert "γ=0: 57.0%" in text and "γ=0.5 − γ=0, without seed 1: -0.4 points" in text
    assert _without_chance(points[~points["at_chance"]], Margin(0.01)) == ""
    section = scaling_section(points, Margin(0.01))
    assert "before scaling +2.0 points" in section and "after scaling +1.0 points" in section
    assert "**γ=0.5 − γ=0 (without seed 1: at chance)**" in section
    every_run_dead = points.assign(at_chance=True)
    assert "not testable" in _without_chance(every_run_dead, Margin(0.01))
    assert "no calibration to compare" in scaling_section(every_run_dead, Margin(0.01))
