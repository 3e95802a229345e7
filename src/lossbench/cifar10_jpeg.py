"""CIFAR-10's real images from the JPEG copy shipped in data/raw/cifar10_jpeg.

The archive holds train/<class>/NNNN.jpg (5,000 per class) and
test/<class>/NNNN.jpg (1,000 per class); its README gives the provenance,
citation and checksum. The reader takes the first `train_per_class` and
`test_per_class` files of each class in file-name order (a fixed,
class-balanced subset) straight from the archive: nothing is extracted, and
only the archive whose checksum is committed here is read. Classes are in
alphabetical order and images class by class, as the imagefolder reader orders
the same files extracted, so the whole set prepares to the same arrays.
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from lossbench.errors import DatasetUnavailable
from lossbench.params import DataParams
from lossbench.storage import PreparedData

ARCHIVE_NAME = "cifar10-jpeg.tar.gz"
ARCHIVE_SHA256 = "45b041e867f5a40f79bfde38d3dd1fd511103d50068c1afecf6445e25234d4db"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_SIZE = 32
MEMBER = re.compile(r"\A(train|test)/([a-z]+)/(\d+)\.jpg\Z")


def _check_archive(archive: Path) -> None:
    if not archive.is_file():
        raise DatasetUnavailable(
            f"{archive} is missing: it is part of the repository; `git checkout -- {archive}` restores it"
        )
    with archive.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    if digest != ARCHIVE_SHA256:
        raise DatasetUnavailable(
            f"{archive}: checksum {digest[:12]}… does not match the committed CIFAR-10 JPEG copy "
            f"({ARCHIVE_SHA256[:12]}…); `git checkout -- {archive}` restores it"
        )


def _decode(data: bytes, name: str) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    if pixels.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise DatasetUnavailable(f"{name} in {ARCHIVE_NAME}: {pixels.shape[1]}x{pixels.shape[0]}, not 32x32")
    return pixels.transpose(2, 0, 1)


def read(data_params: DataParams, raw: Path) -> PreparedData:
    """The first N images per class of each split, from the archive in `raw`."""
    archive = raw / ARCHIVE_NAME
    _check_archive(archive)
    per_class = {
        "train": data_params.cifar10_jpeg.train_per_class,
        "test": data_params.cifar10_jpeg.test_per_class,
    }
    with tarfile.open(archive, "r:gz") as tar:
        chosen: dict[tuple[str, str], list[tarfile.TarInfo]] = {}
        for member in tar.getmembers():
            match = MEMBER.match(member.name)
            if match and member.isfile() and match[2] in CLASSES:
                chosen.setdefault((match[1], match[2]), []).append(member)
        arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for split, count in per_class.items():
            images, labels = [], []
            for label, name in enumerate(CLASSES):
                members = sorted(chosen.get((split, name), []), key=lambda member: member.name)[:count]
                for member in members:
                    handle = tar.extractfile(member)
                    assert handle is not None  # a regular file (checked above)
                    images.append(_decode(handle.read(), member.name))
                labels += [label] * len(members)
            arrays[split] = (np.stack(images), np.asarray(labels, dtype=np.int64))
    return PreparedData(*arrays["train"], *arrays["test"], CLASSES)
