"""Stage prepare: materialise the chosen dataset as uint8 tensors under data/prepared."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt
import numpy as np
from rich.console import Console

from lossbench import cifar10, imagefolder, synthetic
from lossbench.errors import DatasetUnavailable
from lossbench.params import RAW_DIR, DataParams, Params
from lossbench.storage import (
    CLASS_COUNTS_FILE,
    PLOTS_DIR,
    PREPARED_DIR,
    PreparedData,
    save_prepared,
    write_json,
    write_with,
)

SAMPLES_FIGURE = PLOTS_DIR / "samples.png"
SAMPLES_PER_CLASS = 8


def draw_samples(data: PreparedData, path: Path) -> None:
    """A grid of the first training images of each class: what the network sees."""
    figure, axes = plt.subplots(
        len(data.classes), SAMPLES_PER_CLASS, figsize=(SAMPLES_PER_CLASS * 0.9, len(data.classes) * 0.95)
    )
    for row, name in enumerate(data.classes):
        picks = np.flatnonzero(data.train_labels == row)[:SAMPLES_PER_CLASS]
        for column in range(SAMPLES_PER_CLASS):
            axis = axes[row, column]
            axis.set_axis_off()
            if column < len(picks):
                axis.imshow(data.train_images[picks[column]].transpose(1, 2, 0), interpolation="nearest")
        axes[row, 0].set_title(name, fontsize=8, loc="left")
    figure.tight_layout(pad=0.3)
    write_with(path, lambda out: figure.savefig(out, dpi=80, format="png"))
    plt.close(figure)


def long_tail_counts(largest: int, num_classes: int, ratio: float) -> list[int]:
    """CIFAR-10-LT's exponential profile: class c keeps largest * ratio^(-c / (C - 1))."""
    if num_classes == 1:
        return [largest]
    return [int(largest * ratio ** (-c / (num_classes - 1))) for c in range(num_classes)]


def make_long_tailed(
    labels: np.ndarray, num_classes: int, ratio: float, rng: np.random.Generator
) -> np.ndarray:
    """Indices of the training images kept: a random subset of each class, sized
    by the long-tail profile (class 0 is the head, the last class the tail)."""
    largest = int(np.bincount(labels, minlength=num_classes).max())
    keep = [
        rng.permutation(np.flatnonzero(labels == label))[:count]
        for label, count in enumerate(long_tail_counts(largest, num_classes, ratio))
    ]
    return np.sort(np.concatenate(keep))


def flip_labels(
    labels: np.ndarray, num_classes: int, fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Exactly round(fraction * N) labels replaced by a uniformly random *other* class."""
    noisy = labels.copy()
    chosen = rng.choice(len(labels), size=round(fraction * len(labels)), replace=False)
    noisy[chosen] = (labels[chosen] + rng.integers(1, num_classes, len(chosen))) % num_classes
    return noisy


# Each reader takes the data params and the dataset's raw folder, data/raw/<dataset>.
READERS: dict[str, Callable[[DataParams, Path], PreparedData]] = {
    "synthetic": synthetic.read,
    "cifar10": cifar10.read,
    "imagefolder": imagefolder.read,
}


def prepare(params: Params, root: Path, console: Console) -> PreparedData:
    started = time.perf_counter()
    data_params = params.data
    data = READERS[data_params.dataset](data_params, root / RAW_DIR / data_params.dataset)
    if data.skipped:
        console.print(
            f"[yellow]skipped {len(data.skipped)} unreadable image(s):[/]\n  " + "\n  ".join(data.skipped)
        )
    num_classes = len(data.classes)
    if num_classes < 2:
        raise DatasetUnavailable(
            f"data.dataset: {data_params.dataset} has {num_classes} class ({', '.join(data.classes)}); "
            "a classifier needs at least 2"
        )
    # Separate streams so switching one variant on does not change the other's draw.
    tail_rng, noise_rng = (np.random.default_rng([data_params.seed, 1000 + i]) for i in range(2))
    if data_params.imbalance_ratio > 1:
        largest = int(np.bincount(data.train_labels, minlength=num_classes).max())
        if min(long_tail_counts(largest, num_classes, data_params.imbalance_ratio)) < 1:
            raise DatasetUnavailable(
                f"data.imbalance_ratio: {data_params.imbalance_ratio:g} leaves the smallest class with no "
                f"training image (the largest has {largest}); use at most {largest}"
            )
        keep = make_long_tailed(data.train_labels, num_classes, data_params.imbalance_ratio, tail_rng)
        data = replace(data, train_images=data.train_images[keep], train_labels=data.train_labels[keep])
    flipped = 0
    if data_params.label_noise > 0:
        noisy = flip_labels(data.train_labels, num_classes, data_params.label_noise, noise_rng)
        flipped = int((noisy != data.train_labels).sum())
        data = replace(data, train_labels=noisy)

    save_prepared(data, root / PREPARED_DIR)
    counts = data.class_counts()
    write_json(
        root / CLASS_COUNTS_FILE,
        {
            "dataset": data_params.dataset,
            "imbalance_ratio": data_params.imbalance_ratio,
            "label_noise": data_params.label_noise,
            "labels_flipped": flipped,
            **counts,
        },
    )
    draw_samples(data, root / SAMPLES_FIGURE)
    console.print(
        f"[bold]prepare[/]: {data_params.dataset}, {len(data.train_labels)} train / "
        f"{len(data.test_labels)} test images of {num_classes} classes "
        f"({', '.join(data.classes)}) in {time.perf_counter() - started:.1f}s"
        + (f"; long-tailed x{data_params.imbalance_ratio:g}" if data_params.imbalance_ratio > 1 else "")
        + (f"; {flipped} training labels flipped" if flipped else "")
    )
    return data
