"""Hostile image folders (issue 19): what `lossbench validate` and `prepare` say, on real files.

Every command runs with a timeout, so a hang (a FIFO opened for reading) fails
its test instead of stopping the suite.
"""

import ctypes
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import BIN, make_project, run_in, write_params
from PIL import Image

from lossbench.errors import DatasetUnavailable
from lossbench.params import parse_params

RAW = Path("data/raw/imagefolder")
CLASSES = ("cats", "dogs", "owls")
TIMEOUT_S = 60  # every command here takes a few seconds; a hang fails the test


def lossbench_within(
    cwd: Path, *args: str, seconds: float = TIMEOUT_S, **popen: object
) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONUNBUFFERED": "1"}
    env |= popen.pop("env", {})  # type: ignore[arg-type]
    return subprocess.run(
        [sys.executable, "-m", "lossbench", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=seconds,
        **popen,  # type: ignore[call-overload]
    )


def write_images(folder: Path, classes: tuple[str, ...] = CLASSES, per_class: int = 4, size: int = 8) -> Path:
    rng = np.random.default_rng(0)
    for label, name in enumerate(classes):
        (folder / name).mkdir(parents=True)
        for index in range(per_class):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            pixels[..., label % 3] = 255
            Image.fromarray(pixels).save(folder / name / f"{index}.png")
    return folder


def image_params(**imagefolder: object) -> dict[str, object]:
    return {
        "data": {"dataset": "imagefolder", "seed": 0, "imagefolder": {"image_size": 10, **imagefolder}},
        "train": {"epochs": 1, "batch_size": 8, "threads": 1},
        "seeds": [1],
        "losses": {"ce": {"kind": "ce"}},
    }


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one `error: ...` line a refused command prints, and nothing else."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def fingerprint(root: Path, *relative: str) -> dict[str, str]:
    """sha256 of every file under the given paths (and the names of any temporaries)."""
    found = {}
    for name in relative:
        top = root / name
        for path in sorted([top, *top.rglob("*")] if top.is_dir() else [top]):
            if path.is_file():
                found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


# --- case 3: float and 32-bit images are scaled or refused by name, never clipped -------------


def test_float_and_16_bit_integer_images_are_scaled(tmp_path: Path) -> None:
    photos = write_images(tmp_path / RAW / "photos", per_class=3, size=16)
    floats = np.full((16, 16), 0.5, dtype=np.float32)
    floats[:8] = 1.0
    Image.fromarray(floats, mode="F").save(photos / "cats" / "float.tif")
    # A 16-bit PGM opens as mode I (0..65535), as 16-bit PNGs did in older Pillow.
    wide = np.full((16, 16), 32896, dtype=">u2")
    wide[:8] = 65535
    (photos / "dogs" / "wide.pgm").write_bytes(b"P5 16 16 65535\n" + wide.tobytes())
    for path, mode in ((photos / "cats" / "float.tif", "F"), (photos / "dogs" / "wide.pgm", "I")):
        with Image.open(path) as image:
            assert image.mode == mode
    write_params(tmp_path, image_params(root="photos", image_size=16, test_fraction=0.5))
    result = lossbench_within(tmp_path, "prepare")
    assert result.returncode == 0 and "skipped" not in result.stdout, result.stdout + result.stderr
    images = np.concatenate(
        [np.load(tmp_path / "data" / "prepared" / f"{side}_images.npy") for side in ("train", "test")]
    )
    scaled = [image for image in images if np.all(image[:, :8] == 255) and np.all(image[:, 8:] == 128)]
    assert len(scaled) == 2  # 1.0 and 65535 -> 255, 0.5 and 32896 -> 128: not all 0, not all 255


def test_images_without_an_agreed_white_are_refused_by_name(tmp_path: Path) -> None:
    photos = write_images(tmp_path / RAW / "photos", per_class=3)
    counts = np.full((8, 8), 2**31 - 1, dtype=np.int32)
    counts[:4] = 1000
    Image.fromarray(counts, mode="I").save(photos / "cats" / "counts.tif")  # 32 bits per sample
    Image.fromarray(np.full((8, 8), 200.0, dtype=np.float32), mode="F").save(photos / "dogs" / "bytes.tif")
    nan = np.zeros((8, 8), dtype=np.float32)
    nan[0, 0] = np.nan
    Image.fromarray(nan, mode="F").save(photos / "owls" / "nan.tif")
    write_params(tmp_path, image_params(root="photos", test_fraction=0.34, max_bad_fraction=0.5))
    result = lossbench_within(tmp_path, "prepare")
    assert result.returncode == 0, result.stderr
    assert "skipped 3 unreadable image(s)" in result.stdout
    reads = "lossbench reads 8-bit, 16-bit integer, or float in 0..1"
    for line in (
        f"{RAW}/photos/cats/counts.tif (32-bit integer pixels; {reads})",
        f"{RAW}/photos/dogs/bytes.tif (float pixels from 200 to 200, outside 0..1; {reads})",
        f"{RAW}/photos/owls/nan.tif (float pixels that are NaN or infinite; {reads})",
    ):
        assert line in result.stdout, result.stdout
    counted = json.loads((tmp_path / "data" / "class_counts.json").read_text())
    assert sum(counted["train"].values()) + sum(counted["test"].values()) == 9  # only the 8-bit ones


# --- case 4: an image root that is a link is refused by name -----------------------------------


@pytest.mark.parametrize(
    ("linked", "params", "key"),
    [
        ("photos", {"root": "photos"}, "root"),
        ("sets", {"train_root": "sets/train", "test_root": "sets/test"}, "train_root"),
    ],
)
@pytest.mark.parametrize("command", ["validate", "prepare"])
def test_an_image_root_linked_from_outside_is_refused(
    tmp_path: Path, linked: str, params: dict[str, str], key: str, command: str
) -> None:
    outside = tmp_path / "elsewhere"
    for relative in params.values():
        write_images(outside / Path(relative).relative_to(linked) if "/" in relative else outside)
    (tmp_path / RAW).mkdir(parents=True)
    os.symlink(outside, tmp_path / RAW / linked)
    write_params(tmp_path, image_params(**params))
    line = error_line(lossbench_within(tmp_path, command))
    assert line.startswith(f"error: data.imagefolder.{key}: {RAW}/{linked} is a link (to {outside}); ")
    assert "DVC does not look inside a linked folder" in line
    assert not (tmp_path / "data" / "prepared").exists()


# --- case 9: class names are text, and prepare's outputs are one set ---------------------------


def test_class_names_are_drawn_and_printed_as_plain_text(tmp_path: Path) -> None:
    names = ("$\\x$", "[red]dogs", "owls")  # mathtext and rich markup, as folder names
    write_images(tmp_path / RAW / "photos", classes=names, per_class=2)
    write_params(tmp_path, image_params(root="photos", test_fraction=0.5))
    result = lossbench_within(tmp_path, "prepare")
    assert result.returncode == 0, result.stderr
    assert "($\\x$, [red]dogs, owls)" in result.stdout
    with Image.open(tmp_path / "plots" / "samples.png") as figure:
        assert figure.format == "PNG"
    assert list(json.loads((tmp_path / "data" / "class_counts.json").read_text())["train"]) == sorted(names)


def test_a_failed_prepare_leaves_all_three_outputs_as_they_were(tmp_path: Path) -> None:
    photos = write_images(tmp_path / RAW / "photos", per_class=2)
    write_params(tmp_path, image_params(root="photos", test_fraction=0.5))
    assert lossbench_within(tmp_path, "prepare").returncode == 0
    outputs = ("data/prepared", "data/class_counts.json")
    before = fingerprint(tmp_path, *outputs)
    write_images(tmp_path / RAW / "photos", classes=("ants",), per_class=2)  # new data to prepare
    shutil.copy(photos / "cats" / "0.png", photos / "cats" / "9.png")
    shutil.rmtree(tmp_path / "plots")
    (tmp_path / "plots").write_text("a file where the figure's folder should be\n")
    line = error_line(lossbench_within(tmp_path, "prepare"))
    assert line.startswith("error: could not write plots/samples.png: ")
    assert fingerprint(tmp_path, *outputs) == before
    assert sorted(path.name for path in (tmp_path / "data").iterdir()) == [
        "class_counts.json",
        "prepared",
        "raw",
    ]


# --- case 10: FIFOs, sockets and links to devices are named, never opened ----------------------


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _link_to_dev_zero(path: Path) -> None:
    os.symlink("/dev/zero", path)


def _socket(path: Path) -> None:
    # A socket's path has at most 107 bytes: bind a short one, then move it into place.
    with tempfile.TemporaryDirectory() as short:
        server = socket.socket(socket.AF_UNIX)
        server.bind(f"{short}/s")
        server.close()  # the socket file stays
        os.rename(f"{short}/s", path)


def _broken_link(path: Path) -> None:
    os.symlink(path.parent / "gone.png", path)


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (_fifo, "a FIFO"),
        (_link_to_dev_zero, "a link to a character device"),
        (_socket, "a socket"),
        (_broken_link, "a broken link"),
    ],
)
def test_a_file_that_is_not_a_regular_file_is_named_and_never_opened(
    tmp_path: Path, make: object, kind: str
) -> None:
    write_images(tmp_path / RAW / "photos")
    special = tmp_path / RAW / "photos" / "cats" / "special.png"
    make(special)  # type: ignore[operator]
    write_params(tmp_path, image_params(root="photos", max_bad_fraction=0.1))
    line = error_line(lossbench_within(tmp_path, "validate"))
    assert line == (
        f"error: {RAW}/photos/cats/special.png is {kind}, not a regular file; DVC hashes every file in "
        f"{RAW} (a dependency of validate and prepare) and hangs or fails on this one: remove it"
    )
    prepared = lossbench_within(tmp_path, "prepare")
    assert prepared.returncode == 0, prepared.stderr
    assert "skipped 1 unreadable image(s)" in prepared.stdout
    assert f"{RAW}/photos/cats/special.png ({kind}, not a regular file: not read)" in prepared.stdout


