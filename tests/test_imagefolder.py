import json
import os
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import lossbench, make_project, run_in, write_params
from PIL import Image
from torchvision import transforms

from lossbench.cifar10 import DATA_FILTER  # tarfile's "data" filter where Python has one
from lossbench.imagefolder import _resize

CLASSES = ("cats", "dogs", "owls")
RAW = Path("data/raw/imagefolder")


def _write_folder(folder: Path, per_class: int = 6) -> Path:
    rng = np.random.default_rng(0)
    for label, name in enumerate(CLASSES):
        (folder / name).mkdir(parents=True)
        for index in range(per_class):
            pixels = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
            pixels[..., label] = 255  # a class is a colour, enough to check plumbing
            Image.fromarray(pixels).save(folder / name / f"{index}.png")
    (folder / "dogs" / "broken.png").write_bytes(b"this is not a png")
    return folder


def _params(**imagefolder: object) -> dict[str, object]:
    return {
        "data": {"dataset": "imagefolder", "seed": 0, "imagefolder": {"image_size": 16, **imagefolder}},
        "train": {"epochs": 1, "batch_size": 8, "threads": 1},
        "seeds": [1],
        "losses": {"ce": {"kind": "ce"}},
    }


def test_imagefolder_is_resized_split_and_trains_with_the_adapted_network(tmp_path: Path) -> None:
    _write_folder(tmp_path / RAW / "photos")
    write_params(tmp_path, _params(root="photos", test_fraction=0.34, max_bad_fraction=0.1))
    prepared = run_in(tmp_path, sys.executable, "-m", "lossbench", "prepare")
    assert "skipped 1 unreadable image(s)" in prepared.stdout and "broken.png" in prepared.stdout
    images = np.load(tmp_path / "data" / "prepared" / "train_images.npy")
    test_images = np.load(tmp_path / "data" / "prepared" / "test_images.npy")
    assert images.shape[1:] == (3, 16, 16) and test_images.shape[1:] == (3, 16, 16)
    counts = json.loads((tmp_path / "data" / "class_counts.json").read_text())
    assert counts["train"] == {"cats": 4, "dogs": 4, "owls": 4}  # 6 per class, 2 to test
    assert counts["test"] == {"cats": 2, "dogs": 2, "owls": 2}
    run_in(tmp_path, sys.executable, "-m", "lossbench", "train", "ce", "1")  # a 16x16 network: flatten 8*2*2
    metrics = json.loads((tmp_path / "data" / "runs" / "ce" / "seed1" / "metrics.json").read_text())
    assert metrics["train_samples"] == 12 and metrics["test_samples"] == 6
    assert metrics["classes"] == list(CLASSES) and len(metrics["per_seed"]["seed1"]["per_class_recall"]) == 3


def test_separate_train_and_test_folders(tmp_path: Path) -> None:
    _write_folder(tmp_path / RAW / "train", per_class=3)
    _write_folder(tmp_path / RAW / "test", per_class=2)
    write_params(tmp_path, _params(train_root="train", test_root="test", max_bad_fraction=0.2))
    run_in(tmp_path, sys.executable, "-m", "lossbench", "prepare")
    counts = json.loads((tmp_path / "data" / "class_counts.json").read_text())
    assert sum(counts["train"].values()) == 9 and sum(counts["test"].values()) == 6


