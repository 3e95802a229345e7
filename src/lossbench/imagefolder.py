"""Your own images in torchvision's ImageFolder layout (one folder per class).

Every image is decoded, converted to 8-bit RGB and resized to image_size x
image_size. Files that cannot be read are listed by path and skipped; if more
than max_bad_fraction of them are bad, the stage stops before any training.

The folders are walked here rather than by torchvision's ImageFolder, which
follows folder links (a link back up the tree repeats every image, under
several labels) and makes a class of every folder, hidden ones included.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from lossbench.errors import DatasetUnavailable
from lossbench.params import DataParams
from lossbench.storage import PreparedData

SHOWN_BAD_FILES = 20
# The extensions torchvision's ImageFolder reads.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# Folders that tools leave beside images: never classes, never searched.
IGNORED_FOLDERS = frozenset({"__MACOSX"})
# PIL modes of 16- and 32-bit integer images; convert("RGB") would clip them to 255.
WIDE_INTEGER_MODES = {"I;16": 65535, "I;16B": 65535, "I;16L": 65535, "I;16N": 65535, "I": 65535}


def _skipped(name: str) -> bool:
    return name.startswith(".") or name in IGNORED_FOLDERS


def _image_files(class_folder: Path) -> list[Path]:
    """Image files under class_folder (recursively, sorted); folder links are refused."""
    found = []
    for folder, subfolders, files in os.walk(class_folder):
        for sub in subfolders:
            if os.path.islink(os.path.join(folder, sub)):
                raise DatasetUnavailable(
                    f"{Path(folder) / sub} is a link to a folder; lossbench does not follow folder links "
                    "(one that points back up the tree repeats images under several labels). "
                    "Copy the images in, or remove the link"
                )
        subfolders[:] = sorted(sub for sub in subfolders if not _skipped(sub))
        found += [
            Path(folder) / name
            for name in sorted(files)
            if not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS)
        ]
    return found


def to_rgb8(image: Image.Image) -> Image.Image:
    """8-bit RGB, with 16-bit grey images scaled rather than clipped."""
    if image.mode in WIDE_INTEGER_MODES:
        wide = np.asarray(image, dtype=np.float64)
        grey = np.clip(np.rint(wide * (255.0 / WIDE_INTEGER_MODES[image.mode])), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    return image.convert("RGB")


def class_names(folder: Path) -> tuple[str, ...]:
    """The class folders of an image folder, sorted (hidden and tool folders skipped)."""
    if not folder.is_dir():
        raise DatasetUnavailable(f"{folder}: image folder not found")
    classes = tuple(
        sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and not _skipped(entry.name))
    )
    if not classes:
        raise DatasetUnavailable(
            f"{folder}: no class folders in it (expected one folder of images per class)"
        )
    return classes


def _resize(image: Image.Image, size: int) -> Image.Image:
    # What torchvision's Resize((size, size)) does to a PIL image.
    return image.resize((size, size), Image.Resampling.BILINEAR)


def _read_folder(folder: Path, size: int) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], list[str]]:
    """Images (N, 3, size, size) uint8, labels, class names and the unreadable files."""
    classes = class_names(folder)
    images, labels, bad = [], [], []
    for label, name in enumerate(classes):
        if (folder / name).is_symlink():
            raise DatasetUnavailable(f"{folder / name} is a link to a folder; copy the images in instead")
        read_here = 0
        for path in _image_files(folder / name):
            try:
                with Image.open(path) as image:
                    pixels = np.asarray(_resize(to_rgb8(image), size), dtype=np.uint8)
            except Exception as error:  # PIL raises many kinds for damaged files
                bad.append(f"{path} ({error.__class__.__name__})")
                continue
            images.append(pixels.transpose(2, 0, 1))
            labels.append(label)
            read_here += 1
        if read_here == 0:
            raise DatasetUnavailable(
                f"{folder / name}: class folder with no readable images; add images or remove the folder"
            )
    return np.stack(images), np.asarray(labels, dtype=np.int64), classes, bad


def _check_bad(bad: list[str], total: int, limit: float) -> None:
    if total and len(bad) / total > limit:
        shown = "\n  ".join(bad[:SHOWN_BAD_FILES])
        more = f"\n  ... and {len(bad) - SHOWN_BAD_FILES} more" if len(bad) > SHOWN_BAD_FILES else ""
        raise DatasetUnavailable(
            f"{len(bad)} of {total} images could not be read, more than "
            f"data.imagefolder.max_bad_fraction={limit:g}:\n  {shown}{more}"
        )


def read(data_params: DataParams, raw: Path) -> PreparedData:
    """The images under `raw` (data/raw/imagefolder), split per params."""
    config, seed = data_params.imagefolder, data_params.seed
    size = config.image_size
    if config.root:
        images, labels, classes, bad = _read_folder(raw / config.root, size)
        _check_bad(bad, len(labels) + len(bad), config.max_bad_fraction)
        # Split each class by test_fraction, so both sides keep the class mix.
        rng = np.random.default_rng(seed)
        test_mask = np.zeros(len(labels), dtype=bool)
        for label in range(len(classes)):
            members = rng.permutation(np.flatnonzero(labels == label))
            test_mask[members[: round(config.test_fraction * len(members))]] = True
        data = PreparedData(
            images[~test_mask], labels[~test_mask], images[test_mask], labels[test_mask], classes, tuple(bad)
        )
    else:
        assert config.train_root and config.test_root  # params validation guarantees it
        train_x, train_y, classes, bad = _read_folder(raw / config.train_root, size)
        test_x, test_y, test_classes, test_bad = _read_folder(raw / config.test_root, size)
        if test_classes != classes:
            raise DatasetUnavailable(
                f"data.imagefolder: train classes {list(classes)} and test classes {list(test_classes)} differ"
            )
        bad += test_bad
        _check_bad(bad, len(train_y) + len(test_y) + len(bad), config.max_bad_fraction)
        data = PreparedData(train_x, train_y, test_x, test_y, classes, tuple(bad))
    if len(data.train_labels) == 0 or len(data.test_labels) == 0:
        raise DatasetUnavailable("data.imagefolder: no readable images on the train or the test side")
    return data
