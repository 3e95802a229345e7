"""Faults and bad input: what the user sees, and that nothing is lost or half-written."""

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY_PARAMS, run_in, start_in, write_params

DELETE = object()

# (key path, new value or DELETE or a renamed loss, message the user must see)
BAD_PARAMS = [
    ("losses.ce.kind", "hinge", "losses.ce.kind: unknown loss kind; allowed: mae, ce, focal"),
    ("losses.focal_low.gamma", -0.5, "losses.focal_low.gamma: Input should be greater than or equal to 0"),
    ("losses.focal_low.gamma", DELETE, "losses.focal_low.gamma: required key is missing"),
    ("losses", DELETE, "losses: required key is missing"),
    ("train.epohcs", 3, "train.epohcs: unknown key (check its spelling)"),
    ("train.epochs", "ten", "train.epochs: Input should be a valid integer"),
    ("train.epochs", 0, "train.epochs: Input should be greater than or equal to 1"),
    ("train.batch_size", 0, "train.batch_size: Input should be greater than or equal to 1"),
    ("train.lr", 0.0, "train.lr: Input should be greater than 0"),
    ("data.dataset", "imagenet", "data.dataset: Input should be 'synthetic', 'cifar10' or 'imagefolder'"),
    ("data.cifar10.download", "maybe", "data.cifar10.download: Input should be a valid boolean"),
    ("train.seeds", [1, 1], "train.seeds: Value error, seeds must be distinct"),
    ("train.seeds", [], "train.seeds: List should have at least 1 item"),
    ("data.imbalance_ratio", 0.5, "data.imbalance_ratio: Input should be greater than or equal to 1"),
    ("data.label_noise", 1.0, "data.label_noise: Input should be less than 1"),
    ("data.dataset", "imagefolder", "data: Value error, data.imagefolder needs `root`"),
]


def changed(path: str, value: object) -> dict[str, object]:
    params = copy.deepcopy(TINY_PARAMS)
    *parents, last = path.split(".")
    node: dict[str, object] = params
    for key in parents:
        node = node.setdefault(key, {})  # type: ignore[assignment]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return params


