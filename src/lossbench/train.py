"""Stage train@NAME: train the protocol network with one loss, once per seed.

The whole dataset lives in tensors on the training device; each batch is
gathered, cropped, flipped and normalised in a few tensor ops. Per-batch sums
stay on the device, so the loop never waits on a host sync until the epoch ends.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from rich.console import Console

from lossbench import augment, losses, model
from lossbench.augment import Normalizer, PaddedPixels
from lossbench.errors import ParamsError, TrainingDiverged, TrainingInterrupted
from lossbench.evaluation import TestEvaluation, evaluate_probabilities
from lossbench.losses import PerSampleLoss, make_loss
from lossbench.model import ProtocolNet
from lossbench.params import Params, loss_label
from lossbench.stats import summarize
from lossbench.storage import (
    CHECKPOINT_DIR,
    PREPARED_DIR,
    PreparedData,
    RunFiles,
    load_prepared,
    write_json,
    write_with,
)

# A run has converged at the first epoch whose test accuracy is within this
# much (0.5 percentage points) of the best test accuracy of the run.
CONVERGENCE_TOLERANCE = 0.005
# A run's training loss has plateaued at the first epoch after which it never
# falls more than this fraction (1%) below that epoch's value.
PLATEAU_TOLERANCE = 0.01
# Per-seed numbers that metrics/NAME.json summarises with mean, std and 95% CI.
HEADLINE_METRICS = (
    "final_test_acc",
    "best_test_acc",
    "final_train_acc",
    "final_train_loss",
    "final_test_loss",
    "convergence_epoch",
    "plateau_epoch",
    "macro_f1",
    "ece",
    "nll",
    "brier",
)


@dataclass(frozen=True)
class DeviceData:
    """The prepared data as tensors on the training device.

    Training images are padded and normalised once, to be cropped and flipped
    batch by batch; test images are normalised once and never augmented. Both
    come out channels_last, the layout the network is run in.
    """

    train_pixels: PaddedPixels
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int

    @classmethod
    def from_prepared(cls, data: PreparedData, device: torch.device) -> DeviceData:
        normalize = Normalizer(device)
        test_images = normalize(torch.from_numpy(data.test_images).to(device))
        return cls(
            train_pixels=PaddedPixels.from_images(torch.from_numpy(data.train_images).to(device), normalize),
            train_labels=torch.from_numpy(data.train_labels).to(device),
            test_images=test_images.contiguous(memory_format=torch.channels_last),
            test_labels=torch.from_numpy(data.test_labels).to(device),
            num_classes=len(data.classes),
        )


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


def resolve_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise ParamsError(
            "train.device: 'cuda' was asked for but no CUDA device is available; use auto or cpu"
        )
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


@torch.inference_mode()
def evaluate(
    network: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    loss_fn: PerSampleLoss,
    batch_size: int,
) -> tuple[float, float]:
    """Mean loss and accuracy over a whole (normalised, unaugmented) set."""
    network.eval()
    loss_sum = torch.zeros((), device=images.device)
    correct = torch.zeros((), device=images.device, dtype=torch.int64)
    for start in range(0, len(labels), batch_size):
        logits = network(images[start : start + batch_size])
        targets = labels[start : start + batch_size]
        loss_sum += loss_fn(logits, targets).sum()
        correct += (logits.argmax(dim=1) == targets).sum()
    return loss_sum.item() / len(labels), correct.item() / len(labels)


@torch.inference_mode()
def test_probabilities(network: torch.nn.Module, images: torch.Tensor, batch_size: int) -> np.ndarray:
    network.eval()
    chunks = [
        network(images[start : start + batch_size]).double().softmax(dim=1)
        for start in range(0, len(images), batch_size)
    ]
    return torch.cat(chunks).cpu().numpy()


def convergence_epoch(test_accuracy: list[float]) -> int:
    best = max(test_accuracy)
    return next(epoch for epoch, acc in enumerate(test_accuracy, 1) if acc >= best - CONVERGENCE_TOLERANCE)


def plateau_epoch(train_loss: list[float]) -> int:
    return next(
        epoch
        for epoch, loss in enumerate(train_loss, 1)
        if min(train_loss[epoch - 1 :]) >= loss * (1 - PLATEAU_TOLERANCE)
    )


def effective_settings(params: Params, name: str, device: torch.device) -> dict[str, Any]:
    return (
        params.losses[name].model_dump(exclude_none=True)
        | params.train.model_dump(exclude={"device", "threads", "seeds"})
        | {"device": device.type, "threads": torch.get_num_threads(), "dataset": params.data.dataset}
    )


def inputs_digest(prepared_dir: Path) -> bytes:
    """sha256 of the prepared data's bytes and of the training code."""
    digest = hashlib.sha256()
    for path in sorted(prepared_dir.iterdir()):
        with path.open("rb") as handle:
            digest.update(path.name.encode() + hashlib.file_digest(handle, "sha256").digest())
    for module in (augment, losses, model, sys.modules[__name__]):
        digest.update(Path(module.__file__ or "").read_bytes())
    return digest.digest()


