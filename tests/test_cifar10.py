import hashlib
import io
import pickle
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest

from lossbench.cifar10 import (
    BATCH_FOLDER,
    META_FILE,
    TEST_FILES,
    TRAIN_FILES,
    read_cifar10,
)
from lossbench.errors import DatasetUnavailable

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_fixture(root: Path, per_batch: int = 4) -> dict[str, str]:
    """A tiny CIFAR-10 in its python-batch layout; returns each file's md5."""
    folder = root / BATCH_FOLDER
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for number, name in enumerate((*TRAIN_FILES, *TEST_FILES)):
        batch = {
            "batch_label": f"fixture batch {number}",
            "labels": [int(v) for v in rng.integers(0, 10, per_batch)],
            "data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            "filenames": [f"img_{number}_{i}.png" for i in range(per_batch)],
        }
        with (folder / name).open("wb") as handle:
            pickle.dump(batch, handle, protocol=2)
    with (folder / META_FILE).open("wb") as handle:
        pickle.dump({"label_names": NAMES, "num_cases_per_batch": per_batch, "num_vis": 3072}, handle)
    return {path.name: _md5(path) for path in folder.iterdir()}


def test_reads_the_python_batch_layout(tmp_path: Path) -> None:
    md5 = write_fixture(tmp_path)
    data = read_cifar10(tmp_path, download=False, expected_md5=md5)
    train_x, train_y, test_x, test_y, classes = (
        data.train_images,
        data.train_labels,
        data.test_images,
        data.test_labels,
        data.classes,
    )
    assert train_x.shape == (20, 3, 32, 32) and train_x.dtype == np.uint8
    assert test_x.shape == (4, 3, 32, 32)
    assert train_y.dtype == np.int64 and len(train_y) == 20 and len(test_y) == 4
    assert classes == tuple(NAMES)
    with (tmp_path / BATCH_FOLDER / "data_batch_1").open("rb") as handle:
        first = pickle.load(handle)
    # Rows are 1024 red, then green, then blue values, row-major: CHW.
    np.testing.assert_array_equal(train_x[0], first["data"][0].reshape(3, 32, 32))
    assert train_y[: len(first["labels"])].tolist() == first["labels"]


def test_checksum_mismatch_names_the_file(tmp_path: Path) -> None:
    md5 = write_fixture(tmp_path)
    (tmp_path / BATCH_FOLDER / "data_batch_3").write_bytes(b"tampered")
    with pytest.raises(DatasetUnavailable, match="data_batch_3: checksum does not match"):
        read_cifar10(tmp_path, download=False, expected_md5=md5)


def test_offline_without_a_copy_says_both_fixes(tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailable) as raised:
        read_cifar10(tmp_path / "nothing", download=False)
    message = str(raised.value)
    assert "cifar-10-batches-py" in message and str(tmp_path / "nothing") in message
    assert "download: true" in message


def test_failed_download_says_both_fixes(tmp_path: Path) -> None:
    # Port 9 (discard) on loopback refuses at once: the same path as no network.
    with pytest.raises(DatasetUnavailable) as raised:
        read_cifar10(tmp_path, download=True, url="http://127.0.0.1:9/cifar-10-python.tar.gz")
    message = str(raised.value)
    assert "download" in message and "failed" in message and f"into {tmp_path}" in message
    assert not (tmp_path / "cifar-10-python.tar.gz").exists()


def test_a_batch_file_that_tries_to_run_code_is_refused(tmp_path: Path) -> None:
    write_fixture(tmp_path)
    evil = tmp_path / BATCH_FOLDER / "data_batch_2"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("pwned",))

    evil.write_bytes(pickle.dumps({"data": Payload(), "labels": []}))
    md5 = {p.name: _md5(p) for p in (tmp_path / BATCH_FOLDER).iterdir()}
    with pytest.raises(DatasetUnavailable, match=r"data_batch_2: .*refusing to load builtins\.print"):
        read_cifar10(tmp_path, download=False, expected_md5=md5)


def test_an_archive_that_fails_its_checksum_is_not_opened(tmp_path: Path) -> None:
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"not the official archive")
    with pytest.raises(
        DatasetUnavailable, match=r"cifar-10-python\.tar\.gz: checksum does not match the official"
    ):
        read_cifar10(tmp_path, download=False)
    assert not (tmp_path / BATCH_FOLDER).exists()


@pytest.mark.parametrize(
    ("name", "kind", "said"),
    [
        ("../escaped.txt", tarfile.REGTYPE, "'../escaped.txt' is a path outside the folder"),
        (
            "cifar-10-batches-py/../../escaped.txt",
            tarfile.REGTYPE,
            "'cifar-10-batches-py/../../escaped.txt' is a path outside the folder",
        ),
        ("/tmp/escaped.txt", tarfile.REGTYPE, "'/tmp/escaped.txt' is a path outside the folder"),
        (
            "cifar-10-batches-py/data_batch_1",
            tarfile.SYMTYPE,
            "'cifar-10-batches-py/data_batch_1' is not a file",
        ),
        ("cifar-10-batches-py/zero", tarfile.CHRTYPE, "'cifar-10-batches-py/zero' is not a file or folder"),
    ],
)
def test_archive_members_that_escape_the_folder_are_refused(
    tmp_path: Path, name: str, kind: bytes, said: str
) -> None:
    # On every Python: 3.11.0-3.11.3 have no tarfile filter (lossbench checks the members itself).
    root = tmp_path / "root"
    root.mkdir()
    archive = root / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.addfile(tarfile.TarInfo("cifar-10-batches-py/batches.meta"), io.BytesIO(b""))
        member = tarfile.TarInfo(name)
        member.type, member.linkname, member.size = kind, "/etc/passwd", 7 if kind == tarfile.REGTYPE else 0
        tar.addfile(member, io.BytesIO(b"outside") if kind == tarfile.REGTYPE else None)
    with pytest.raises(DatasetUnavailable, match=f"refusing to extract it: member {re.escape(said)}"):
        read_cifar10(root, download=False, archive_md5=_md5(archive))
    assert sorted(path.name for path in tmp_path.rglob("*")) == ["cifar-10-python.tar.gz", "root"]
