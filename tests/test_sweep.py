import pytest

from lossbench.claims import gamma_claim
from lossbench.experiments import experiment_records
from lossbench.sweep import sweep_records
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
