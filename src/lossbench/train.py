"""Stage train@NAME-SEED: train the protocol network with one loss and one seed.

One seed of one loss is the unit DVC runs and caches (dvc.yaml's matrix), so
adding a seed trains only that seed, and the run-cache carries each seed to
another machine. DVC runs one stage at a time; so that every core still
works, the stage also trains the next stale seeds of the pipeline "ahead",
one worker process per core, leaving their finished checkpoints for their own
stages, which then only evaluate and write (`seeds_ahead`). A seed's run
depends only on its seed and the params, never on which process trains it or
how many run at once, so the metrics are the same on any machine (tested).
After every epoch a seed's full training state goes to a checkpoint, and
its epochs so far to data/live/NAME/seedN.csv (`dvc plots show data/live`
draws them mid-run); an interrupted stage (Ctrl-C, SIGTERM, SIGKILL, its
dvc process killed) resumes from there.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from rich.console import Console

from lossbench import lifeline
from lossbench.augment import TestSet, TrainingSet
from lossbench.checkpoint import TrainingState, checkpoint_path, inputs_digest, load_saved, run_fingerprint
from lossbench.errors import (
    LossbenchError,
    OutputWriteError,
    ParamsError,
    TrainingDiverged,
    TrainingInterrupted,
)
from lossbench.evaluation import Curves, evaluate_probabilities, seed_metrics
from lossbench.inference import flipped_label_fit, loss_and_accuracy, test_probabilities
from lossbench.losses import PerSampleLoss, is_kind_module, make_loss
from lossbench.model import ProtocolNet
from lossbench.numerics import numerics_in_force
from lossbench.optimizer import StepDecaySGD
from lossbench.params import Params, TrainParams, loss_label, require_loss
from lossbench.progress import TrainingProgress
from lossbench.restore import restore_previous_run
from lossbench.seed_workers import run_in_workers
from lossbench.storage import (
    LIVE_DIR,
    PREPARED_DIR,
    PreparedData,
    SeedRunFiles,
    load_prepared,
    output_set,
    write_csv,
)

# Set by `lossbench run` for its tasks: each task has one core, so trains no seed ahead.
WORKERS_VARIABLE = "LOSSBENCH_WORKERS"


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

    @property
    def live_history(self) -> Path:
        return self.root / LIVE_DIR / self.name / f"seed{self.seed}.csv"


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
    """Seeds trained at once: $LOSSBENCH_WORKERS, machine.workers, or as many
    as the cores hold at train.threads each."""
    variable = os.environ.get(WORKERS_VARIABLE, "")
    if variable:
        if not variable.isdigit() or int(variable) < 1:
            raise ParamsError(f"{WORKERS_VARIABLE}: {variable!r} is not a whole number of at least 1")
        return int(variable)
    threads = params.train.threads or cores  # 0: torch's default, every core
    return params.machine.workers or max(1, cores // threads)


def new_state(config: TrainParams, seed: int, training: TrainingSet, device: torch.device) -> TrainingState:
    """The network, optimiser, schedule and batch-order generator of a fresh run."""
    torch.manual_seed(seed)  # model initialisation
    network = ProtocolNet(training.num_classes, training.image_height, training.image_width)
    network = network.to(device).to(memory_format=torch.channels_last)
    optimizer = StepDecaySGD(
        list(network.parameters()),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        step_epochs=config.lr_step_epochs,
        decay_factor=config.lr_decay_factor,
    )
    generator = torch.Generator(device=device).manual_seed(seed)  # order and augmentation
    return TrainingState(network, optimizer, generator, history=[])


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
    optimizer: StepDecaySGD,
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
        optimizer.zero_grad()
        batch_losses.mean().backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        loss_sum += batch_losses.detach().sum()
        correct += (logits.detach().argmax(dim=1) == targets).sum()
    return loss_sum, correct


OnEpoch = Callable[[dict[str, Any]], object]


class LiveHistory:
    """data/live/NAME/seedN.csv, a seed's epochs so far for `dvc plots show
    data/live` mid-run (none: no file). Only a view of the checkpoint, so a
    failure to write it is said once and training goes on."""

    def __init__(self, path: Path, console: Console) -> None:
        self.path, self.console, self.failed = path, console, False

    def __call__(self, history: list[dict[str, Any]]) -> None:
        try:
            if history:
                write_csv(self.path, history)
            else:
                self.path.unlink(missing_ok=True)
        except (OSError, OutputWriteError) as error:
            if not self.failed:
                self.console.print(f"  note: the live history is not updated: {error}", markup=False)
            self.failed = True


def train_seed(
    job: SeedJob,
    training: TrainingSet,
    test: TestSet,
    loss_fn: PerSampleLoss,
    console: Console,
    on_epoch: OnEpoch | None = None,
) -> list[EpochRecord]:
    """Train one seed to the end, checkpointing after every epoch and resuming
    from a matching checkpoint (a finished one returns at once). `on_epoch`
    gets each epoch's record as it is saved."""
    config, name, seed = job.params.train, job.name, job.seed
    device = training.labels.device
    started = time.perf_counter()
    n_train = len(training.labels)
    state = resumed_state(job, training, device, console)
    network, optimizer, generator = state.network, state.optimizer, state.generator
    elapsed_before = state.history[-1]["wall_time_s"] if state.history else 0.0
    if 0 < len(state.history) < config.epochs:
        console.print(f"  {name} seed {seed}: resuming after epoch {len(state.history)}", highlight=False)
    show_live = LiveHistory(job.live_history, console)
    show_live(state.history)  # a fresh run clears an older run's file

    epoch = len(state.history) + 1
    try:
        for epoch in range(len(state.history) + 1, config.epochs + 1):
            lr = optimizer.lr
            loss_sum, correct = train_epoch(
                network, optimizer, training, loss_fn, generator, config.batch_size
            )
            optimizer.end_epoch()

            train_loss = loss_sum.item() / n_train
            if not torch.isfinite(loss_sum):
                job.checkpoint.unlink(missing_ok=True)  # a diverged run is not worth resuming
                show_live([])
                raise TrainingDiverged(
                    f"train@{name}-{seed} ({loss_label(job.params.losses[name])}): the training loss "
                    f"became {train_loss} in epoch {epoch}; nothing was written. "
                    "Lower train.lr or check the loss settings."
                )
            test_loss, test_acc = loss_and_accuracy(
                network, test.images, test.labels, loss_fn, config.test_batch_size
            )
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
            show_live(state.history)
            if on_epoch is not None:
                on_epoch(asdict(record))
    except KeyboardInterrupt:
        saved = len(state.history)
        raise TrainingInterrupted(
            f"train@{name}-{seed}: interrupted in epoch {epoch}; "
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


def train_job(job: SeedJob, on_epoch: OnEpoch) -> None:
    """One seed in a worker process (seed_workers): its data on the device, then training."""
    _use_threads(job.params)
    device_data = DeviceData.load(job.params, job.name, job.root)
    console = Console(soft_wrap=True, highlight=False)
    train_seed(job, device_data.training, device_data.test, device_data.loss_fn, console, on_epoch)


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
        out.write_with(files.model, partial(torch.save, run.network))
        out.write_csv(files.history, [asdict(r) for r in run.history])
        out.write_csv(files.calibration, run.reliability)
        out.write_csv(files.predictions, run.predictions)
        out.write_json(files.metrics, run.metrics)
        out.write_text(files.fingerprint, fingerprint + "\n")


def training_code() -> list[ModuleType]:
    """The lossbench modules loaded for training (this one and what it imports), but the
    loss kinds' modules: params.py loads every kind, a run's fingerprint has its own kind's."""
    return [
        module
        for name, module in sorted(sys.modules.items())
        if name.startswith("lossbench.")
        and name not in ("lossbench.cli", "lossbench.__main__")
        and not is_kind_module(name)
    ]


def _is_stale(job: SeedJob) -> bool:
    """True if the seed's stage has no output made from these inputs, and no
    finished checkpoint waits for it."""
    written = SeedRunFiles.of(job.root, job.name, job.seed).fingerprint
    if written.is_file() and written.read_text(encoding="utf-8").strip() == job.fingerprint:
        return False
    saved = load_saved(job.checkpoint, job.fingerprint, Console(quiet=True))
    return saved is None or len(saved["history"]) < job.params.train.epochs


def seeds_ahead(params: Params, job: SeedJob, inputs: bytes, count: int) -> list[SeedJob]:
    """Up to `count` seeds whose stages will have to train: first this loss's
    other seeds (DVC runs a loss's seed stages in an order of its own, and a
    targeted `dvc repro train@ce-2 train@ce-1` wants ce 1 next), then the
    seeds after this one in the pipeline's order (dvc.yaml's matrix: loss by
    loss, seed by seed)."""
    order = [(name, seed) for name in params.losses for seed in params.seeds]
    position = order.index((job.name, job.seed)) if (job.name, job.seed) in order else len(order)
    same_loss = [(job.name, seed) for seed in params.seeds if seed != job.seed]
    later = [(name, seed) for name, seed in order[position + 1 :] if name != job.name]
    ahead: list[SeedJob] = []
    for name, seed in same_loss + later:
        if len(ahead) == count:
            break
        candidate = SeedJob(params, name, seed, job.root, run_fingerprint(params, name, seed, inputs))
        if _is_stale(candidate):
            ahead.append(candidate)
    return ahead


def train(params: Params, name: str, seed: int, root: Path, console: Console) -> dict[str, Any]:
    """Train loss `name` of params.losses with `seed`; write its weights,
    metrics, history, calibration bins and test predictions. If it fails, the
    previous run that DVC removed before the stage comes back."""
    try:
        return _train(params, name, seed, root, console)
    except BaseException:
        note = restore_previous_run(root, name, seed)
        if note:
            console.print(note, markup=False, highlight=False)
        raise


def _train(params: Params, name: str, seed: int, root: Path, console: Console) -> dict[str, Any]:
    spec, config = require_loss(params, name), params.train
    device = resolve_device(config.device)
    _use_threads(params)
    lifeline.stop_when_ancestors_die()

    data = load_prepared(root / PREPARED_DIR)
    # A checkpoint made under other kernels or another torch build is not resumed.
    numerics = numerics_in_force(device.type)
    inputs = (
        inputs_digest(root / PREPARED_DIR, training_code()) + json.dumps(numerics, sort_keys=True).encode()
    )
    job = SeedJob(params, name, seed, root, run_fingerprint(params, name, seed, inputs))
    workers = worker_count(params, available_cores())
    # Ahead only while this seed trains too: a stage that finds its seed
    # already trained ahead just evaluates it, and the next stale one trains
    # ahead in turn (2 cores, 4 seeds: 1+2, -, 3+4, -).
    train_here = _is_stale(job)
    ahead = seeds_ahead(params, job, inputs, workers - 1) if train_here and device.type == "cpu" else []
    console.print(
        f"[bold]train@{name}-{seed}[/]: {loss_label(spec)}, seed {seed}, {len(data.train_labels)} train / "
        f"{len(data.test_labels)} test images, {config.epochs} epochs on {device.type}, "
        f"{torch.get_num_threads()} thread(s)"
        + (
            f"; training ahead on idle cores: {', '.join(f'{j.name} seed {j.seed}' for j in ahead)}"
            if ahead
            else ""
        ),
        highlight=False,
    )
    with TrainingProgress(console, config.epochs) as progress:
        if ahead:
            jobs = [job, *ahead]
            for each in jobs:
                progress.add(each.name, each.seed)
            failed_ahead = run_in_workers(
                jobs,
                len(jobs),
                train_job,
                lambda each, record: progress.epoch(each.name, record),
                optional=lambda each: each is not job,  # its own stage will meet the failure again
            )
            for message in failed_ahead:
                console.print(f"  note (a seed trained ahead): {message}", markup=False, highlight=False)
        else:
            device_data = DeviceData.load(params, name, root)
            progress.add(name, seed)
            train_seed(
                job,
                device_data.training,
                device_data.test,
                device_data.loss_fn,
                console,
                partial(progress.epoch, name),
            )
            del device_data  # the training pixels are not needed to evaluate

    run = evaluate_seed(job, data, device, console)
    write_seed_run(SeedRunFiles.of(root, name, seed), run, job.fingerprint)
    job.checkpoint.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # only a view; its training said any failure
        job.live_history.unlink(missing_ok=True)
    return run.metrics
