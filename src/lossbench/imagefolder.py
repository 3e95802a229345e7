"""Your own images in torchvision's ImageFolder layout (one folder per class).

Every image is decoded, converted to 8-bit RGB and resized to image_size x
image_size. Files that cannot be read are listed by path and skipped; if more
than max_bad_fraction of them are bad, the stage stops before any training.

The folders are walked here rather than by torchvision's ImageFolder, which
follows folder links (a link back up the tree repeats every image, under
several labels) and makes a class of every folder, hidden ones included.
Links to folders are refused anywhere on the way to an image, the image
roots included: DVC does not look inside them, so a change there would not
rerun prepare. Anything that is not a regular file (a FIFO, a socket, a
device, a link to one) is never opened: reading a FIFO waits forever.
"""

from __future__ import annotations

import math
import os
import stat
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

from lossbench.errors import DatasetUnavailable, file_kind, is_text, shown
from lossbench.params import RAW_DIR, DataParams, ImageFolderParams
from lossbench.storage import PreparedData

SHOWN_BAD_FILES = 20
# The extensions torchvision's ImageFolder reads.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# Folders that tools leave beside images: never classes, never searched.
IGNORED_FOLDERS = frozenset({"__MACOSX"})
RAW_FOLDER = RAW_DIR / "imagefolder"

# How pixels wider than 8 bits become 8-bit, so that an image looks as it does
# in a viewer, the same way for every image of a dataset:
# - 16-bit integer (modes I;16*, and mode I from a file of at most 16 bits per
#   sample, e.g. a 16-bit PGM, which Pillow widens to 0..65535): v * 255 / 65535,
#   rounded (65535 -> 255, 32896 -> 128).
# - float (mode F) with every pixel in 0..1: v * 255, rounded (0 black, 1 white).
# - refused by name, as an unreadable file: a 32-bit integer image (a TIFF that
#   declares 32 bits per sample) or a mode-I image with values outside 0..65535,
#   and a float image with a pixel outside 0..1, NaN or infinite. Neither has an
#   agreed white: the type's maximum (2**31 - 1) makes ordinary counts black, and
#   each image's own maximum would brighten every image by a different factor.
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
SIXTEEN_BIT_MAX = 65535
READ_MODES = "8-bit, 16-bit integer, or float in 0..1"
TIFF_BITS_PER_SAMPLE = 258
# Images with more pixels are refused by name before their pixels are decoded:
# a 140 KB PNG can declare 12000 x 12000 pixels, and decoding it took 790 MB.
# This is PIL's own warning threshold (1 GiB / 4 / 3: a quarter GiB of RGB);
# every image is shrunk to image_size anyway.
MAX_PIXELS = 89_478_485


class UnsupportedImage(ValueError):
    """An image lossbench will not convert to 8 bits; the message says why."""


def shown_path(path: Path | str) -> str:
    """A path for a message: each of its parts quoted with `shown`, so a long
    path keeps its file name (`shown` cuts the end of what it is given)."""
    return "/".join(shown(part) for part in str(path).split("/"))


def _skipped(name: str) -> bool:
    return name.startswith(".") or name in IGNORED_FOLDERS


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS)


def not_regular(path: Path) -> str | None:
    """What `path` is if it cannot be read as a file (a FIFO, a socket, a device,
    a link to one, a broken link), else None. Nothing is opened."""
    try:
        status = os.stat(path)  # follows a link: a link to a regular file is one
    except OSError as error:
        if os.path.islink(path):
            return "a broken link"
        return error.strerror or error.__class__.__name__
    if stat.S_ISREG(status.st_mode):
        return None
    kind = file_kind(status.st_mode)
    return f"a link to {kind}" if os.path.islink(path) else kind


def permission_denied(folder: Path | str) -> DatasetUnavailable:
    return DatasetUnavailable(
        f"{shown_path(folder)}: permission denied; lossbench cannot list this folder "
        "(give yourself read and search permission: chmod u+rx, or remove it)"
    )


def list_folder(folder: Path) -> list[os.DirEntry[str]]:
    """The entries of `folder`, sorted by name; unreadable folders named."""
    try:
        with os.scandir(folder) as entries:
            return sorted(entries, key=lambda entry: entry.name)
    except PermissionError:
        raise permission_denied(folder) from None
    except OSError as error:
        raise DatasetUnavailable(
            f"{shown_path(folder)}: cannot list it ({error.strerror or error})"
        ) from None


