"""Stage train@NAME: train the protocol network with one loss, once per seed.

The seeds are trained side by side, one worker process each, as many at once
as `machine.workers` allows (default: one per core). A seed's run depends only
on its seed and the params, never on which process trains it or how many run
at once, so the metrics are the same on any machine (tested). After every
epoch a seed's full training state goes to a checkpoint; an interrupted stage
(Ctrl-C, SIGTERM, SIGKILL, its dvc process killed) resumes from there.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import torch
from rich.console import Console

from lossbench import lifeline
from lossbench.augment import TestSet, TrainingSet
from lossbench.checkpoint import TrainingState, checkpoint_path, inputs_digest, load_saved, run_fingerprint
from lossbench.errors import LossbenchError, ParamsError, TrainingDiverged, TrainingInterrupted
from lossbench.evaluation import (
    Curves,
    TestEvaluation,
    evaluate_probabilities,
    seed_metrics,
)
from lossbench.inference import evaluate, test_probabilities
from lossbench.losses import PerSampleLoss, make_loss
from lossbench.model import ProtocolNet
from lossbench.numerics import numerics_in_force
from lossbench.params import Params, TrainParams, loss_label, require_loss
from lossbench.restore import restore_previous_run
from lossbench.seed_workers import run_in_workers
from lossbench.storage import PREPARED_DIR, PreparedData, RunFiles, load_prepared, output_set


@dataclass(frozen=True)
class EpochRecord:
    seed: int
    epoch: int
    lr: float
    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float
    # Training time of this seed so far (data loading included), summed over
    # interruptions. Kept out of metrics/NAME.json so that a rerun with the
    # same params gives identical metrics.
    wall_time_s: float


@dataclass(frozen=True)
class SeedJob:
    """Everything a worker process needs to train one seed (picklable)."""

    params: Params
    name: str
    seed: int
    root: Path
    fingerprint: str

    @property
    def checkpoint(self) -> Path:
        return checkpoint_path(self.root, self.name, self.seed)


def resolve_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise ParamsError(
            "train.device: 'cuda' was asked for but no CUDA device is available; use auto or cpu"
        )
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def worker_count(params: Params, cores: int) -> int:
    """Seeds trained at once: machine.workers, or as many as the cores hold at
    train.threads each; never more than there are seeds."""
    threads = params.train.threads or cores  # 0: torch's default, every core
    wanted = params.machine.workers or max(1, cores // threads)
    return max(1, min(wanted, len(params.train.seeds)))


def new_state(config: TrainParams, seed: int, training: TrainingSet, device: torch.device) -> TrainingState:
    """The network, optimiser, schedule and batch-order generator of a fresh run."""
    torch.manual_seed(seed)  # model initialisation
    network = ProtocolNet(training.num_classes, training.image_height, training.image_width)
    network = network.to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(
        network.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=config.lr_step_epochs, gamma=config.lr_decay_factor
    )
    generator = torch.Generator(device=device).manual_seed(seed)  # order and augmentation
    return TrainingState(network, optimizer, scheduler, generator, history=[])


def resumed_state(
    job: SeedJob, training: TrainingSet, device: torch.device, console: Console
) -> TrainingState:
    """A fresh state, or the one saved in the seed's checkpoint if it matches."""
    state = new_state(job.params.train, job.seed, training, device)
    saved = load_saved(job.checkpoint, job.fingerprint, console)
    if saved is None:
        return state
    try:
        state.restore(saved)
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        console.print(
            f"  ignoring checkpoint {job.checkpoint}: another structure ({error.__class__.__name__})",
            markup=False,
        )
        return new_state(
            job.params.train, job.seed, training, device
        )  # the failed restore may have changed it
    return state