def test_a_fifo_anywhere_in_the_dependency_folder_is_refused_by_validate(tmp_path: Path) -> None:
    write_images(tmp_path / RAW / "photos")
    (tmp_path / RAW / ".cache").mkdir()
    os.mkfifo(tmp_path / RAW / ".cache" / "pipe")  # not an image, not under the root: DVC hashes it still
    write_params(tmp_path, image_params(root="photos"))
    assert f"error: {RAW}/.cache/pipe is a FIFO" in error_line(lossbench_within(tmp_path, "validate"))
    assert lossbench_within(tmp_path, "prepare").returncode == 0  # lossbench never opens it


# --- case 11: the sample grid has a bounded size -----------------------------------------------


def test_the_sample_grid_draws_at_most_20_classes_and_names_the_rest(tmp_path: Path) -> None:
    classes = tuple(f"c{index:03d}" for index in range(200))
    write_images(tmp_path / RAW / "photos", classes=classes, per_class=2)
    write_params(tmp_path, image_params(root="photos", test_fraction=0.5))
    result = lossbench_within(tmp_path, "prepare")
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "plots" / "samples.png") as figure:
        width, height = figure.size
    assert width == 576 and height <= (20 * 1.05 + 0.3) * 80  # 200 rows would be 16,800 px
    not_drawn = [line for line in result.stdout.splitlines() if "not drawn" in line]
    assert not_drawn == [
        "plots/samples.png draws the first 20 of 200 classes; not drawn: " + ", ".join(classes[20:])
    ]
    assert "c000, c001" in result.stdout and "… (180 more)" in result.stdout


