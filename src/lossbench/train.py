"""The training loop of one seed: a fresh or resumed state, epoch after
epoch, a checkpoint after each (checkpoint.py), until the seed is trained.

The stage around it (what it loads, trains ahead, shows, writes and puts
back) is train_stage.py; what it writes, seed_run.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from lossbench.augment import TestSet, TrainingSet
from lossbench.checkpoint import TrainingState, checkpoint_path, load_saved
from lossbench.errors import OutputWriteError, ParamsError, TrainingDiverged, TrainingInterrupted
from lossbench.inference import loss_and_accuracy
from lossbench.losses import PerSampleLoss, make_loss
from lossbench.model import ProtocolNet
from lossbench.optimizer import StepDecaySGD
from lossbench.params import Params, TrainParams, loss_label
from lossbench.storage import LIVE_DIR, PREPARED_DIR, load_prepared, write_csv


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
    # interruptions. Only in the checkpoint and the log data/timings: every
    # declared output is the same on a rerun with the same params.
    wall_time_s: float


# A history's columns (data/live and data/runs): every field of the record but its wall time.
HISTORY_FIELDS = tuple(name for name in EpochRecord.__dataclass_fields__ if name != "wall_time_s")


def numbers_of(record: dict[str, Any]) -> dict[str, Any]:
    """An epoch's record as a history row: its numbers, not its wall time."""
    return {name: record[name] for name in HISTORY_FIELDS}


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
                write_csv(self.path, [numbers_of(record) for record in history], HISTORY_FIELDS)
            else:
                self.path.unlink(missing_ok=True)
        except OutputWriteError as error:
            self._say_once(str(error))
        except OSError as error:
            self._say_once(f"could not remove {self.path}: {error.strerror or error.__class__.__name__}")

    def _say_once(self, reason: str) -> None:
        if not self.failed:
            self.console.print(f"  note: the live history is not updated: {reason}", markup=False)
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
    epoch = len(state.history) + 1
    try:
        show_live(state.history)  # a fresh run clears an older run's file
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


def use_threads(params: Params) -> None:
    if params.train.threads:
        torch.set_num_threads(params.train.threads)


def train_job(job: SeedJob, on_epoch: OnEpoch) -> None:
    """One seed in a worker process (seed_workers): its data on the device, then training."""
    use_threads(job.params)
    device_data = DeviceData.load(job.params, job.name, job.root)
    console = Console(soft_wrap=True, highlight=False)
    train_seed(job, device_data.training, device_data.test, device_data.loss_fn, console, on_epoch)
