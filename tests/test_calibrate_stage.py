"""Stage calibrate in a real pipeline: temperature scaling over the finished
networks, with no retraining, and nothing of training's made stale by it."""

import json
import statistics
from pathlib import Path

import yaml
from conftest import lossbench, run_in

CALIBRATION_CODE = ("calibrate.py", "calibration.py", "runfiles.py", "temperature.py")


def _changed_stages(root: Path) -> set[str]:
    status = json.loads(run_in(root, "dvc", "status", "--json").stdout or "{}")
    return {name.rsplit(":", 1)[-1] for name in status}


def test_changing_the_calibration_code_leaves_every_training_stage_cached(reproduced: Path) -> None:
    assert _changed_stages(reproduced) == set()
    for name in CALIBRATION_CODE:
        with (reproduced / "src" / "lossbench" / name).open("a") as file:
            file.write("\n# changed\n")
    changed = _changed_stages(reproduced)
    assert changed, "the calibration code is no dependency of any stage"
    assert not {stage for stage in changed if stage.startswith(("train@", "publish@", "prepare"))}, changed
    assert changed == {"calibrate", "report"}


def test_calibration_files_hold_each_seed_before_and_after_scaling(reproduced: Path) -> None:
    params = yaml.safe_load((reproduced / "params.yaml").read_text())
    for name in params["losses"]:
        scores = json.loads((reproduced / "metrics" / "calibration" / f"{name}.json").read_text())
        assert scores["loss"] == name and scores["split_seed"] == 0 and scores["bins"] == 15
        assert sorted(scores["per_seed"]) == [f"seed{seed}" for seed in params["seeds"]]
        assert sum(scores["half_sizes"]) == params["data"]["synthetic"]["test_size"]
        for seed in scores["per_seed"].values():
            assert len(seed["temperatures"]) == 2 and all(t > 0 for t in seed["temperatures"])
            for side in ("before", "after"):
                assert 0 <= seed[side]["ece"] <= 1 and seed[side]["ece_floor"] > 0
        bins = (reproduced / "plots" / "calibration_scaled" / f"{name}.csv").read_text().splitlines()
        assert bins[0] == "seed,bin,lower,upper,count,confidence,accuracy"
        assert len(bins) == 1 + 15 * len(params["seeds"])
    summary = json.loads((reproduced / "metrics" / "summary.json").read_text())["calibration"]
    assert summary["reference"] == "ce"
    assert set(summary["verdict_after"]) == set(params["losses"]) - {"ce"}
    assert "## Calibration after temperature scaling" in (reproduced / "plots" / "report.md").read_text()


def test_a_new_split_seed_reruns_calibration_only(reproduced: Path) -> None:
    params = yaml.safe_load((reproduced / "params.yaml").read_text())
    params["calibration"] = {"split_seed": 5}
    (reproduced / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    output = run_in(reproduced, "dvc", "repro").stdout
    ran = {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}
    assert ran == {"validate", "calibrate", "report"}, ran
    scores = json.loads((reproduced / "metrics" / "calibration" / "ce.json").read_text())
    assert scores["split_seed"] == 5
    # the terminal line names the median T, as the summaries do (one run at chance fits T at 100)
    median = statistics.median(t for seed in scores["per_seed"].values() for t in seed["temperatures"])
    assert f"calibrate: ce, {len(params['seeds'])} seed(s), median T {median:.3f}," in output


def test_a_params_file_without_calibration_settings_still_runs(reproduced: Path) -> None:
    params = yaml.safe_load((reproduced / "params.yaml").read_text())
    params.pop("calibration", None)
    (reproduced / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run_in(reproduced, "dvc", "repro")
    assert (reproduced / "data" / "calibration_split.txt").read_text() == "split_seed: 0\n"


def test_weights_that_are_not_the_networks_are_one_clear_line(reproduced: Path) -> None:
    model = reproduced / "data" / "runs" / "ce" / "seed1" / "model.pt"
    model.unlink()  # DVC links cached files read-only; replace, never write through the link
    model.write_bytes(b"not a checkpoint")
    before = {path: path.read_bytes() for path in (reproduced / "metrics" / "calibration").iterdir()}
    result = lossbench(reproduced, "calibrate")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert "data/runs/ce/seed1/model.pt" in result.stderr
    assert {path: path.read_bytes() for path in (reproduced / "metrics" / "calibration").iterdir()} == before


def test_a_removed_loss_leaves_no_calibration_file(reproduced: Path) -> None:
    params = yaml.safe_load((reproduced / "params.yaml").read_text())
    del params["losses"]["mae"]
    (reproduced / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run_in(reproduced, "dvc", "repro", "calibrate")
    assert sorted(path.name for path in (reproduced / "metrics" / "calibration").iterdir()) == [
        f"{name}.json" for name in sorted(params["losses"])
    ]


def test_another_networks_weights_are_named(reproduced: Path) -> None:
    """Weights that load but are not the run's own (seed 2's in seed 1's folder)."""
    first, second = (reproduced / "data" / "runs" / "ce" / f"seed{seed}" / "model.pt" for seed in (1, 2))
    swapped = second.read_bytes()
    first.unlink()
    first.write_bytes(swapped)
    result = lossbench(reproduced, "calibrate")
    assert result.returncode == 1
    assert "data/runs/ce/seed1/model.pt: predicts" in result.stderr, result.stderr
    assert "otherwise than the run recorded" in result.stderr and "Traceback" not in result.stderr


def test_a_damaged_calibration_file_is_one_clear_line(reproduced: Path) -> None:
    path = reproduced / "metrics" / "calibration" / "ce.json"
    scores = json.loads(path.read_text())
    scores["per_seed"]["seed1"]["after"]["ece"] = "x"
    path.write_text(json.dumps(scores))
    before = (reproduced / "plots" / "report.md").read_bytes()
    result = lossbench(reproduced, "report")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert "metrics/calibration/ce.json: not a calibration file (per_seed.seed1.after.ece:" in result.stderr
    assert (reproduced / "plots" / "report.md").read_bytes() == before


def test_damaged_test_predictions_are_one_clear_line(reproduced: Path) -> None:
    predictions = reproduced / "data" / "runs" / "ce" / "seed1" / "predictions.csv"
    for damaged in ("", "actual,guess\ncat,dog\n"):
        predictions.unlink()
        predictions.write_text(damaged)
        result = lossbench(reproduced, "calibrate")
        assert result.returncode == 1
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
        assert "data/runs/ce/seed1/predictions.csv: not the run's test predictions" in result.stderr
