"""The files around training, in process: CSV cells, the live history's notes,
an interruption as training starts, and the sample grid's labels."""

import csv
import io
import json
import math
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_PARAMS, prepared_in, run_in, write_params
from matplotlib.text import Text
from rich.console import Console

from lossbench.augment import TestSet, TrainingSet
from lossbench.checkpoint import run_fingerprint
from lossbench.errors import TrainingInterrupted
from lossbench.lookahead import (
    WORKERS_VARIABLE,
    Run,
    chains_ahead,
    forces_every_stage,
    runs_every_stale_stage,
    worker_count,
)
from lossbench.losses import make_loss
from lossbench.params import Params
from lossbench.prepare import SAMPLES_PER_CLASS, sample_strip, samples_figure
from lossbench.storage import PreparedData, write_csv
from lossbench.synthetic import CLASSES, generate
from lossbench.train import LiveHistory, SeedJob, train_seed
from lossbench.train_stage import MADE_UNDER, _made_under, finished_ahead, finished_folder

matplotlib.use("Agg")


def test_a_missing_number_is_an_empty_cell_as_pandas_writes_it(tmp_path: Path) -> None:
    path = tmp_path / "table.csv"
    write_csv(
        path,
        [
            {"bin": 1, "confidence": math.nan, "accuracy": None},
            {"bin": 2, "confidence": 0.5, "accuracy": 1.0},
        ],
    )
    assert path.read_text().splitlines() == ["bin,confidence,accuracy", "1,,", "2,0.5,1.0"]
    assert path.read_text() == pd.read_csv(path).to_csv(index=False)


def test_no_rows_write_the_header_of_the_columns_given(tmp_path: Path) -> None:
    path = tmp_path / "table.csv"
    write_csv(path, [], ("actual", "predicted"))
    assert path.read_text() == "actual,predicted\n"
    assert list(csv.reader(path.open())) == [["actual", "predicted"]]


def test_a_live_history_that_cannot_be_removed_is_said_in_words(tmp_path: Path) -> None:
    path = tmp_path / "seed1.csv"
    (path / "taken").mkdir(parents=True)  # a folder in the file's place
    shown = io.StringIO()
    LiveHistory(path, Console(file=shown, width=500))([])
    assert (
        shown.getvalue()
        == f"  note: the live history is not updated: could not remove {path}: Is a directory\n"
    )


class _StoppedTerminal(io.StringIO):
    """A terminal where Ctrl-C is pressed as soon as anything is printed."""

    def write(self, text: str) -> int:
        raise KeyboardInterrupt


def _tiny() -> PreparedData:
    return PreparedData(*generate("train", 40, 0, 0.2), *generate("test", 20, 0, 0.2), classes=CLASSES)


def test_ctrl_c_during_the_first_live_write_is_an_interruption_of_the_stage(tmp_path: Path) -> None:
    params = Params.model_validate(TINY_PARAMS)
    job = SeedJob(params, "ce", 1, tmp_path, run_fingerprint(params, "ce", 1, b"data and code"))
    (job.live_history / "taken").mkdir(parents=True)  # so the first write prints a note
    data, device = _tiny(), torch.device("cpu")
    loss = make_loss("ce", params.losses["ce"], len(CLASSES), device)
    console = Console(file=_StoppedTerminal())
    with pytest.raises(TrainingInterrupted, match="train@ce-1: interrupted in epoch 1"):
        train_seed(
            job, TrainingSet.from_prepared(data, device), TestSet.from_prepared(data, device), loss, console
        )


def test_a_sample_strip_holds_each_image_as_it_is_with_white_between_and_in_place_of_missing_ones() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (3, 3, 4, 8), dtype=np.uint8)  # three of a class: the rest are missing
    strip = sample_strip(images)
    gap = 1  # an eighth of the width, at least one pixel
    assert strip.shape == (4, SAMPLES_PER_CLASS * (8 + gap) - gap, 3) and strip.dtype == np.uint8
    for column, image in enumerate(images):
        start = column * (8 + gap)
        assert np.array_equal(strip[:, start : start + 8], image.transpose(1, 2, 0))
        assert (strip[:, start + 8 : start + 8 + gap] == 255).all()
    assert (strip[:, 3 * (8 + gap) :] == 255).all()


