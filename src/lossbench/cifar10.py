"""CIFAR-10 from its official python-batch files, fetched with torchvision's
downloader and verified against the published checksums before unpickling.

The batch files are pickles, so they are read with an unpickler that only
admits the few numpy types those files contain: a tampered file cannot run code.
"""

from __future__ import annotations

import pickle
import tarfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from torchvision.datasets import CIFAR10
from torchvision.datasets.utils import check_integrity, download_url

from lossbench.errors import DatasetUnavailable, shown_repr
from lossbench.params import DataParams
from lossbench.storage import PreparedData

BATCH_FOLDER = CIFAR10.base_folder  # "cifar-10-batches-py"
ARCHIVE_NAME = CIFAR10.filename  # "cifar-10-python.tar.gz"
ARCHIVE_MD5 = CIFAR10.tgz_md5
DOWNLOAD_URL = CIFAR10.url
TRAIN_FILES = tuple(name for name, _ in CIFAR10.train_list)
TEST_FILES = tuple(name for name, _ in CIFAR10.test_list)
META_FILE = CIFAR10.meta["filename"]
# Published md5 of every file in the extracted folder.
OFFICIAL_MD5: Mapping[str, str] = dict(CIFAR10.train_list + CIFAR10.test_list) | {
    META_FILE: CIFAR10.meta["md5"]
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    _ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),  # how protocol-2 pickles store bytes; returns bytes only
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR-10 batch file")
        return super().find_class(module, name)


def _load_batch(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            loaded = _NumpyOnlyUnpickler(handle, encoding="latin1").load()
    except pickle.UnpicklingError as error:
        raise DatasetUnavailable(f"{path}: not a CIFAR-10 batch file ({error})") from None
    # Files written by Python 2 have byte keys; latin1 keeps them as bytes in py3 pickles.
    return {key.decode() if isinstance(key, bytes) else key: value for key, value in loaded.items()}


def _fetch(root: Path, download: bool, url: str, archive_md5: str) -> None:
    """Make root/cifar-10-batches-py exist: extract a local archive, or download one."""
    archive = root / ARCHIVE_NAME
    if not archive.is_file():
        if not download:
            raise DatasetUnavailable(
                f"CIFAR-10 not found: no {root / BATCH_FOLDER} and no {archive}, and "
                "data.cifar10.download is false. Fix: put an extracted cifar-10-batches-py "
                "folder or the cifar-10-python.tar.gz archive in that folder, or set "
                "data.cifar10.download: true on a machine "
                "with network access."
            )
        try:
            download_url(url, str(root), ARCHIVE_NAME, archive_md5)
        except Exception as error:  # urllib raises several kinds; all mean the same here
            raise DatasetUnavailable(
                f"CIFAR-10 not found under {root} and the download from {url} failed "
                f"({error.__class__.__name__}: {error}). Fix: copy an extracted "
                "cifar-10-batches-py folder or cifar-10-python.tar.gz into "
                f"{root}, or run "
                "`dvc repro` where the network reaches the download."
            ) from None
    if not check_integrity(str(archive), archive_md5):
        raise DatasetUnavailable(
            f"{archive}: checksum does not match the official CIFAR-10 archive; delete it and download again"
        )
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(root, members=_plain_members(tar, archive), **DATA_FILTER)
    except FILTER_ERRORS as error:
        raise DatasetUnavailable(f"{archive}: refusing to extract it: {error}") from None


# tarfile's "data" filter (Python 3.11.4 and later) refuses what could escape the folder or
# is not plain data. Python 3.11.0-3.11.3 have none (Debian 12's python3.11 is 3.11.2), so
# _plain_members checks the members on every Python, and the filter is added where there is one.
DATA_FILTER: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
FILTER_ERRORS: tuple[type[Exception], ...] = tuple(
    error for error in (getattr(tarfile, "FilterError", None),) if error is not None
)


def _plain_members(tar: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    """Every member, if each is a file or folder whose path stays inside the extraction
    folder: no absolute path, no `..`, no link or device."""
    members = tar.getmembers()
    for member in members:
        escapes = member.name.startswith("/") or ".." in PurePosixPath(member.name).parts
        if escapes or not (member.isfile() or member.isdir()):
            kind = "a path outside the folder" if escapes else "not a file or folder"
            raise DatasetUnavailable(
                f"{archive}: refusing to extract it: member {shown_repr(member.name)} is {kind}"
            )
    return members


def read(data_params: DataParams, raw: Path) -> PreparedData:
    """CIFAR-10 from `raw` (data/raw/cifar10), downloaded there if allowed and missing."""
    return read_cifar10(raw, data_params.cifar10.download)


def read_cifar10(
    root: Path,
    download: bool = True,
    expected_md5: Mapping[str, str] = OFFICIAL_MD5,
    url: str = DOWNLOAD_URL,
    archive_md5: str = ARCHIVE_MD5,
) -> PreparedData:
    """The official batches in root/cifar-10-batches-py (uint8 NCHW images, int64 labels).

    `expected_md5` maps each batch file to its checksum and `archive_md5` is
    the archive's; tests pass their fixtures' own, everyone else gets the
    official ones.
    """
    folder = root / BATCH_FOLDER
    if not folder.is_dir():
        _fetch(root, download, url, archive_md5)
    for name in (*TRAIN_FILES, *TEST_FILES, META_FILE):
        path = folder / name
        if not path.is_file():
            raise DatasetUnavailable(f"{path}: missing from the CIFAR-10 folder")
        if not check_integrity(str(path), expected_md5[name]):
            raise DatasetUnavailable(f"{path}: checksum does not match the official CIFAR-10 file")

    def split(files: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        batches = [_load_batch(folder / name) for name in files]
        images = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in batches])
        labels = np.concatenate([np.asarray(b["labels"], dtype=np.int64) for b in batches])
        return images.reshape(-1, 3, 32, 32), labels

    train_images, train_labels = split(TRAIN_FILES)
    test_images, test_labels = split(TEST_FILES)
    classes = tuple(_load_batch(folder / META_FILE)["label_names"])
    return PreparedData(train_images, train_labels, test_images, test_labels, classes)
