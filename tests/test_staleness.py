"""One staleness rule for every report: a run whose details record other loss
or training settings than its params.yaml gives is stale, in the report, the γ
sweep and variants-report alike."""

import copy
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from lossbench.errors import MissingInput
from lossbench.experiments import experiment_records
from lossbench.sweep import sweep_points

pytestmark = pytest.mark.fast  # in-process: no trainer, no DVC, no lossbench subprocess

PROJECT = Path(__file__).resolve().parents[1]


def _sweep_run(tmp_path: Path, change: dict[str, object]) -> tuple[Path, list[dict[str, object]]]:
    """A git folder holding the committed focal_low details, and its workspace
    run with params.yaml's train settings updated by `change`."""
    root = tmp_path / "project"
    (root / "metrics" / "details").mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    shutil.copy(PROJECT / "metrics" / "details" / "focal_low.json", root / "metrics" / "details")
    params = YAML(typ="safe").load(PROJECT / "params.yaml")
    params = copy.deepcopy(params) | {"train": params["train"] | change}
    shown = [{"rev": "workspace", "data": {"params": {"params.yaml": {"data": params}}}}]
    return root, experiment_records(json.loads(json.dumps(shown)))


def test_sweep_uses_a_run_whose_settings_are_its_params(tmp_path: Path) -> None:
    root, records = _sweep_run(tmp_path, {})
    points = sweep_points(records, "focal_low", root)
    assert sorted(points["seed"]) == [1, 2, 3, 4]
    assert set(points["gamma"]) == {0.5}


def test_sweep_refuses_a_run_trained_with_other_train_settings(tmp_path: Path) -> None:
    # The details say 30 epochs; the run's params.yaml now says 10: its numbers are not of its params.
    root, records = _sweep_run(tmp_path, {"epochs": 10})
    with pytest.raises(MissingInput, match=r"trained with epochs 30 but params.yaml now says epochs 10"):
        sweep_points(records, "focal_low", root)
