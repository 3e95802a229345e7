import sys
from pathlib import Path

import pytest
from conftest import TINY_PARAMS, run_in, write_params


def _broken(change: str) -> dict[str, object]:
    params = {key: dict(value) for key, value in TINY_PARAMS.items()}  # type: ignore[call-overload]
    losses = params["losses"] = dict(params["losses"])
    if change == "unknown kind":
        losses["ce"] = {"kind": "hinge"}
    elif change == "negative gamma":
        losses["focal_low"] = {"kind": "focal", "gamma": -0.5}
    elif change == "dotted name":
        losses["focal_0.5"] = losses.pop("focal_low")
    elif change == "missing gamma":
        losses["focal_low"] = {"kind": "focal"}
    elif change == "missing losses":
        del params["losses"]
    elif change == "typo":
        params["train"] = dict(params["train"]) | {"epohcs": 3}
    return params


EXPECTED = {
    "unknown kind": "losses.ce.kind: unknown loss kind; allowed: mae, ce, focal",
    "negative gamma": "losses.focal_low.gamma: Input should be greater than or equal to 0",
    "dotted name": "loss name 'focal_0.5' contains '.', which DVC cannot address",
    "missing gamma": "losses.focal_low.gamma: required key is missing",
    "missing losses": "losses: required key is missing",
    "typo": "train.epohcs: unknown key",
}


@pytest.mark.parametrize("change", list(EXPECTED))
@pytest.mark.parametrize("command", [["check"], ["prepare"], ["train", "ce"], ["report"]])
def test_bad_params_fail_before_any_work_with_one_message(
    tmp_path: Path, change: str, command: list[str]
) -> None:
    write_params(tmp_path, _broken(change))
    result = run_in(tmp_path, sys.executable, "-m", "lossbench", *command, check=False)
    assert result.returncode == 1
    assert EXPECTED[change] in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing written


def test_check_prints_the_defaulted_configuration(tmp_path: Path) -> None:
    write_params(tmp_path, {"losses": {"ce": {"kind": "ce"}}})
    result = run_in(tmp_path, sys.executable, "-m", "lossbench", "check")
    assert "lr_decay_factor: 0.5" in result.stdout and "dataset: synthetic" in result.stdout


def test_unknown_loss_name_for_train(tmp_path: Path) -> None:
    write_params(tmp_path, TINY_PARAMS)
    result = run_in(tmp_path, sys.executable, "-m", "lossbench", "train", "nope", check=False)
    assert result.returncode == 1
    assert (
        "losses.nope: no such loss in params.yaml; defined: mae, ce, focal_low, focal_high" in result.stderr
    )


def test_train_without_prepared_data_names_the_stage(tmp_path: Path) -> None:
    write_params(tmp_path, TINY_PARAMS)
    result = run_in(tmp_path, sys.executable, "-m", "lossbench", "train", "ce", check=False)
    assert result.returncode == 1 and "run `dvc repro prepare`" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_diverging_loss_stops_with_the_loss_and_epoch_named(tmp_path: Path) -> None:
    params = {key: dict(value) for key, value in TINY_PARAMS.items()}  # type: ignore[call-overload]
    params["train"] = params["train"] | {"lr": 1e30}  # blows the weights up in the first steps
    write_params(tmp_path, params)
    run_in(tmp_path, sys.executable, "-m", "lossbench", "prepare")
    result = run_in(tmp_path, sys.executable, "-m", "lossbench", "train", "ce", check=False)
    assert result.returncode == 1
    assert "train@ce (CE): the training loss became nan in epoch 1" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "metrics").exists() and not (tmp_path / "data" / "models").exists()
