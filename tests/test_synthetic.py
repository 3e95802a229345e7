import hashlib
from pathlib import Path

import numpy as np
from rich.console import Console

from lossbench import synthetic
from lossbench.params import parse_params
from lossbench.prepare import prepare
from lossbench.storage import CLASS_COUNTS_FILE, PREPARED_DIR, load_prepared


def _params(seed: int, train_size: int = 200, test_size: int = 50) -> object:
    return parse_params(
        {
            "data": {
                "dataset": "synthetic",
                "seed": seed,
                "synthetic": {"train_size": train_size, "test_size": test_size},
            },
            "seeds": [1],
            "losses": {"ce": {"kind": "ce"}},
        }
    )


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path: Path) -> None:
    quiet = Console(quiet=True)
    prepare(_params(3), tmp_path / "a", quiet)  # type: ignore[arg-type]
    prepare(_params(3), tmp_path / "b", quiet)  # type: ignore[arg-type]
    prepare(_params(4), tmp_path / "c", quiet)  # type: ignore[arg-type]
    a, b, c = (_digests(tmp_path / run / PREPARED_DIR) for run in "abc")
    assert a == b
    assert a["train_images.npy"] != c["train_images.npy"]
    assert a["test_images.npy"] != c["test_images.npy"]


def test_shapes_classes_and_counts(tmp_path: Path) -> None:
    prepare(_params(0, train_size=230, test_size=70), tmp_path, Console(quiet=True))  # type: ignore[arg-type]
    data = load_prepared(tmp_path / PREPARED_DIR)
    assert data.train_images.shape == (230, 3, 32, 32) and data.train_images.dtype == np.uint8
    assert data.test_images.shape == (70, 3, 32, 32)
    assert data.classes == synthetic.CLASSES and len(set(data.classes)) == 10
    assert np.bincount(data.train_labels).tolist() == [23] * 10
    assert np.bincount(data.test_labels).tolist() == [7] * 10
    counts = (tmp_path / CLASS_COUNTS_FILE).read_text()
    assert '"disc": 23' in counts and '"checker": 7' in counts


def test_train_and_test_splits_differ_and_images_are_not_constant() -> None:
    train, _ = synthetic.generate("train", 100, 0, 0.2)
    test, _ = synthetic.generate("test", 100, 0, 0.2)
    assert not np.array_equal(train, test)
    assert train.std(axis=(1, 2, 3)).min() > 10  # every image has structure, not a flat colour


def test_class_is_not_given_away_by_mean_colour() -> None:
    # Classes differ in spatial structure, not in a pixel statistic: per-class
    # mean colours stay within a few grey levels of each other.
    images, labels = synthetic.generate("train", 3000, 0, 0.2)
    means = np.stack([images[labels == k].mean(axis=(0, 2, 3)) for k in range(10)])
    assert np.ptp(means, axis=0).max() < 12
