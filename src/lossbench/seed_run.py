"""What train@NAME-SEED writes: its finished network evaluated on the test set.

Every file of data/runs/NAME/seedN is a function of the params, the code and
the data only, so a rerun with the same numbers writes the same bytes (its
dvc.lock entry does not change, and the run-cache holds for any machine). The
training's wall time, which differs on every run, goes to the undeclared log
data/timings/NAME/seedN.csv instead.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from rich.console import Console

from lossbench.augment import TestSet
from lossbench.checkpoint import inputs_digest, load_saved
from lossbench.errors import LossbenchError
from lossbench.evaluation import Curves, evaluate_probabilities, seed_metrics
from lossbench.inference import flipped_label_fit, test_probabilities
from lossbench.losses import is_kind_module
from lossbench.model import ProtocolNet
from lossbench.numerics import numerics_in_force
from lossbench.params import loss_label
from lossbench.storage import PREPARED_DIR, TIMINGS_DIR, PreparedData, SeedRunFiles, output_set, write_csv
from lossbench.train import HISTORY_FIELDS, EpochRecord, SeedJob, numbers_of

# Modules loaded in a training stage that decide nothing it writes: how it is
# scheduled, shown, watched and put back after a failure. Neither the stage's
# dvc.yaml deps nor a run's fingerprint hold them (tests/test_dvc_yaml.py).
STAGE_PLUMBING = frozenset(
    {
        "lossbench.cli",
        "lossbench.__main__",
        "lossbench.train_stage",
        "lossbench.lookahead",
        "lossbench.seed_workers",
        "lossbench.progress",
        "lossbench.lifeline",
        "lossbench.restore",
    }
)


def training_code() -> list[ModuleType]:
    """The lossbench modules loaded for training, but for STAGE_PLUMBING and the loss
    kinds' modules: params.py loads every kind, a run's fingerprint has its own kind's."""
    return [
        module
        for name, module in sorted(sys.modules.items())
        if name.startswith("lossbench.") and name not in STAGE_PLUMBING and not is_kind_module(name)
    ]


def training_inputs(root: Path, device: torch.device) -> bytes:
    """What a run's fingerprint holds besides its params: the prepared data, the
    training code, and the kernels in force (a checkpoint made under other
    kernels or another torch build is not resumed)."""
    numerics = numerics_in_force(device.type)
    return inputs_digest(root / PREPARED_DIR, training_code()) + json.dumps(numerics, sort_keys=True).encode()


@dataclass(frozen=True)
class SeedRun:
    """One finished seed, evaluated: what data/runs/NAME/seedN holds."""

    network: dict[str, Any]  # state dict
    history: list[EpochRecord]
    metrics: dict[str, Any]  # a run of one seed, the form results.check_run reads
    reliability: list[dict[str, Any]]  # one row per confidence bin
    predictions: list[dict[str, str]]  # actual and predicted class of every test image


def evaluate_seed(job: SeedJob, data: PreparedData, device: torch.device, console: Console) -> SeedRun:
    """The seed's finished network, from its checkpoint, on the test set."""
    saved = load_saved(job.checkpoint, job.fingerprint, console)
    if saved is None:
        raise LossbenchError(
            f"train@{job.name}-{job.seed}: the finished run is missing from {job.checkpoint}"
        )
    network = ProtocolNet(len(data.classes), *data.test_images.shape[2:]).to(device)
    network.load_state_dict(saved["model"])
    history = [EpochRecord(**record) for record in saved["history"]]
    test = TestSet.from_prepared(data, device)
    evaluation = evaluate_probabilities(
        test_probabilities(
            network.to(memory_format=torch.channels_last), test.images, job.params.train.test_batch_size
        ),
        data.test_labels,
    )
    curves = Curves(
        train_loss=[r.train_loss for r in history],
        train_acc=[r.train_acc for r in history],
        test_loss=[r.test_loss for r in history],
        test_acc=[r.test_acc for r in history],
    )
    spec, config = job.params.losses[job.name], job.params.train
    metrics = {
        "loss": job.name,
        "label": loss_label(spec),
        "seeds": [job.seed],
        "classes": list(data.classes),
        "per_seed": {
            f"seed{job.seed}": seed_metrics(curves, evaluation)
            | {"per_class_recall": evaluation.per_class_recall}
            | flipped_label_fit(network, data, device, job.params.train.test_batch_size)
        },
        "train_samples": len(data.train_labels),
        "test_samples": len(data.test_labels),
        "settings": spec.model_dump(exclude_none=True)
        | config.model_dump(exclude={"device", "threads", "seeds"})
        | {"device": device.type, "threads": torch.get_num_threads(), "dataset": job.params.data.dataset}
        | {"numerics": numerics_in_force(device.type)},
    }
    predictions = [
        {"actual": data.classes[actual], "predicted": data.classes[predicted]}
        for actual, predicted in zip(data.test_labels, evaluation.predictions, strict=True)
    ]
    console.print(
        f"train@{job.name}-{job.seed}: test acc {history[-1].test_acc:.4f}, macro-F1 "
        f"{evaluation.macro_f1:.4f}, ECE {evaluation.ece:.4f} ({history[-1].wall_time_s:.1f}s of training)",
        highlight=False,
    )
    reliability = [{"seed": job.seed} | row for row in evaluation.reliability]
    return SeedRun(network.state_dict(), history, metrics, reliability, predictions)


def write_seed_run(files: SeedRunFiles, run: SeedRun, fingerprint: str) -> None:
    """data/runs/NAME/seedN as one set of files."""
    with output_set() as out:
        out.write_with(files.model, partial(_save_network, run.network))
        out.write_csv(files.history, [numbers_of(asdict(record)) for record in run.history], HISTORY_FIELDS)
        out.write_csv(files.calibration, run.reliability)
        out.write_csv(files.predictions, run.predictions, ("actual", "predicted"))
        out.write_json(files.metrics, run.metrics)
        out.write_text(files.fingerprint, fingerprint + "\n")


def _save_network(network: dict[str, Any], path: Path) -> None:
    # Through a file object: given a path, torch.save names the archive's folder
    # after the file, here a random temporary name, and no two runs' bytes agree.
    with path.open("wb") as file:
        torch.save(network, file)


def timings_path(root: Path, name: str, seed: int) -> Path:
    return root / TIMINGS_DIR / name / f"seed{seed}.csv"


def write_timings(root: Path, job: SeedJob, history: list[EpochRecord]) -> None:
    """data/timings/NAME/seedN.csv: the seed's training time after each epoch
    (summed over interruptions). Not a DVC output, so a failure to write it
    is only said."""
    rows = [{"seed": r.seed, "epoch": r.epoch, "wall_time_s": r.wall_time_s} for r in history]
    write_csv(timings_path(root, job.name, job.seed), rows)