def run_fingerprint(params: Params, name: str, seed: int, inputs: bytes) -> str:
    """What a checkpoint must match to be resumed: the training params, this
    loss's entry, the seed, and the data and code (`inputs_digest`)."""
    settings = {
        "train": params.train.model_dump(mode="json", exclude={"seeds"}),
        "loss": params.losses[name].model_dump(mode="json"),
        "seed": seed,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode() + inputs).hexdigest()


def load_checkpoint(path: Path, fingerprint: str, console: Console) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        checkpoint: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any unreadable file is just not resumable
        console.print(f"  ignoring checkpoint {path}: unreadable ({error.__class__.__name__})")
        return None
    if checkpoint.get("fingerprint") != fingerprint:
        console.print(f"  ignoring checkpoint {path}: made with other params, data or code")
        return None
    return checkpoint


def train_seed(
    params: Params,
    name: str,
    seed: int,
    tensors: DeviceData,
    loss_fn: PerSampleLoss,
    checkpoint_path: Path,
    fingerprint: str,
    console: Console,
) -> tuple[ProtocolNet, list[EpochRecord]]:
    """Train one seed to the end, checkpointing after every epoch and resuming
    from a matching checkpoint (a finished one just hands back its network)."""
    config = params.train
    device = tensors.train_labels.device
    started = time.perf_counter()
    n_train = len(tensors.train_labels)
    torch.manual_seed(seed)  # model initialisation
    generator = torch.Generator(device=device).manual_seed(seed)  # order and augmentation
    height, width = tensors.test_images.shape[2:]
    network = ProtocolNet(tensors.num_classes, height, width).to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(
        network.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=config.lr_step_epochs, gamma=config.lr_decay_factor
    )

    history: list[EpochRecord] = []
    elapsed_before = 0.0  # training time spent before an interruption
    checkpoint = load_checkpoint(checkpoint_path, fingerprint, console)
    if checkpoint is not None:
        network.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        generator.set_state(checkpoint["generator"])
        history = [EpochRecord(**record) for record in checkpoint["history"]]
        elapsed_before = history[-1].wall_time_s if history else 0.0
        if len(history) < config.epochs:
            console.print(f"  {name} seed {seed}: resuming after epoch {len(history)}")

    epoch = len(history) + 1
    try:
        for epoch in range(len(history) + 1, config.epochs + 1):
            epoch_started = time.perf_counter()
            network.train()
            lr = optimizer.param_groups[0]["lr"]
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.int64)
            order = torch.randperm(n_train, generator=generator, device=device)
            for start in range(0, n_train, config.batch_size):
                index = order[start : start + config.batch_size]
                images = tensors.train_pixels.crop_and_flip(index, generator)
                targets = tensors.train_labels[index]
                logits = network(images)
                batch_losses = loss_fn(logits, targets)
                optimizer.zero_grad(set_to_none=True)
                batch_losses.mean().backward()  # type: ignore[no-untyped-call]
                optimizer.step()
                loss_sum += batch_losses.detach().sum()
                correct += (logits.detach().argmax(dim=1) == targets).sum()
            scheduler.step()

            train_loss = loss_sum.item() / n_train
            if not torch.isfinite(loss_sum):
                checkpoint_path.unlink(missing_ok=True)  # a diverged run is not worth resuming
                raise TrainingDiverged(
                    f"train@{name} ({loss_label(params.losses[name])}): the training loss became "
                    f"{train_loss} in epoch {epoch} (seed {seed}); nothing was written. "
                    "Lower train.lr or check the loss settings."
                )
            test_loss, test_acc = evaluate(
                network, tensors.test_images, tensors.test_labels, loss_fn, config.test_batch_size
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
            history.append(record)
            state = {
                "fingerprint": fingerprint,
                "model": network.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "generator": generator.get_state(),
                "history": [asdict(r) for r in history],
            }
            write_with(checkpoint_path, partial(torch.save, state))
            console.print(
                f"  {name} seed {seed} epoch {epoch:>3}/{config.epochs}  lr {lr:.4g}  "
                f"train loss {record.train_loss:.4f} acc {record.train_acc:.4f}  "
                f"test loss {test_loss:.4f} acc {test_acc:.4f}  ({time.perf_counter() - epoch_started:.1f}s)"
            )
    except KeyboardInterrupt:
        raise TrainingInterrupted(
            f"train@{name}: interrupted in epoch {epoch} of seed {seed}; "
            + (f"epochs 1-{len(history)} are saved in {checkpoint_path}, and " if history else "")
            + "`dvc repro` resumes from there"
        ) from None
    return network, history


def seed_metrics(history: list[EpochRecord], evaluation: TestEvaluation) -> dict[str, Any]:
    test_accuracy = [r.test_acc for r in history]
    final = history[-1]
    return {
        "final_test_acc": final.test_acc,
        "best_test_acc": max(test_accuracy),
        "final_train_acc": final.train_acc,
        "final_train_loss": final.train_loss,
        "final_test_loss": final.test_loss,
        "convergence_epoch": convergence_epoch(test_accuracy),
        "plateau_epoch": plateau_epoch([r.train_loss for r in history]),
        "macro_f1": evaluation.macro_f1,
        "ece": evaluation.ece,
        "nll": evaluation.nll,
        "brier": evaluation.brier,
    }


def train(params: Params, name: str, root: Path, console: Console) -> dict[str, Any]:
    """Train loss `name` of params.losses once per seed; write its weights,
    metrics (per seed and summarised), history, confusion and calibration data.

    After every epoch the full training state goes to a checkpoint, so a run
    that is interrupted (Ctrl-C, SIGTERM, SIGKILL) resumes from its last
    completed epoch and ends with the same numbers as an uninterrupted one.
    """
    if name not in params.losses:
        raise ParamsError(f"losses.{name}: no such loss in params.yaml; defined: {', '.join(params.losses)}")
    spec, config = params.losses[name], params.train
    label = loss_label(spec)
    device = resolve_device(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)

    data = load_prepared(root / PREPARED_DIR)
    loss_fn = make_loss(name, spec, len(data.classes), device)
    tensors = DeviceData.from_prepared(data, device)
    n_train, n_test = len(data.train_labels), len(data.test_labels)
    console.print(
        f"[bold]train@{name}[/]: {label}, {n_train} train / {n_test} test images, "
        f"{config.epochs} epochs x seeds {config.seeds} on {device.type} ({torch.get_num_threads()} threads)"
    )

    networks, history, per_seed, reliability = {}, [], {}, []
    first_evaluation: TestEvaluation | None = None  # its predictions make the confusion plot
    checkpoints = []
    inputs = inputs_digest(root / PREPARED_DIR)
    for seed in config.seeds:
        checkpoint_path = root / CHECKPOINT_DIR / name / f"seed-{seed}.pt"
        checkpoints.append(checkpoint_path)
        fingerprint = run_fingerprint(params, name, seed, inputs)
        network, seed_history = train_seed(
            params, name, seed, tensors, loss_fn, checkpoint_path, fingerprint, console
        )
        probabilities = test_probabilities(network, tensors.test_images, config.test_batch_size)
        evaluation = evaluate_probabilities(probabilities, data.test_labels)
        networks[f"seed{seed}"] = network.state_dict()
        history += seed_history
        first_evaluation = first_evaluation or evaluation
        per_seed[f"seed{seed}"] = seed_metrics(seed_history, evaluation) | {
            "per_class_recall": evaluation.per_class_recall
        }
        reliability += [{"seed": seed} | row for row in evaluation.reliability]
        console.print(
            f"  {name} seed {seed}: test acc {seed_history[-1].test_acc:.4f}, macro-F1 "
            f"{evaluation.macro_f1:.4f}, ECE {evaluation.ece:.4f} ({seed_history[-1].wall_time_s:.1f}s)"
        )

    recall = np.array([per_seed[f"seed{s}"]["per_class_recall"] for s in config.seeds])
    metrics: dict[str, Any] = {"loss": name, "label": label, "seeds": list(config.seeds)}
    metrics |= {key: summarize([per_seed[f"seed{s}"][key] for s in config.seeds]) for key in HEADLINE_METRICS}
    metrics |= {
        "per_class_recall": dict(zip(data.classes, recall.mean(axis=0).tolist(), strict=True)),
        "per_seed": per_seed,
        "train_samples": n_train,
        "test_samples": n_test,
        "settings": effective_settings(params, name, device),
    }
    assert first_evaluation is not None  # params require at least one seed
    confusion = pd.DataFrame(
        {
            "actual": [data.classes[i] for i in data.test_labels],
            "predicted": [data.classes[i] for i in first_evaluation.predictions],
        }
    )
    run = RunFiles.of(root, name)
    write_with(run.model, partial(torch.save, networks))
    write_with(run.history, lambda path: pd.DataFrame([asdict(r) for r in history]).to_csv(path, index=False))
    write_with(run.confusion, lambda path: confusion.to_csv(path, index=False))
    write_with(run.calibration, lambda path: pd.DataFrame(reliability).to_csv(path, index=False))
    write_json(run.metrics, metrics)
    for checkpoint_path in checkpoints:
        checkpoint_path.unlink(missing_ok=True)
    accuracy = metrics["final_test_acc"]
    console.print(
        f"[bold]train@{name}[/] done: final test acc {accuracy['mean']:.4f} ± {accuracy['std']:.4f} "
        f"over {len(config.seeds)} seed(s), ECE {metrics['ece']['mean']:.4f}, "
        f"converged at epoch {metrics['convergence_epoch']['mean']:.1f} on average"
    )
    return metrics