def test_too_many_unreadable_images_stop_before_training_and_name_them(tmp_path: Path) -> None:
    _write_folder(tmp_path / RAW / "photos")
    write_params(tmp_path, _params(root="photos", max_bad_fraction=0.01))
    result = run_in(tmp_path, sys.executable, "-m", "lossbench", "prepare", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "1 of 19 images could not be read" in result.stderr and "broken.png" in result.stderr
    assert not (tmp_path / "data" / "prepared").exists()


def test_resizing_is_torchvisions_resize() -> None:
    image = Image.fromarray(np.random.default_rng(3).integers(0, 256, (37, 29, 3), dtype=np.uint8))
    expected = np.asarray(transforms.Resize((16, 16))(image))
    np.testing.assert_array_equal(np.asarray(_resize(image, 16)), expected)


def test_16_bit_images_are_scaled_not_clipped(tmp_path: Path) -> None:
    photos = _write_folder(tmp_path / RAW / "photos", per_class=2)
    grey = np.full((16, 16), 32896, dtype=np.uint16)  # 128/255 of the 16-bit range
    grey[:8] = 65535
    for name in CLASSES:
        Image.fromarray(grey).save(photos / name / "wide.png")
        assert Image.open(photos / name / "wide.png").mode.startswith("I")
    (photos / "dogs" / "broken.png").unlink()
    write_params(tmp_path, _params(root="photos", test_fraction=0.5))
    run_in(tmp_path, sys.executable, "-m", "lossbench", "prepare")
    images = np.concatenate(
        [np.load(tmp_path / "data" / "prepared" / f"{side}_images.npy") for side in ("train", "test")]
    )
    wide = [image for image in images if np.all(image[:, :8] == 255) and np.all(image[:, 8:] == 128)]
    assert len(wide) == 3  # one per class, as 8-bit 255 and 128, not all 255


def test_hidden_and_tool_folders_are_not_classes(tmp_path: Path) -> None:
    photos = _write_folder(tmp_path / RAW / "photos")
    for junk in (".ipynb_checkpoints", "__MACOSX", "cats/.thumbnails"):
        (photos / junk).mkdir()
        Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(photos / junk / "x.png")
    write_params(tmp_path, _params(root="photos", max_bad_fraction=0.1))
    run_in(tmp_path, sys.executable, "-m", "lossbench", "prepare")
    counts = json.loads((tmp_path / "data" / "class_counts.json").read_text())
    assert list(counts["train"]) == list(CLASSES)
    assert sum(counts["train"].values()) + sum(counts["test"].values()) == 18


@pytest.mark.parametrize("command", ["validate", "prepare"])
def test_a_link_to_a_folder_is_refused_by_name(tmp_path: Path, command: str) -> None:
    photos = _write_folder(tmp_path / RAW / "photos")
    os.symlink("..", photos / "cats" / "up")  # a loop: cats/up/cats/up/...
    write_params(tmp_path, _params(root="photos", max_bad_fraction=0.1))
    result = lossbench(tmp_path, command)  # validate walks the folders too, before any stage runs
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{RAW}/photos/cats/up is a link to a folder" in result.stderr


def test_a_class_without_readable_images_is_refused_by_name(tmp_path: Path) -> None:
    photos = _write_folder(tmp_path / RAW / "photos")
    (photos / "empty").mkdir()
    (photos / "empty" / "a.jpg").write_bytes(b"not a jpeg")
    write_params(tmp_path, _params(root="photos", max_bad_fraction=0.5))
    result = lossbench(tmp_path, "prepare")
    assert result.returncode == 1
    assert f"{RAW}/photos/empty: class folder with no readable images" in result.stderr


@pytest.mark.parametrize("noise", [0.0, 0.2])
def test_a_single_class_is_refused_before_any_stage_runs(tmp_path: Path, noise: float) -> None:
    photos = _write_folder(tmp_path / RAW / "photos")
    for name in CLASSES[1:]:
        for path in (photos / name).iterdir():
            path.unlink()
        (photos / name).rmdir()
    params = _params(root="photos")
    params["data"]["label_noise"] = noise  # type: ignore[index]
    write_params(tmp_path, params)
    for command in ("validate", "prepare"):
        result = lossbench(tmp_path, command)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert "a classifier needs at least 2" in result.stderr


def test_a_change_to_the_images_reruns_prepare_and_no_change_does_not(tmp_path: Path) -> None:
    root = make_project(tmp_path / "project", _params(root="photos", max_bad_fraction=0.1))
    photos = _write_folder(root / RAW / "photos")
    run_in(root, "dvc", "repro", "prepare")

    def prepare_is_stale() -> bool:
        return "prepare" in json.loads(run_in(root, "dvc", "status", "--json").stdout)

    assert not prepare_is_stale()
    extra = photos / "owls" / "extra.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(extra)
    assert prepare_is_stale()  # added
    extra.unlink()
    assert not prepare_is_stale()  # back as it was
    first = photos / "cats" / "0.png"
    Image.fromarray(np.ones((8, 8, 3), dtype=np.uint8)).save(first)
    assert prepare_is_stale()  # changed
    assert "Running stage 'prepare'" in run_in(root, "dvc", "repro", "prepare").stdout


# Twelve of the study's own JPEGs, byte for byte from ../shared/data/cifar10-jpeg.tar.gz (tests/data/README.md).
SAMPLE = Path(__file__).parent / "data" / "cifar10-jpeg-sample.tar.gz"


def test_real_cifar10_jpegs_from_the_archive(tmp_path: Path) -> None:
    """A handful of the study's own images, extracted here, read as the study reads them."""
    with tarfile.open(SAMPLE) as archive:
        members = [member for member in archive.getmembers() if member.isfile()]
        archive.extractall(tmp_path / RAW / "cifar", members=members, **DATA_FILTER)
    assert len(members) == 12
    write_params(
        tmp_path,
        _params(train_root="cifar/train", test_root="cifar/test", image_size=32, max_bad_fraction=0.0),
    )
    run_in(tmp_path, sys.executable, "-m", "lossbench", "prepare")
    train_images = np.load(tmp_path / "data" / "prepared" / "train_images.npy")
    counts = json.loads((tmp_path / "data" / "class_counts.json").read_text())
    assert counts["train"] == {"cat": 3, "dog": 3} and counts["test"] == {"cat": 3, "dog": 3}
    # 32x32 JPEGs keep every decoded pixel (no resize), in CHW order.
    with Image.open(tmp_path / RAW / "cifar" / "train" / "cat" / "0000.jpg") as first:
        assert first.size == (32, 32)
        np.testing.assert_array_equal(train_images[0], np.asarray(first.convert("RGB")).transpose(2, 0, 1))
