"""Stage calibrate@NAME in a real pipeline: temperature scaling over the finished
networks, with no retraining, and nothing of training's made stale by it."""

import json
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
    assert {stage.split("@")[0] for stage in changed} == {"calibrate", "report"}


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
    assert ran == {"validate", "report"} | {f"calibrate@{name}" for name in params["losses"]}, ran
    scores = json.loads((reproduced / "metrics" / "calibration" / "ce.json").read_text())
    assert scores["split_seed"] == 5


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
    before = (reproduced / "metrics" / "calibration" / "ce.json").read_bytes()
    result = lossbench(reproduced, "calibrate", "ce")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert "data/runs/ce/seed1/model.pt" in result.stderr
    assert (reproduced / "metrics" / "calibration" / "ce.json").read_bytes() == before
