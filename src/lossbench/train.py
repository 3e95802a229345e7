"""Stage train@NAME: train the protocol network with one loss and record its curves.

The whole dataset lives in tensors on the training device; each batch is
gathered, cropped, flipped and normalised in a few tensor ops. Per-batch sums
stay on the device, so the loop never waits on a host sync until the epoch ends.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from rich.console import Console

from lossbench.augment import Normalizer, crop_and_flip, pad_images
from lossbench.errors import ParamsError, TrainingDiverged
from lossbench.losses import PerSampleLoss, make_loss
from lossbench.model import ProtocolNet
from lossbench.params import FocalLoss, MaeLoss, Params, loss_label
from lossbench.storage import (
    HISTORY_DIR,
    METRICS_DIR,
    MODELS_DIR,
    PREPARED_DIR,
    PreparedData,
    load_prepared,
    write_json,
    write_with,
)

# A run has converged at the first epoch whose test accuracy is within this
# much (0.5 percentage points) of the best test accuracy of the run.
CONVERGENCE_TOLERANCE = 0.005


@dataclass(frozen=True)
class DeviceData:
    """The prepared data as tensors on the training device.

    Training images stay uint8 and padded, to be cropped, flipped and normalised
    batch by batch; test images are normalised once and never augmented.
    """

    train_padded: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    normalize: Normalizer

    @classmethod
    def from_prepared(cls, data: PreparedData, device: torch.device) -> DeviceData:
        normalize = Normalizer(device)
        return cls(
            train_padded=pad_images(torch.from_numpy(data.train_images).to(device)),
            train_labels=torch.from_numpy(data.train_labels).to(device),
            test_images=normalize(torch.from_numpy(data.test_images).to(device)),
            test_labels=torch.from_numpy(data.test_labels).to(device),
            normalize=normalize,
        )


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    lr: float
    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float


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
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    loss_fn: PerSampleLoss,
    batch_size: int,
) -> tuple[float, float]:
    """Mean loss and accuracy over a whole (normalised, unaugmented) set."""
    model.eval()
    loss_sum = torch.zeros((), device=images.device)
    correct = torch.zeros((), device=images.device, dtype=torch.int64)
    for start in range(0, len(labels), batch_size):
        logits = model(images[start : start + batch_size])
        targets = labels[start : start + batch_size]
        loss_sum += loss_fn(logits, targets).sum()
        correct += (logits.argmax(dim=1) == targets).sum()
    return loss_sum.item() / len(labels), correct.item() / len(labels)


def convergence_epoch(test_accuracy: list[float]) -> int:
    best = max(test_accuracy)
    return next(epoch for epoch, acc in enumerate(test_accuracy, 1) if acc >= best - CONVERGENCE_TOLERANCE)


def effective_settings(params: Params, name: str, device: torch.device) -> dict[str, Any]:
    spec = params.losses[name]
    settings: dict[str, Any] = {"kind": spec.kind}
    if isinstance(spec, FocalLoss):
        settings["gamma"] = spec.gamma
        if spec.alpha is not None:
            settings["alpha"] = spec.alpha
    if isinstance(spec, MaeLoss):
        settings["input"] = spec.input
    settings |= params.train.model_dump(exclude={"device", "threads"})
    settings |= {"device": device.type, "threads": torch.get_num_threads(), "dataset": params.data.dataset}
    return settings


def train(params: Params, name: str, root: Path, console: Console) -> dict[str, Any]:
    """Train loss `name` of params.losses; write its weights, metrics and history."""
    if name not in params.losses:
        raise ParamsError(f"losses.{name}: no such loss in params.yaml; defined: {', '.join(params.losses)}")
    spec, config = params.losses[name], params.train
    label = loss_label(spec)
    device = resolve_device(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    started = time.perf_counter()

    data = load_prepared(root / PREPARED_DIR)
    num_classes = len(data.classes)
    loss_fn = make_loss(name, spec, num_classes, device)
    tensors = DeviceData.from_prepared(data, device)
    n_train, n_test = len(tensors.train_labels), len(tensors.test_labels)

    torch.manual_seed(config.seed)  # model initialisation
    generator = torch.Generator(device=device).manual_seed(config.seed)  # order and augmentation
    height, width = data.train_images.shape[2:]
    model = ProtocolNet(num_classes, height, width).to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=config.lr_step_epochs, gamma=config.lr_decay_factor
    )

    console.print(
        f"[bold]train@{name}[/]: {label}, {n_train} train / {n_test} test images, "
        f"{config.epochs} epochs on {device.type} ({torch.get_num_threads()} threads)"
    )
    history: list[EpochRecord] = []
    for epoch in range(1, config.epochs + 1):
        epoch_started = time.perf_counter()
        model.train()
        lr = optimizer.param_groups[0]["lr"]
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.int64)
        order = torch.randperm(n_train, generator=generator, device=device)
        for start in range(0, n_train, config.batch_size):
            index = order[start : start + config.batch_size]
            images = tensors.normalize(crop_and_flip(tensors.train_padded, index, generator))
            targets = tensors.train_labels[index]
            logits = model(images)
            losses = loss_fn(logits, targets)
            optimizer.zero_grad(set_to_none=True)
            losses.mean().backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            loss_sum += losses.detach().sum()
            correct += (logits.detach().argmax(dim=1) == targets).sum()
        scheduler.step()

        train_loss = loss_sum.item() / n_train
        if not torch.isfinite(loss_sum):
            raise TrainingDiverged(
                f"train@{name} ({label}): the training loss became {train_loss} in epoch {epoch}; "
                "nothing was written. Lower train.lr or check the loss settings."
            )
        test_loss, test_acc = evaluate(
            model, tensors.test_images, tensors.test_labels, loss_fn, config.test_batch_size
        )
        record = EpochRecord(epoch, lr, train_loss, correct.item() / n_train, test_loss, test_acc)
        history.append(record)
        console.print(
            f"  {name} epoch {epoch:>3}/{config.epochs}  lr {lr:.4g}  "
            f"train loss {record.train_loss:.4f} acc {record.train_acc:.4f}  "
            f"test loss {test_loss:.4f} acc {test_acc:.4f}  ({time.perf_counter() - epoch_started:.1f}s)"
        )

    wall_time = time.perf_counter() - started
    accuracies = [record.test_acc for record in history]
    best = max(range(len(history)), key=lambda i: accuracies[i])
    final = history[-1]
    metrics = {
        "loss": name,
        "label": label,
        "final_test_acc": final.test_acc,
        "best_test_acc": history[best].test_acc,
        "best_epoch": history[best].epoch,
        "convergence_epoch": convergence_epoch(accuracies),
        "final_train_acc": final.train_acc,
        "final_train_loss": final.train_loss,
        "final_test_loss": final.test_loss,
        "wall_time_s": round(wall_time, 2),
        "train_samples": n_train,
        "test_samples": n_test,
        "settings": effective_settings(params, name, device),
    }
    write_with(root / MODELS_DIR / f"{name}.pt", lambda path: torch.save(model.state_dict(), path))
    write_with(
        root / HISTORY_DIR / f"{name}.csv",
        lambda path: pd.DataFrame([asdict(r) for r in history]).to_csv(path, index=False),
    )
    write_json(root / METRICS_DIR / f"{name}.json", metrics)
    console.print(
        f"[bold]train@{name}[/] done in {wall_time:.1f}s: final test acc {final.test_acc:.4f}, "
        f"best {history[best].test_acc:.4f} (epoch {history[best].epoch}), "
        f"converged at epoch {metrics['convergence_epoch']}"
    )
    return metrics
