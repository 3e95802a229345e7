"""Your own images in torchvision's ImageFolder layout (one folder per class).

Every image is decoded, converted to RGB and resized to image_size x
image_size. Files that cannot be read are listed by path and skipped; if more
than max_bad_fraction of them are bad, the stage stops before any training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from torchvision import transforms
from torchvision.datasets import ImageFolder

from lossbench.errors import DatasetUnavailable
from lossbench.params import ImageFolderParams

SHOWN_BAD_FILES = 20


def _read_folder(folder: Path, size: int) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], list[str]]:
    """Images (N, 3, size, size) uint8, labels, class names and the unreadable files."""
    if not folder.is_dir():
        raise DatasetUnavailable(f"{folder}: image folder not found")
    try:
        # Lists files only; decoding happens below, one file at a time.
        listing = ImageFolder(str(folder), allow_empty=True)
    except (FileNotFoundError, OSError) as error:
        raise DatasetUnavailable(f"{folder}: {error}") from None
    resize = transforms.Resize((size, size))
    images, labels, bad = [], [], []
    for path, label in listing.samples:
        try:
            with Image.open(path) as image:
                pixels = np.asarray(resize(image.convert("RGB")), dtype=np.uint8)
        except Exception as error:  # PIL raises many kinds for damaged files
            bad.append(f"{path} ({error.__class__.__name__})")
            continue
        images.append(pixels.transpose(2, 0, 1))
        labels.append(label)
    stacked = np.stack(images) if images else np.empty((0, 3, size, size), dtype=np.uint8)
    return stacked, np.asarray(labels, dtype=np.int64), tuple(listing.classes), bad


def _check_bad(bad: list[str], total: int, limit: float) -> None:
    if total and len(bad) / total > limit:
        shown = "\n  ".join(bad[:SHOWN_BAD_FILES])
        more = f"\n  ... and {len(bad) - SHOWN_BAD_FILES} more" if len(bad) > SHOWN_BAD_FILES else ""
        raise DatasetUnavailable(
            f"{len(bad)} of {total} images could not be read, more than "
            f"data.imagefolder.max_bad_fraction={limit:g}:\n  {shown}{more}"
        )


def read_imagefolder(
    config: ImageFolderParams, root: Path, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...], list[str]]:
    """Train images, train labels, test images, test labels, class names, skipped files."""
    size = config.image_size
    if config.root:
        images, labels, classes, bad = _read_folder(root / config.root, size)
        _check_bad(bad, len(labels) + len(bad), config.max_bad_fraction)
        # Split each class by test_fraction, so both sides keep the class mix.
        rng = np.random.default_rng(seed)
        test_mask = np.zeros(len(labels), dtype=bool)
        for label in range(len(classes)):
            members = rng.permutation(np.flatnonzero(labels == label))
            test_mask[members[: round(config.test_fraction * len(members))]] = True
        train = (images[~test_mask], labels[~test_mask])
        test = (images[test_mask], labels[test_mask])
    else:
        assert config.train_root and config.test_root  # params validation guarantees it
        train_x, train_y, classes, bad = _read_folder(root / config.train_root, size)
        test_x, test_y, test_classes, test_bad = _read_folder(root / config.test_root, size)
        train, test = (train_x, train_y), (test_x, test_y)
        if test_classes != classes:
            raise DatasetUnavailable(
                f"data.imagefolder: train classes {list(classes)} and test classes {list(test_classes)} differ"
            )
        bad += test_bad
        _check_bad(bad, len(train[1]) + len(test[1]) + len(bad), config.max_bad_fraction)
    if len(train[1]) == 0 or len(test[1]) == 0:
        raise DatasetUnavailable("data.imagefolder: no readable images on the train or the test side")
    return train[0], train[1], test[0], test[1], classes, bad
