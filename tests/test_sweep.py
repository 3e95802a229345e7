from lossbench.experiments import experiment_records
from lossbench.sweep import sweep_records


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
