import json
import sys
from pathlib import Path

import numpy as np
from conftest import run_in, write_params
from PIL import Image

CLASSES = ("cats", "dogs", "owls")


def _write_folder(root: Path, per_class: int = 6) -> Path:
    rng = np.random.default_rng(0)
    for label, name in enumerate(CLASSES):
        folder = root / name
        folder.mkdir(parents=True)
        for index in range(per_class):
            pixels = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
            pixels[..., label] = 255  # a class is a colour, enough to check plumbing
            Image.fromarray(pixels).save(folder / f"{index}.png")
    (root / "dogs" / "broken.png").write_bytes(b"this is not a png")
    return root


def _params(**imagefolder: object) -> dict[str, object]:
    return {
        "data": {"dataset": "imagefolder", "seed": 0, "imagefolder": {"image_size": 16, **imagefolder}},
        "train": {"epochs": 1, "seeds": [1], "batch_size": 8, "threads": 1},
        "losses": {"ce": {"kind": "ce"}},
    }


def test_imagefolder_is_resized_split_and_trains_with_the_adapted_network(tmp_path: Path) -> None:
    _write_folder(tmp_path / "photos")
    write_params(tmp_path, _params(root="photos", test_fraction=0.34, max_bad_fraction=0.1))
    prepared = run_in(tmp_path, sys.executable, "-m", "lossbench", "prepare")
    assert "skipped 1 unreadable image(s)" in prepared.stdout and "broken.png" in prepared.stdout
    images = np.load(tmp_path / "data" / "prepared" / "train_images.npy")
    test_images = np.load(tmp_path / "data" / "prepared" / "test_images.npy")
    assert images.shape[1:] == (3, 16, 16) and test_images.shape[1:] == (3, 16, 16)
    counts = json.loads((tmp_path / "data" / "class_counts.json").read_text())
    assert counts["train"] == {"cats": 4, "dogs": 4, "owls": 4}  # 6 per class, 2 to test
    assert counts["test"] == {"cats": 2, "dogs": 2, "owls": 2}
    run_in(tmp_path, sys.executable, "-m", "lossbench", "train", "ce")  # a 16x16 network: flatten 8*2*2
    metrics = json.loads((tmp_path / "data" / "runs" / "ce" / "metrics.json").read_text())
    assert metrics["train_samples"] == 12 and metrics["test_samples"] == 6
    assert list(metrics["per_class_recall"]) == list(CLASSES)


def test_separate_train_and_test_folders(tmp_path: Path) -> None:
    _write_folder(tmp_path / "train", per_class=3)
    _write_folder(tmp_path / "test", per_class=2)
    write_params(tmp_path, _params(train_root="train", test_root="test", max_bad_fraction=0.2))
    run_in(tmp_path, sys.executable, "-m", "lossbench", "prepare")
    counts = json.loads((tmp_path / "data" / "class_counts.json").read_text())
    assert sum(counts["train"].values()) == 9 and sum(counts["test"].values()) == 6


def test_too_many_unreadable_images_stop_before_training_and_name_them(tmp_path: Path) -> None:
    _write_folder(tmp_path / "photos")
    write_params(tmp_path, _params(root="photos", max_bad_fraction=0.01))
    result = run_in(tmp_path, sys.executable, "-m", "lossbench", "prepare", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "1 of 19 images could not be read" in result.stderr and "broken.png" in result.stderr
    assert not (tmp_path / "data").exists()
