"""Stage prepare: materialise the chosen dataset as uint8 tensors under data/prepared."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from lossbench import synthetic
from lossbench.cifar10 import read_cifar10
from lossbench.params import Params
from lossbench.storage import CLASS_COUNTS_FILE, PREPARED_DIR, PreparedData, save_prepared, write_json


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
    console.print(
        f"[bold]prepare[/]: {data_params.dataset}, {len(data.train_labels)} train / "
        f"{len(data.test_labels)} test images of {len(data.classes)} classes "
        f"({', '.join(data.classes)}) in {time.perf_counter() - started:.1f}s"
    )
    return data