def _refuse_folder_link(path: Path) -> DatasetUnavailable:
    return DatasetUnavailable(
        f"{shown_path(path)} is a link to a folder; lossbench does not follow folder links "
        "(one that points back up the tree repeats images under several labels). "
        "Copy the images in, or remove the link"
    )


@dataclass
class ClassFiles:
    """The files of one class folder, in walk order."""

    images: list[Path] = field(default_factory=list)  # regular files with an image extension
    not_regular: list[str] = field(default_factory=list)  # image names that are not files, with why


def _refuse_link_outside(path: Path, inside: Path) -> None:
    """Refuse a link to a file that lies outside `inside` (data/raw/imagefolder):
    lossbench reads only images inside it, as it follows no folder link."""
    if Path(os.path.realpath(path)).is_relative_to(os.path.realpath(inside)):
        return
    raise DatasetUnavailable(
        f"{shown_path(path)} is a link to a file outside {RAW_FOLDER} (to {shown_path(os.readlink(path))}); "
        f"lossbench reads only images that lie inside {RAW_FOLDER}. Copy the image in, or remove the link"
    )


def _walk(folder: Path, found: ClassFiles, inside: Path) -> None:
    # The order os.walk gives top-down: a folder's files by name, then each subfolder's tree.
    subfolders = []
    for entry in list_folder(folder):
        path = Path(folder) / entry.name
        if entry.is_dir():  # follows links, as os.walk does
            if entry.is_symlink():
                raise _refuse_folder_link(path)
            if not _skipped(entry.name):
                subfolders.append(path)
        elif _is_image_name(entry.name):
            kind = None if entry.is_file(follow_symlinks=False) else not_regular(path)
            if kind is None:
                if entry.is_symlink():  # a link to a regular file, which would be read
                    _refuse_link_outside(path, inside)
                found.images.append(path)
            else:
                found.not_regular.append(f"{shown_path(path)} ({kind}, not a regular file: not read)")
    for subfolder in subfolders:
        _walk(subfolder, found, inside)


def class_files(class_folder: Path, inside: Path) -> ClassFiles:
    """Image files under class_folder (recursively, sorted); folder links, and
    links to files outside `inside` (data/raw/imagefolder), are refused."""
    found = ClassFiles()
    _walk(class_folder, found, inside)
    return found


def _declared_bits(image: Image.Image) -> int | None:
    """Bits per sample as the file declares them, where its format says (TIFF)."""
    tags: Any = getattr(image, "tag_v2", None)
    bits = tags.get(TIFF_BITS_PER_SAMPLE) if tags is not None else None
    if isinstance(bits, tuple):
        bits = max(bits, default=None)
    return int(bits) if isinstance(bits, int) else None


def _grey(pixels: np.ndarray, scale: float) -> Image.Image:
    grey = np.clip(np.rint(pixels * scale), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, mode="L").convert("RGB")


def to_rgb8(image: Image.Image) -> Image.Image:
    """8-bit RGB; wider pixels are scaled, never clipped, or refused (see the rule above)."""
    if image.mode in SIXTEEN_BIT_MODES:
        return _grey(np.asarray(image, dtype=np.float64), 255.0 / SIXTEEN_BIT_MAX)
    if image.mode == "I":
        bits = _declared_bits(image)
        if bits is not None and bits > 16:
            raise UnsupportedImage(f"{bits}-bit integer pixels; lossbench reads {READ_MODES}")
        wide = np.asarray(image, dtype=np.float64)
        if wide.size and (wide.min() < 0 or wide.max() > SIXTEEN_BIT_MAX):
            raise UnsupportedImage(
                f"integer pixels from {wide.min():.0f} to {wide.max():.0f}, outside 16 bits; "
                f"lossbench reads {READ_MODES}"
            )
        return _grey(wide, 255.0 / SIXTEEN_BIT_MAX)
    if image.mode == "F":
        floats = np.asarray(image, dtype=np.float64)
        if not np.all(np.isfinite(floats)):
            raise UnsupportedImage(f"float pixels that are NaN or infinite; lossbench reads {READ_MODES}")
        if floats.size and (floats.min() < 0 or floats.max() > 1):
            raise UnsupportedImage(
                f"float pixels from {floats.min():.4g} to {floats.max():.4g}, outside 0..1; "
                f"lossbench reads {READ_MODES}"
            )
        return _grey(floats, 255.0)
    return image.convert("RGB")