# --- case 19b: a split that empties a class or a side says so ----------------------------------


@pytest.mark.parametrize(
    ("fraction", "expected"),
    [
        (
            0.01,
            "error: data.imagefolder.test_fraction: 0.01 leaves all 3 classes with no test image "
            "(images per class: cats: 4, dogs: 4, owls: 4); every class needs an image on each side: "
            "use a test_fraction between 0.13 and 0.87 (the smallest class has 4), or add images",
        ),
        (
            0.99,
            "error: data.imagefolder.test_fraction: 0.99 leaves all 3 classes with no train image "
            "(images per class: cats: 4, dogs: 4, owls: 4); every class needs an image on each side: "
            "use a test_fraction between 0.13 and 0.87 (the smallest class has 4), or add images",
        ),
    ],
)
@pytest.mark.parametrize("command", ["validate", "prepare"])
def test_a_test_fraction_that_empties_a_side_says_so(
    tmp_path: Path, fraction: float, expected: str, command: str
) -> None:
    write_images(tmp_path / RAW / "photos")
    write_params(tmp_path, image_params(root="photos", test_fraction=fraction))
    assert error_line(lossbench_within(tmp_path, command)) == expected


def test_a_single_small_class_is_named(tmp_path: Path) -> None:
    photos = write_images(tmp_path / RAW / "photos")
    for path in sorted((photos / "owls").iterdir())[1:]:
        path.unlink()
    write_params(tmp_path, image_params(root="photos", test_fraction=0.2))
    assert error_line(lossbench_within(tmp_path, "prepare")) == (
        "error: data.imagefolder.test_fraction: 0.2 leaves 1 of 3 classes with no test image "
        "(images per class: owls: 1); every class needs an image on each side: "
        "a class of 1 image cannot be split: add images"
    )


