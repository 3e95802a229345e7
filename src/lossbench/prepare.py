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
from matplotlib.figure import Figure
from rich.console import Console
from rich.markup import escape

from lossbench import cifar10_jpeg, imagefolder, synthetic
from lossbench.errors import DatasetUnavailable, shown
from lossbench.params import RAW_DIR, DataParams, Params
from lossbench.storage import (
    CLASS_COUNTS_FILE,
    PLOTS_DIR,
    PREPARED_DIR,
    PreparedData,
    output_set,
    save_prepared,
)

SAMPLES_FIGURE = PLOTS_DIR / "samples.png"
SAMPLES_PER_CLASS = 8
# Classes drawn in the sample grid; its height, memory and drawing time grow with
# the rows (900 classes took 165 s and 2.96 GB). The rest are named on the console.
SAMPLE_ROWS = 20


def samples_figure(data: PreparedData) -> Figure:
    """A grid of the first training images of each class (the first SAMPLE_ROWS
    classes; a line under the grid counts the rest): what the network sees.
    Each class is one strip of images in one axes: an axes per image made
    prepare's slowest part (80 axes, 0.9 s of its 2 s on the tiny project)."""
    drawn, rest = data.classes[:SAMPLE_ROWS], data.classes[SAMPLE_ROWS:]
    footer = 0.3 if rest else 0.0  # inches
    figure, axes = plt.subplots(
        len(drawn),
        1,
        figsize=(SAMPLES_PER_CLASS * 0.9, len(drawn) * 1.05 + footer),
        squeeze=False,
    )
    for row, name in enumerate(drawn):
        axis = axes[row, 0]
        axis.set_axis_off()
        picks = np.flatnonzero(data.train_labels == row)[:SAMPLES_PER_CLASS]
        if len(picks):
            axis.imshow(sample_strip(data.train_images[picks]), interpolation="nearest")
        # A folder name is text, never mathtext: a class named $\x$ would make savefig raise.
        axis.set_title(shown(name), fontsize=8, loc="left", parse_math=False)
    if rest:
        figure.text(
            0.01,
            0.3 * footer / figure.get_figheight(),
            f"{len(drawn)} of {len(data.classes)} classes shown; every class is in {CLASS_COUNTS_FILE}",
            fontsize=8,
            parse_math=False,
        )
        figure.tight_layout(pad=0.3, h_pad=1.0, rect=(0, footer / figure.get_figheight(), 1, 1))
    else:
        figure.tight_layout(pad=0.3, h_pad=1.0)  # h_pad: a row's label clear of the row above
    return figure


def sample_strip(images: np.ndarray) -> np.ndarray:
    """Up to SAMPLES_PER_CLASS uint8 images (n, 3, H, W) side by side as one
    (H, W') image, white between them and in the places of missing ones."""
    _, channels, height, width = images.shape
    gap = max(1, width // 8)
    strip = np.full((height, SAMPLES_PER_CLASS * (width + gap) - gap, channels), 255, dtype=np.uint8)
    for column, image in enumerate(images):
        start = column * (width + gap)
        strip[:, start : start + width] = image.transpose(1, 2, 0)
    return strip


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


def read_cifar10(data_params: DataParams, raw: Path) -> PreparedData:
    # Imported here: torchvision takes seconds to import, and only CIFAR-10 needs it.
    from lossbench import cifar10

    return cifar10.read(data_params, raw)


# Each reader takes the data params and the dataset's raw folder, data/raw/<dataset>.
READERS: dict[str, Callable[[DataParams, Path], PreparedData]] = {
    "cifar10_jpeg": cifar10_jpeg.read,
    "synthetic": synthetic.read,
    "cifar10": read_cifar10,
    "imagefolder": imagefolder.read,
}


def prepare(params: Params, root: Path, console: Console) -> PreparedData:
    started = time.perf_counter()
    data_params = params.data
    data = READERS[data_params.dataset](data_params, root / RAW_DIR / data_params.dataset)
    if data.skipped:
        console.print(
            f"[yellow]skipped {len(data.skipped)} unreadable image(s):[/]\n  "
            + "\n  ".join(escape(line) for line in data.skipped),  # each names its file with shown()
            highlight=False,
        )
    num_classes = len(data.classes)
    if num_classes < 2:
        raise DatasetUnavailable(
            f"data.dataset: {data_params.dataset} has {num_classes} class "
            f"({shown(', '.join(data.classes))}); a classifier needs at least 2"
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
        # The true labels are kept for the memorization gauge (train: how many flipped labels were learnt).
        data = replace(data, train_labels=noisy, train_true_labels=data.train_labels)

    counts = data.class_counts()
    figure = samples_figure(data)
    try:
        # One set: the figure and the counts go to temporary files first and the
        # prepared folder is swapped in last, so a failure anywhere (a drawing
        # error, a full disk) leaves all three as they were.
        with output_set() as files:
            files.write_json(
                root / CLASS_COUNTS_FILE,
                {
                    "dataset": data_params.dataset,
                    "imbalance_ratio": data_params.imbalance_ratio,
                    "label_noise": data_params.label_noise,
                    "labels_flipped": flipped,
                    **counts,
                },
            )
            files.write_with(root / SAMPLES_FIGURE, lambda out: figure.savefig(out, dpi=80, format="png"))
            save_prepared(data, root / PREPARED_DIR)
    finally:
        plt.close(figure)
    names = ", ".join(escape(shown(name)) for name in data.classes[:SAMPLE_ROWS])
    if num_classes > SAMPLE_ROWS:
        names += f", … ({num_classes - SAMPLE_ROWS} more)"
    console.print(
        f"[bold]prepare[/]: {data_params.dataset}, {len(data.train_labels)} train / "
        f"{len(data.test_labels)} test images of {num_classes} classes "
        f"({names}) in {time.perf_counter() - started:.1f}s"
        + (f"; long-tailed x{data_params.imbalance_ratio:g}" if data_params.imbalance_ratio > 1 else "")
        + (f"; {flipped} training labels flipped" if flipped else "")
    )
    if num_classes > SAMPLE_ROWS:
        console.print(
            f"{SAMPLES_FIGURE} draws the first {SAMPLE_ROWS} of {num_classes} classes; not drawn: "
            + ", ".join(shown(name) for name in data.classes[SAMPLE_ROWS:]),
            markup=False,
            highlight=False,
        )
    return data