def image_root(raw: Path, relative: str, key: str) -> Path:
    """data/raw/imagefolder/RELATIVE, refused if it or a folder on the way to it is a link."""
    folder = raw
    for part in PurePosixPath(relative).parts:
        folder = folder / part
        if folder.is_symlink():
            target = shown_path(os.readlink(folder))
            raise DatasetUnavailable(
                f"data.imagefolder.{key}: {shown_path(folder)} is a link (to {target}); image folders must "
                f"lie inside {RAW_FOLDER}, not be linked there: DVC does not look inside a linked folder, "
                "so a change to its images would not rerun prepare. Move or copy the images in"
            )
    if not folder.is_dir():
        raise DatasetUnavailable(f"data.imagefolder.{key}: {shown_path(folder)}: image folder not found")
    return folder


def class_names(folder: Path) -> tuple[str, ...]:
    """The class folders of an image folder, sorted (hidden and tool folders skipped)."""
    if not folder.is_dir():
        raise DatasetUnavailable(f"{shown_path(folder)}: image folder not found")
    classes = []
    for entry in list_folder(folder):
        if entry.is_dir() and not _skipped(entry.name):
            if entry.is_symlink():
                raise DatasetUnavailable(
                    f"{shown_path(folder / entry.name)} is a link to a folder; copy the images in instead"
                )
            if not is_text(entry.name):
                raise DatasetUnavailable(
                    f"{shown_path(folder / entry.name)}: class folder name is not UTF-8 text; rename it "
                    "(a class name is written to the report, its figures and JSON files)"
                )
            classes.append(entry.name)
    if not classes:
        raise DatasetUnavailable(
            f"{shown_path(folder)}: no class folders in it (expected one folder of images per class)"
        )
    return tuple(classes)


def no_images(class_folder: Path) -> DatasetUnavailable:
    return DatasetUnavailable(
        f"{shown_path(class_folder)}: class folder with no readable images; add images or remove the folder"
    )


def _above(fraction: float) -> str:
    """The smallest number of two decimals above `fraction`."""
    return f"{(math.floor(fraction * 100) + 1) / 100:g}"


def _below(fraction: float) -> str:
    """The largest number of two decimals below `fraction`."""
    return f"{(math.ceil(fraction * 100) - 1) / 100:g}"


def split_problem(per_class: Mapping[str, int], test_fraction: float) -> str | None:
    """Why splitting these class sizes by test_fraction (as `read` does) leaves
    a class with no image on one side, or None when every class has both."""
    no_test = [name for name, n in per_class.items() if round(test_fraction * n) == 0]
    no_train = [name for name, n in per_class.items() if round(test_fraction * n) == n]
    if not (no_test or no_train):
        return None
    side, names = ("test", no_test) if no_test else ("train", no_train)
    total = len(per_class)
    which = f"all {total} classes" if len(names) == total else f"{len(names)} of {total} classes"
    listed = ", ".join(f"{shown(name, 40)}: {per_class[name]}" for name in names[:3])
    listed += ", …" if len(names) > 3 else ""
    smallest = min(per_class.values())
    if smallest < 2:
        fix = "a class of 1 image cannot be split: add images"
    else:
        # round(f * n) is at least 1 and at most n - 1 for every class once f * n
        # lies strictly between 0.5 and n - 0.5 for the smallest class.
        low, high = _above(0.5 / smallest), _below(1 - 0.5 / smallest)
        fix = (
            f"use a test_fraction between {low} and {high} (the smallest class has {smallest}), or add images"
        )
    return (
        f"data.imagefolder.test_fraction: {test_fraction:g} leaves {which} with no {side} image "
        f"(images per class: {listed}); every class needs an image on each side: {fix}"
    )


def check_folders(config: ImageFolderParams, raw: Path) -> int:
    """Everything about the image folders that can be known without decoding an
    image (for validate): roots, links, permissions, class folders, the split.
    Returns the number of classes."""
    sources: dict[str, str | None] = (
        {"root": config.root}
        if config.root
        else {"train_root": config.train_root, "test_root": config.test_root}
    )
    found: dict[str, tuple[str, ...]] = {}
    for key, relative in sources.items():
        assert relative is not None  # params validation guarantees a source
        folder = image_root(raw, relative, key)
        classes = found[key] = class_names(folder)
        counts = {}
        for name in classes:
            files = class_files(folder / name, raw)
            if not files.images:
                raise no_images(folder / name)
            counts[name] = len(files.images)
        if config.root and len(classes) >= 2 and (problem := split_problem(counts, config.test_fraction)):
            raise DatasetUnavailable(problem)
    if not config.root and found["train_root"] != found["test_root"]:
        raise _classes_differ(found["train_root"], found["test_root"])
    return len(next(iter(found.values())))