def lossbench(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_in(cwd, sys.executable, "-m", "lossbench", *args, check=False)


@pytest.mark.parametrize(("path", "value", "message"), BAD_PARAMS, ids=[f"{p}={v}" for p, v, _ in BAD_PARAMS])
@pytest.mark.parametrize("command", [["check"], ["prepare"], ["train", "ce"], ["report"]], ids=" ".join)
def test_bad_params_fail_before_any_work_with_one_message(
    tmp_path: Path, path: str, value: object, message: str, command: list[str]
) -> None:
    write_params(tmp_path, changed(path, value))
    result = lossbench(tmp_path, *command)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing written


def test_a_dotted_loss_name_is_refused_with_the_reason(tmp_path: Path) -> None:
    params = copy.deepcopy(TINY_PARAMS)
    params["losses"]["focal_0.5"] = params["losses"].pop("focal_low")  # type: ignore[index, attr-defined]
    write_params(tmp_path, params)
    result = lossbench(tmp_path, "check")
    assert result.returncode == 1
    assert "loss name 'focal_0.5' contains '.', which DVC cannot address as a parameter path" in result.stderr
    assert "use e.g. 'focal_0_5'" in result.stderr


def test_unreadable_yaml_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("train: [unclosed\n")
    result = lossbench(tmp_path, "check")
    assert result.returncode == 1 and "params.yaml: not valid YAML" in result.stderr


def test_check_prints_the_defaulted_configuration(tmp_path: Path) -> None:
    write_params(tmp_path, {"losses": {"ce": {"kind": "ce"}}})
    result = lossbench(tmp_path, "check")
    assert result.returncode == 0
    assert "lr_decay_factor: 0.5" in result.stdout and "dataset: synthetic" in result.stdout


def test_unknown_loss_name_for_train(tmp_path: Path) -> None:
    write_params(tmp_path, TINY_PARAMS)
    result = lossbench(tmp_path, "train", "nope")
    assert result.returncode == 1
    assert (
        "losses.nope: no such loss in params.yaml; defined: mae, ce, focal_low, focal_high" in result.stderr
    )


def test_train_without_prepared_data_names_the_stage(tmp_path: Path) -> None:
    write_params(tmp_path, TINY_PARAMS)
    result = lossbench(tmp_path, "train", "ce")
    assert result.returncode == 1 and "run `dvc repro prepare`" in result.stderr
    assert "Traceback" not in result.stderr


def _temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*.tmp") if ".dvc" not in p.parts]


@pytest.fixture
def prepared(tmp_path: Path) -> Path:
    """Tiny prepared data and params for one CE training of a couple of seconds."""
    params = copy.deepcopy(TINY_PARAMS)
    params["data"]["synthetic"]["train_size"] = 600  # type: ignore[index]
    params["train"]["epochs"] = 40  # type: ignore[index]
    params["train"]["seeds"] = [1]  # type: ignore[index]
    write_params(tmp_path, params)
    assert lossbench(tmp_path, "prepare").returncode == 0
    return tmp_path


def test_a_diverging_loss_stops_with_the_loss_and_epoch_named(prepared: Path) -> None:
    params = yaml.safe_load((prepared / "params.yaml").read_text())
    params["train"]["lr"] = 1e30  # blows the weights up in the first steps
    write_params(prepared, params)
    result = lossbench(prepared, "train", "ce")
    assert result.returncode == 1
    assert "train@ce (CE): the training loss became nan in epoch 1" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (prepared / "data" / "runs").exists()


def test_a_failed_metrics_write_is_a_clear_error_and_leaves_no_partial_file(prepared: Path) -> None:
    # The metrics path is taken by a folder: the rename onto it fails, as a full disk would.
    (prepared / "data" / "runs" / "ce" / "metrics.json").mkdir(parents=True)
    result = lossbench(prepared, "train", "ce")
    assert result.returncode == 1
    assert "could not write data/runs/ce/metrics.json" in result.stderr and "Traceback" not in result.stderr
    assert _temporaries(prepared) == []


def test_a_missing_history_names_the_stage_to_rerun(prepared: Path) -> None:
    params = yaml.safe_load((prepared / "params.yaml").read_text())
    params["train"]["epochs"] = 1
    params["losses"] = {"ce": {"kind": "ce"}, "mae": {"kind": "mae"}}
    write_params(prepared, params)
    assert lossbench(prepared, "train", "ce").returncode == 0
    assert lossbench(prepared, "train", "mae").returncode == 0
    (prepared / "data" / "runs" / "mae" / "history.csv").unlink()
    result = lossbench(prepared, "report")
    assert result.returncode == 1
    assert "data/runs/mae/history.csv is missing: run `dvc repro train@mae` first" in result.stderr


def _start_training(root: Path) -> subprocess.Popen[str]:
    return start_in(root, sys.executable, "-m", "lossbench", "train", "ce")


def _wait_for(path: Path, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while not path.exists():
        assert process.poll() is None, "training ended before it could be interrupted"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def _results(root: Path) -> tuple[dict[str, object], list[str]]:
    metrics = json.loads((root / "data" / "runs" / "ce" / "metrics.json").read_text())
    history = (root / "data" / "runs" / "ce" / "history.csv").read_text().splitlines()
    # The last column is wall time, which is allowed to differ.
    return metrics, [line.rsplit(",", 1)[0] for line in history]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_interrupted_training_resumes_to_identical_results(prepared: Path, signum: signal.Signals) -> None:
    assert lossbench(prepared, "train", "ce").returncode == 0  # the uninterrupted reference
    expected = _results(prepared)
    shutil.rmtree(prepared / "data" / "runs")

    process = _start_training(prepared)
    _wait_for(prepared / "data" / "checkpoints" / "ce" / "seed-1.pt", process)
    os.killpg(process.pid, signum)
    _, stderr = process.communicate(timeout=120)
    if signum == signal.SIGKILL:
        assert process.returncode == -signal.SIGKILL
    else:
        assert process.returncode == 130
        assert "interrupted: train@ce: interrupted in epoch" in stderr and "`dvc repro` resumes" in stderr
        assert "Traceback" not in stderr
    assert not (prepared / "data" / "runs" / "ce" / "metrics.json").exists()

    resumed = lossbench(prepared, "train", "ce")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch" in resumed.stdout
    assert _results(prepared) == expected
    assert list((prepared / "data" / "checkpoints").rglob("*.pt")) == []
    assert _temporaries(prepared) == []


def test_a_checkpoint_from_other_params_is_ignored(prepared: Path) -> None:
    process = _start_training(prepared)
    _wait_for(prepared / "data" / "checkpoints" / "ce" / "seed-1.pt", process)
    os.killpg(process.pid, signal.SIGINT)
    process.communicate(timeout=120)
    params = yaml.safe_load((prepared / "params.yaml").read_text())
    params["train"]["lr"] = 0.05
    params["train"]["epochs"] = 2
    write_params(prepared, params)
    result = lossbench(prepared, "train", "ce")
    assert result.returncode == 0
    assert "ignoring checkpoint" in result.stdout and "made with other params, data or code" in result.stdout
    assert "resuming" not in result.stdout


def test_a_checkpoint_is_loaded_as_weights_only(prepared: Path) -> None:
    marker = prepared / "code-ran"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (Path.touch, (str(marker),))  # type: ignore[return-value]

    checkpoint = prepared / "data" / "checkpoints" / "ce" / "seed-1.pt"
    checkpoint.parent.mkdir(parents=True)
    torch.save({"fingerprint": Payload()}, checkpoint)
    params = yaml.safe_load((prepared / "params.yaml").read_text())
    params["train"]["epochs"] = 1
    write_params(prepared, params)
    result = lossbench(prepared, "train", "ce")
    assert result.returncode == 0
    assert "ignoring checkpoint" in result.stdout and "unreadable" in result.stdout
    assert not marker.exists()
