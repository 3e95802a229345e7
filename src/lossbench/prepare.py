"""Stage prepare: materialise the chosen dataset as uint8 tensors under data/prepared."""

from __future__ import annotations

import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt
import numpy as np
from rich.console import Console

from lossbench import synthetic
from lossbench.cifar10 import read_cifar10
from lossbench.params import Params
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


def prepare(params: Params, root: Path, console: Console) -> PreparedData:
    started = time.perf_counter()
    data_params = params.data
    if data_params.dataset == "synthetic":
        config = data_params.synthetic
        train = synthetic.generate("train", config.train_size, config.seed, config.noise)
        test = synthetic.generate("test", config.test_size, config.seed, config.noise)
        data = PreparedData(*train, *test, classes=synthetic.CLASSES)
    else:
        cifar_root = root / data_params.cifar10.root  # an absolute root replaces the project root
        data = PreparedData(*read_cifar10(cifar_root, data_params.cifar10.download))
    save_prepared(data, root / PREPARED_DIR)
    counts = data.class_counts()
    write_json(root / CLASS_COUNTS_FILE, {"dataset": data_params.dataset, **counts})
    draw_samples(data, root / SAMPLES_FIGURE)
    console.print(
        f"[bold]prepare[/]: {data_params.dataset}, {len(data.train_labels)} train / "
        f"{len(data.test_labels)} test images of {len(data.classes)} classes "
        f"({', '.join(data.classes)}) in {time.perf_counter() - started:.1f}s"
    )
    return data