# --- case 19c: an unreadable folder says permission denied -------------------------------------


def _without_root_file_access() -> None:
    """In the child, before exec: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from
    the bounding set, so root too is denied a folder it has no permission for."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2


@pytest.mark.parametrize("command", ["validate", "prepare"])
def test_an_unreadable_class_folder_says_permission_denied(tmp_path: Path, command: str) -> None:
    write_images(tmp_path / RAW / "photos")
    write_params(tmp_path, image_params(root="photos"))
    dogs = tmp_path / RAW / "photos" / "dogs"
    dogs.chmod(0)
    try:
        # Root reads any folder: run it as root without the capabilities that allow that.
        as_root = {"preexec_fn": _without_root_file_access} if os.geteuid() == 0 else {}
        result = lossbench_within(tmp_path, command, **as_root)
    except subprocess.SubprocessError as error:
        pytest.skip(f"cannot drop root's file access here: {error}")
    finally:
        dogs.chmod(0o755)
    line = error_line(result)
    assert line.startswith(f"error: {RAW}/photos/dogs: permission denied; ")


# --- case 7: validate refuses a device this machine does not have ------------------------------

SMALL_SYNTHETIC = {
    "data": {"dataset": "synthetic", "seed": 0, "synthetic": {"train_size": 60, "test_size": 20}},
    "train": {"epochs": 1, "batch_size": 32, "test_batch_size": 20, "threads": 1},
    "seeds": [1],
    "machine": {"workers": 1},
    "losses": {"ce": {"kind": "ce"}},
}


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_validate_refuses_cuda_without_one_and_dvc_repro_keeps_every_run(tmp_path: Path) -> None:
    root = make_project(tmp_path / "project", SMALL_SYNTHETIC)
    run_in(root, "dvc", "repro")
    before = fingerprint(root, "data", "metrics", "plots")
    assert any(name.startswith("data/runs/ce/") for name in before)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["device"] = "cuda"
    write_params(root, params)
    expected = (
        "error: train.device: cuda, but torch finds no CUDA device on this machine; "
        "use auto (CUDA where there is one, else the CPU) or cpu"
    )
    assert error_line(lossbench_within(root, "validate")) == expected
    result = run_in(root, "dvc", "repro", check=False)
    assert result.returncode != 0 and expected in result.stderr
    assert "Running stage 'train@ce-1'" not in result.stdout
    assert fingerprint(root, "data", "metrics", "plots") == before


def test_check_before_training_is_what_validate_checks(tmp_path: Path) -> None:
    from lossbench.validate import check_before_training

    photos = write_images(tmp_path / RAW / "photos")
    params = image_params(root="photos")
    assert check_before_training(parse_params(params), tmp_path) == 3
    assert not (tmp_path / "data" / "validated.txt").exists()  # no stamp
    os.symlink("..", photos / "cats" / "up")
    expected = (
        f"{RAW}/photos/cats/up is a link to a folder; lossbench does not follow folder links "
        "(one that points back up the tree repeats images under several labels). "
        "Copy the images in, or remove the link"
    )
    with pytest.raises(DatasetUnavailable) as refused:
        check_before_training(parse_params(params), tmp_path)
    assert str(refused.value) == f"{tmp_path}/{expected}"
    write_params(tmp_path, params)
    assert error_line(lossbench_within(tmp_path, "validate")) == f"error: {expected}"