def _classes_differ(train: tuple[str, ...], test: tuple[str, ...]) -> DatasetUnavailable:
    return DatasetUnavailable(
        f"data.imagefolder: train classes {shown(list(train))} and test classes {shown(list(test))} differ"
    )


def _resize(image: Image.Image, size: int) -> Image.Image:
    # What torchvision's Resize((size, size)) does to a PIL image.
    return image.resize((size, size), Image.Resampling.BILINEAR)


def _check_pixels(image: Image.Image) -> None:
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise UnsupportedImage(
            f"{width}x{height} = {width * height:,} pixels, more than the {MAX_PIXELS:,} lossbench reads; "
            "shrink it"
        )


def _why_unreadable(error: Exception) -> str:
    if isinstance(error, Image.DecompressionBombError):  # PIL refuses past twice its threshold
        return f"more than twice the {MAX_PIXELS:,} pixels lossbench reads; shrink it"
    if isinstance(error, UnsupportedImage):
        return str(error)
    if isinstance(error, PermissionError):
        return "permission denied"
    return error.__class__.__name__


def _read_folder(
    folder: Path, size: int, raw: Path
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], list[str]]:
    """Images (N, 3, size, size) uint8, labels, class names and the unreadable files."""
    classes = class_names(folder)
    images, labels, bad = [], [], []
    for label, name in enumerate(classes):
        read_here = 0
        files = class_files(folder / name, raw)
        bad += files.not_regular
        for path in files.images:
            try:
                with warnings.catch_warnings():
                    # PIL's warning names no file: the size is checked below, by name,
                    # before any pixel is decoded.
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    with Image.open(path) as image:
                        _check_pixels(image)
                        pixels = np.asarray(_resize(to_rgb8(image), size), dtype=np.uint8)
            except Exception as error:  # PIL raises many kinds for damaged files
                bad.append(f"{shown_path(path)} ({_why_unreadable(error)})")
                continue
            images.append(pixels.transpose(2, 0, 1))
            labels.append(label)
            read_here += 1
        if read_here == 0:
            raise no_images(folder / name)
    return np.stack(images), np.asarray(labels, dtype=np.int64), classes, bad


def _check_bad(bad: list[str], total: int, limit: float) -> None:
    if total and len(bad) / total > limit:
        listed = "\n  ".join(bad[:SHOWN_BAD_FILES])
        more = f"\n  ... and {len(bad) - SHOWN_BAD_FILES} more" if len(bad) > SHOWN_BAD_FILES else ""
        raise DatasetUnavailable(
            f"{len(bad)} of {total} images could not be read, more than "
            f"data.imagefolder.max_bad_fraction={limit:g}:\n  {listed}{more}"
        )


def read(data_params: DataParams, raw: Path) -> PreparedData:
    """The images under `raw` (data/raw/imagefolder), split per params."""
    config, seed = data_params.imagefolder, data_params.seed
    size = config.image_size
    if config.root:
        images, labels, classes, bad = _read_folder(image_root(raw, config.root, "root"), size, raw)
        _check_bad(bad, len(labels) + len(bad), config.max_bad_fraction)
        per_class = np.bincount(labels, minlength=len(classes))
        if len(classes) >= 2 and (
            problem := split_problem(
                dict(zip(classes, per_class.tolist(), strict=True)), config.test_fraction
            )
        ):
            raise DatasetUnavailable(problem)
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
        train_x, train_y, classes, bad = _read_folder(
            image_root(raw, config.train_root, "train_root"), size, raw
        )
        test_x, test_y, test_classes, test_bad = _read_folder(
            image_root(raw, config.test_root, "test_root"), size, raw
        )
        if test_classes != classes:
            raise _classes_differ(classes, test_classes)
        bad += test_bad
        _check_bad(bad, len(train_y) + len(test_y) + len(bad), config.max_bad_fraction)
        data = PreparedData(train_x, train_y, test_x, test_y, classes, tuple(bad))
    if len(data.train_labels) == 0 or len(data.test_labels) == 0:
        raise DatasetUnavailable("data.imagefolder: no readable images on the train or the test side")
    return data
