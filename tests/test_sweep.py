from lossbench.sweep import sweep_points


def _record(name: str, gamma: float, accuracy: float, **data: object) -> dict[str, object]:
    params = {
        "data": {"seed": 0, **data},
        "losses": {"f": {"kind": "focal", "gamma": gamma}, "ce": {"kind": "ce"}},
    }
    per_seed = {
        "seed1": {"final_test_acc": accuracy, "ece": 0.1},
        "seed2": {"final_test_acc": accuracy + 0.01, "ece": 0.2},
    }
    return {
        "rev": name * 7,
        "name": name,
        "params": {"params.yaml": {"data": params}},
        "metrics": {"metrics/f.json": {"data": {"per_seed": per_seed}}},
    }


def test_only_runs_that_differ_in_this_gamma_form_the_sweep() -> None:
    records = [
        _record("a", 0.0, 0.70),
        _record("b", 1.0, 0.72),
        _record("c", 2.0, 0.71),
        _record("c", 2.0, 0.71),  # the workspace repeating its commit
        _record("d", 2.0, 0.50, imbalance_ratio=10),  # another experiment, not part of the sweep
    ]
    points = sweep_points(records, "f")
    assert sorted(points["gamma"].unique()) == [0.0, 1.0, 2.0]
    assert len(points) == 6 and "d" not in set(points["experiment"])
    assert points[points["gamma"] == 1.0]["final_test_acc"].tolist() == [0.72, 0.73]