def test_the_sample_grids_labels_keep_clear_of_the_images() -> None:
    figure = samples_figure(_tiny())
    figure.canvas.draw()  # the layout as saved: images at their final aspect
    renderer = figure.canvas.get_renderer()  # type: ignore[attr-defined]
    axes = np.array(figure.axes).reshape(len(CLASSES), -1)
    gap = 4.0  # pixels at the figure's 100 dpi: about 3 points
    for row, name in enumerate(CLASSES):
        label = next(text for text in figure.findobj(Text) if text.get_text() == name)
        extent = label.get_window_extent(renderer)
        own = max(axis.get_window_extent(renderer).y1 for axis in axes[row] if axis.images)
        assert extent.y0 >= own + gap, f"{name}: the label touches its own images"
        if row:
            above = min(axis.get_window_extent(renderer).y0 for axis in axes[row - 1] if axis.images)
            assert extent.y1 <= above - gap, f"{name}: the label touches the images above"


@pytest.mark.parametrize(
    ("arguments", "forced"),
    [
        (["repro", "-f"], True),
        (["repro", "--force"], True),
        (["repro", "-fs"], True),
        (["repro", "-q", "--force", "--no-run-cache"], True),
        (["repro"], False),
        (["repro", "-s"], False),
        (["repro", "-f", "train@ce-1"], False),  # only the target and its upstream stages rerun
        (["repro", "-f", "--unknown"], False),
        (["exp", "run", "-f"], False),
        ([], False),
    ],
)
def test_a_forced_repro_of_the_whole_pipeline_is_told_from_its_command_line(
    arguments: list[str], forced: bool
) -> None:
    assert forces_every_stage(arguments) is forced