def train_epoch(
    network: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    training: TrainingSet,
    loss_fn: PerSampleLoss,
    generator: torch.Generator,
    batch_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass over the training set in a random order, each batch augmented;
    the summed loss and the number of correct predictions (still on the device)."""
    network.train()
    device = training.labels.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    order = torch.randperm(len(training.labels), generator=generator, device=device)
    for start in range(0, len(training.labels), batch_size):
        index = order[start : start + batch_size]
        images = training.pixels.crop_and_flip(index, generator)
        targets = training.labels[index]
        logits = network(images)
        batch_losses = loss_fn(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        batch_losses.mean().backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        loss_sum += batch_losses.detach().sum()
        correct += (logits.detach().argmax(dim=1) == targets).sum()
    return loss_sum, correct


def train_seed(
    job: SeedJob, training: TrainingSet, test: TestSet, loss_fn: PerSampleLoss, console: Console
) -> list[EpochRecord]:
    """Train one seed to the end, checkpointing after every epoch and resuming
    from a matching checkpoint (a finished one returns at once)."""
    config, name, seed = job.params.train, job.name, job.seed
    device = training.labels.device
    started = time.perf_counter()
    n_train = len(training.labels)
    state = resumed_state(job, training, device, console)
    network, optimizer, generator = state.network, state.optimizer, state.generator
    elapsed_before = state.history[-1]["wall_time_s"] if state.history else 0.0
    if 0 < len(state.history) < config.epochs:
        console.print(f"  {name} seed {seed}: resuming after epoch {len(state.history)}")

    epoch = len(state.history) + 1
    try:
        for epoch in range(len(state.history) + 1, config.epochs + 1):
            epoch_started = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]
            loss_sum, correct = train_epoch(
                network, optimizer, training, loss_fn, generator, config.batch_size
            )
            state.scheduler.step()

            train_loss = loss_sum.item() / n_train
            if not torch.isfinite(loss_sum):
                job.checkpoint.unlink(missing_ok=True)  # a diverged run is not worth resuming
                raise TrainingDiverged(
                    f"train@{name} ({loss_label(job.params.losses[name])}): the training loss became "
                    f"{train_loss} in epoch {epoch} (seed {seed}); nothing was written. "
                    "Lower train.lr or check the loss settings."
                )
            test_loss, test_acc = evaluate(network, test.images, test.labels, loss_fn, config.test_batch_size)
            record = EpochRecord(
                seed=seed,
                epoch=epoch,
                lr=lr,
                train_loss=train_loss,
                train_acc=correct.item() / n_train,
                test_loss=test_loss,
                test_acc=test_acc,
                wall_time_s=round(elapsed_before + time.perf_counter() - started, 2),
            )
            state.history.append(asdict(record))
            state.save(job.checkpoint, job.fingerprint)
            console.print(
                f"  {name} seed {seed} epoch {epoch:>3}/{config.epochs}  lr {lr:.4g}  "
                f"train loss {record.train_loss:.4f} acc {record.train_acc:.4f}  "
                f"test loss {test_loss:.4f} acc {test_acc:.4f}  ({time.perf_counter() - epoch_started:.1f}s)"
            )
    except KeyboardInterrupt:
        saved = len(state.history)
        raise TrainingInterrupted(
            f"train@{name}: interrupted in epoch {epoch} of seed {seed}; "
            + (f"epochs 1-{saved} are saved in {job.checkpoint}, and " if saved else "")
            + "`dvc repro` resumes from there"
        ) from None
    return [EpochRecord(**record) for record in state.history]


@dataclass(frozen=True)
class DeviceData:
    """What training needs on the device, built once per process."""

    training: TrainingSet
    test: TestSet
    loss_fn: PerSampleLoss

    @classmethod
    def load(cls, params: Params, name: str, root: Path) -> DeviceData:
        device = resolve_device(params.train.device)
        data = load_prepared(root / PREPARED_DIR)
        return cls(
            TrainingSet.from_prepared(data, device),
            TestSet.from_prepared(data, device),
            make_loss(name, params.losses[name], len(data.classes), device),
        )


def _use_threads(params: Params) -> None:
    if params.train.threads:
        torch.set_num_threads(params.train.threads)


def train_job(job: SeedJob) -> None:
    """One seed in a worker process (seed_workers): its data on the device, then training."""
    _use_threads(job.params)
    device_data = DeviceData.load(job.params, job.name, job.root)
    train_seed(job, device_data.training, device_data.test, device_data.loss_fn, Console(soft_wrap=True))


@dataclass(frozen=True)
class FinishedRun:
    """Every seed of a loss, evaluated: what data/runs/NAME holds."""

    networks: dict[str, Any]  # "seed1" -> state dict
    history: list[EpochRecord]
    per_seed: dict[str, dict[str, Any]]  # "seed1" -> evaluation.seed_metrics and per-class recall
    reliability: list[dict[str, Any]]  # one row per seed and confidence bin
    confusion: pd.DataFrame  # actual and predicted test class of the first seed


def evaluate_seeds(
    jobs: list[SeedJob], data: PreparedData, device: torch.device, console: Console
) -> FinishedRun:
    """Each seed's finished network, from its checkpoint, on the test set."""
    test = TestSet.from_prepared(data, device)
    networks, history, per_seed, reliability = {}, [], {}, []
    first_evaluation: TestEvaluation | None = None  # its predictions make the confusion plot
    for job in jobs:
        saved = load_saved(job.checkpoint, job.fingerprint, console)
        if saved is None:
            raise LossbenchError(
                f"train@{job.name}: seed {job.seed}'s finished run is missing from {job.checkpoint}"
            )
        network = ProtocolNet(len(data.classes), *data.test_images.shape[2:]).to(device)
        network.load_state_dict(saved["model"])
        seed_history = [EpochRecord(**record) for record in saved["history"]]
        evaluation = evaluate_probabilities(
            test_probabilities(
                network.to(memory_format=torch.channels_last), test.images, job.params.train.test_batch_size
            ),
            data.test_labels,
        )
        curves = Curves(
            train_loss=[r.train_loss for r in seed_history],
            train_acc=[r.train_acc for r in seed_history],
            test_loss=[r.test_loss for r in seed_history],
            test_acc=[r.test_acc for r in seed_history],
        )
        networks[f"seed{job.seed}"] = network.state_dict()
        history += seed_history
        first_evaluation = first_evaluation or evaluation
        per_seed[f"seed{job.seed}"] = seed_metrics(curves, evaluation) | {
            "per_class_recall": evaluation.per_class_recall
        }
        reliability += [{"seed": job.seed} | row for row in evaluation.reliability]
        console.print(
            f"  {job.name} seed {job.seed}: test acc {seed_history[-1].test_acc:.4f}, macro-F1 "
            f"{evaluation.macro_f1:.4f}, ECE {evaluation.ece:.4f} ({seed_history[-1].wall_time_s:.1f}s)"
        )
    assert first_evaluation is not None  # params require at least one seed
    confusion = pd.DataFrame(
        {
            "actual": [data.classes[i] for i in data.test_labels],
            "predicted": [data.classes[i] for i in first_evaluation.predictions],
        }
    )
    return FinishedRun(networks, history, per_seed, reliability, confusion)


def write_run(run: RunFiles, finished: FinishedRun, metrics: dict[str, Any]) -> None:
    """data/runs/NAME as one set of files."""
    with output_set() as files:
        files.write_with(run.model, partial(torch.save, finished.networks))
        history = pd.DataFrame([asdict(r) for r in finished.history])
        files.write_with(run.history, lambda path: history.to_csv(path, index=False))
        files.write_with(run.confusion, lambda path: finished.confusion.to_csv(path, index=False))
        calibration = pd.DataFrame(finished.reliability)
        files.write_with(run.calibration, lambda path: calibration.to_csv(path, index=False))
        files.write_json(run.metrics, metrics)


def training_code() -> list[ModuleType]:
    """The lossbench modules loaded for training (this one and what it imports)."""
    return [
        module
        for name, module in sorted(sys.modules.items())
        if name.startswith("lossbench.") and name not in ("lossbench.cli", "lossbench.__main__")
    ]


def train(params: Params, name: str, root: Path, console: Console) -> dict[str, Any]:
    """Train loss `name` of params.losses once per seed; write its weights,
    metrics (per seed and summarised), history, confusion and calibration data.
    If it fails, the previous run that DVC removed before the stage comes back."""
    try:
        return _train(params, name, root, console)
    except BaseException:
        note = restore_previous_run(root, name)
        if note:
            console.print(note, markup=False, highlight=False)
        raise


def _train(params: Params, name: str, root: Path, console: Console) -> dict[str, Any]:
    spec, config = require_loss(params, name), params.train
    device = resolve_device(config.device)
    _use_threads(params)
    lifeline.stop_when_ancestors_die()

    data = load_prepared(root / PREPARED_DIR)
    n_train, n_test = len(data.train_labels), len(data.test_labels)
    # A checkpoint made under other kernels or another torch build is not resumed.
    numerics = numerics_in_force(device.type)
    inputs = (
        inputs_digest(root / PREPARED_DIR, training_code()) + json.dumps(numerics, sort_keys=True).encode()
    )
    jobs = [
        SeedJob(params, name, seed, root, run_fingerprint(params, name, seed, inputs))
        for seed in config.seeds
    ]
    workers = worker_count(params, available_cores())
    console.print(
        f"[bold]train@{name}[/]: {loss_label(spec)}, {n_train} train / {n_test} test images, "
        f"{config.epochs} epochs x seeds {config.seeds} on {device.type}, {workers} seed(s) at a time, "
        f"{torch.get_num_threads()} thread(s) each"
    )
    if workers == 1:
        device_data = DeviceData.load(params, name, root)
        for job in jobs:
            train_seed(job, device_data.training, device_data.test, device_data.loss_fn, console)
        del device_data  # the training pixels are not needed to evaluate
    else:
        run_in_workers(jobs, workers, train_job)

    finished = evaluate_seeds(jobs, data, device, console)
    metrics: dict[str, Any] = {
        "loss": name,
        "label": loss_label(spec),
        "seeds": list(config.seeds),
        "classes": list(data.classes),
        "per_seed": finished.per_seed,
        "train_samples": n_train,
        "test_samples": n_test,
        "settings": spec.model_dump(exclude_none=True)
        | config.model_dump(exclude={"device", "threads", "seeds"})
        | {"device": device.type, "threads": torch.get_num_threads(), "dataset": params.data.dataset}
        | {"numerics": numerics},
    }
    write_run(RunFiles.of(root, name), finished, metrics)
    for job in jobs:
        job.checkpoint.unlink(missing_ok=True)
    accuracy = [values["final_test_acc"] for values in finished.per_seed.values()]
    ece = np.mean([values["ece"] for values in finished.per_seed.values()])
    console.print(
        f"[bold]train@{name}[/] done: final test acc {np.mean(accuracy):.4f} (seed mean; "
        f"{', '.join(f'{a:.4f}' for a in accuracy)}), ECE {ece:.4f}"
    )
    return metrics
