"""The default dataset: CIFAR-10's JPEG copy shipped in data/raw/cifar10_jpeg."""

import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from lossbench import cifar10_jpeg, imagefolder
from lossbench.cifar10 import DATA_FILTER  # tarfile's "data" filter where Python has one
from lossbench.errors import DatasetUnavailable
from lossbench.params import DataParams

SHIPPED = Path(__file__).resolve().parents[1] / "data" / "raw" / "cifar10_jpeg"


def _params(train: int, test: int) -> DataParams:
    return DataParams.model_validate(
        {"dataset": "cifar10_jpeg", "cifar10_jpeg": {"train_per_class": train, "test_per_class": test}}
    )


def test_the_archive_is_shipped_with_its_checksum_and_citation() -> None:
    readme = (SHIPPED / "README.md").read_text()
    assert cifar10_jpeg.ARCHIVE_SHA256 in readme and "Krizhevsky" in readme
    assert (SHIPPED / cifar10_jpeg.ARCHIVE_NAME).stat().st_size > 19_000_000


def test_a_fixed_class_balanced_subset_equal_to_the_extracted_images(tmp_path: Path) -> None:
    data = cifar10_jpeg.read(_params(7, 3), SHIPPED)
    assert data.classes == cifar10_jpeg.CLASSES
    assert data.train_images.shape == (70, 3, 32, 32) and data.test_images.shape == (30, 3, 32, 32)
    assert np.bincount(data.train_labels).tolist() == [7] * 10
    assert np.bincount(data.test_labels).tolist() == [3] * 10
    # The same files extracted and read as an image folder give the same arrays.
    with tarfile.open(SHIPPED / cifar10_jpeg.ARCHIVE_NAME) as tar:
        wanted = [
            member
            for member in tar.getmembers()
            if member.isfile() and int(Path(member.name).stem) < (7 if member.name.startswith("train") else 3)
        ]
        tar.extractall(tmp_path, members=wanted, **DATA_FILTER)
    folders = DataParams.model_validate(
        {"dataset": "imagefolder", "imagefolder": {"train_root": "train", "test_root": "test"}}
    )
    extracted = imagefolder.read(folders, tmp_path)
    assert extracted.classes == data.classes
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        assert np.array_equal(getattr(extracted, name), getattr(data, name)), name


def test_a_changed_archive_is_refused_by_its_checksum(tmp_path: Path) -> None:
    shutil.copy(SHIPPED / cifar10_jpeg.ARCHIVE_NAME, tmp_path)
    with (tmp_path / cifar10_jpeg.ARCHIVE_NAME).open("r+b") as handle:
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 1]))
    with pytest.raises(
        DatasetUnavailable, match=r"checksum .* does not match the committed CIFAR-10 JPEG copy"
    ):
        cifar10_jpeg.read(_params(1, 1), tmp_path)
    with pytest.raises(DatasetUnavailable, match=r"is missing: it is part of the repository"):
        cifar10_jpeg.read(_params(1, 1), tmp_path / "elsewhere")


@pytest.mark.parametrize(("key", "value"), [("train_per_class", 5001), ("test_per_class", 0)])
def test_subset_sizes_beyond_the_set_are_refused(key: str, value: int) -> None:
    with pytest.raises(ValueError, match=key):
        DataParams.model_validate({"cifar10_jpeg": {key: value}})