@pytest.mark.parametrize(
    ("workers", "train_size", "epochs", "expected"),
    [
        (0, 12_000, 30, 2),  # the default's size: a worker per core
        (0, 300, 2, 1),  # tiny: starting a worker costs more than the seed's training
        (0, 5_000, 10, 2),  # 50,000 image-epochs: worth it
        (3, 300, 2, 3),  # asked for: always
    ],
)
def test_automatic_workers_train_ahead_only_seeds_worth_a_process(
    workers: int, train_size: int, epochs: int, expected: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(WORKERS_VARIABLE, raising=False)
    params = Params.model_validate(
        TINY_PARAMS | {"machine": {"workers": workers}, "train": TINY_PARAMS["train"] | {"epochs": epochs}}  # type: ignore[operator]
    )
    assert worker_count(params, cores=2, train_images=train_size) == expected


@pytest.mark.parametrize(
    ("arguments", "whole"),
    [
        (["repro"], True),
        (["repro", "-f", "-v"], True),
        (["repro", "studies/cifar10-gamma/dvc.yaml"], True),  # a whole pipeline
        (["exp", "run", "-S", "losses.focal.gamma=0.5", "-n", "g05"], True),
        (["exp", "run", "--pull", "dvc.yaml", "--set-param=losses.focal.gamma=0.5"], True),
        (["repro", "train@ce-1"], False),  # one stage and what it needs
        (["exp", "run", "-S", "x=1", "train@ce-1"], False),
        (["exp", "run", "--queue", "-S", "x=1"], False),  # runs later, elsewhere
        (["exp", "run", "--temp"], False),
        (["repro", "--dry"], False),
        (["repro", "-s"], False),
        (["repro", "--new-option"], False),  # not guessed at
        (["exp", "exec-run", "--infofile", "x.run"], False),
        (["status"], False),
    ],
)
def test_a_dvc_run_of_every_stale_stage_is_told_from_its_command_line(
    arguments: list[str], whole: bool
) -> None:
    assert runs_every_stale_stage(arguments) is whole


@pytest.mark.parametrize(
    ("workers", "variable", "train_size", "whole", "expected"),
    [
        (0, "", 300, True, True),  # tiny, every stale stage to run: the first trains them all
        (1, "", 300, True, True),
        (0, "", 300, False, False),  # a targeted run: the other seeds may never be asked for
        (2, "", 300, True, False),  # workers asked for: seeds train side by side instead
        (0, "1", 300, True, False),  # a `lossbench run` task: one stage, one core
        (0, "", 30_000, True, False),  # 60,000 image-epochs, worth a worker: ahead on idle cores instead
    ],
)
def test_tiny_seeds_are_trained_in_the_first_stage_only_when_every_stage_will_run(
    workers: int, variable: str, train_size: int, whole: bool, expected: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(WORKERS_VARIABLE, variable)
    params = Params.model_validate(TINY_PARAMS | {"machine": {"workers": workers}})
    run = Run(forced=False, started=0.0, whole=whole, dvc="123/456")
    assert chains_ahead(params, train_size, run) is expected


def test_a_seed_finished_ahead_is_used_only_by_the_dvc_run_and_params_that_made_it(tmp_path: Path) -> None:
    params = Params.model_validate(TINY_PARAMS)
    other = Params.model_validate(TINY_PARAMS | {"seeds": [1, 2, 3]})
    folder = finished_folder(tmp_path, "ce", 2)

    def leave(made: dict[str, object]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.pt").write_bytes(b"weights")
        (folder / MADE_UNDER).write_text(json.dumps(made))

    leave(_made_under(params, "100/5") | {"by": "train@ce-1", "said": "test acc 0.5"})
    assert finished_ahead(params, tmp_path, "ce", 2, "100/5") == _made_under(params, "100/5") | {
        "by": "train@ce-1",
        "said": "test acc 0.5",
    }
    for dvc, under in (
        ("100/6", params),
        ("", params),
        ("100/5", other),
    ):  # another run; no DVC; other params
        leave(_made_under(params, "100/5") | {"by": "train@ce-1", "said": ""})
        assert finished_ahead(under, tmp_path, "ce", 2, dvc) is None
        assert not folder.exists()  # never used by anyone: removed
    leave(_made_under(params, "100/5") | {"by": ["not", "text"]})  # not what this code writes
    assert finished_ahead(params, tmp_path, "ce", 2, "100/5") is None and not folder.exists()
    folder.mkdir(parents=True)  # unfinished: no record of what made it
    assert finished_ahead(params, tmp_path, "ce", 2, "100/5") is None and not folder.exists()


def test_a_training_stage_checks_its_data_before_it_imports_torch(tmp_path: Path) -> None:
    write_params(tmp_path, TINY_PARAMS)
    result = run_in(
        tmp_path, sys.executable, "-X", "importtime", "-m", "lossbench", "train", "ce", "1", check=False
    )
    assert result.returncode == 1 and "prepared data incomplete" in result.stderr, result.stderr
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line]
    assert "lossbench.params" in imported and "torch" not in imported


# `python -m lossbench ARGS` that prints, as it exits, how many collections the cycle
# collector ran by itself once the CLI was imported (lossbench calls gc.collect nowhere;
# importing the lossbench package, before the CLI, runs with it on).
COUNTING_COLLECTIONS = """
import atexit, gc, runpy, sys
collections = []
gc.callbacks.append(lambda phase, info: phase == "start" and collections.append("lossbench.cli" in sys.modules))
atexit.register(lambda: print(f"collections: {sum(collections)}"))
sys.argv = ["lossbench", *sys.argv[1:]]
runpy.run_module("lossbench", run_name="__main__", alter_sys=True)
"""


def test_a_training_stage_imports_no_compiler_and_collects_cycles_once_started(tmp_path: Path) -> None:
    """torch._dynamo (about a second; torch.optim's classes import it) is not what training needs.
    The cycle collector is off for a command's start-up (lossbench.__main__) and on for training."""
    root = prepared_in(tmp_path, TINY_PARAMS | {"seeds": [1]})
    training = run_in(
        root, sys.executable, "-X", "importtime", "-c", COUNTING_COLLECTIONS, "train", "ce", "1", check=False
    )
    assert training.returncode == 0, training.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in training.stderr.splitlines() if "|" in line}
    assert "torch" in imported and "torch._dynamo" not in imported
    assert int(training.stdout.rsplit("collections: ", 1)[1]) > 0, training.stdout
    # A short command: start-up all of it, with the collector off.
    checked = run_in(root, sys.executable, "-c", COUNTING_COLLECTIONS, "validate")
    assert checked.stdout.endswith("collections: 0\n"), checked.stdout
