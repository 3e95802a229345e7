"""Hostile input, round three: the report set, the shipped remote, params files that
are not files or too large, and image folders (huge images, non-UTF-8 names, links)."""

import hashlib
import os
import subprocess
from pathlib import Path

import yaml
from conftest import TINY_PARAMS, lossbench, write_params
from PIL import Image
from test_faults_images import RAW, error_line, image_params, lossbench_within, write_images

REPORT_OUTPUTS = [
    "plots/curves.png",
    "plots/final_accuracy.png",
    "plots/curves.csv",
    "plots/significance.csv",
    "plots/report.md",
    "metrics/summary.json",
]


def hashes(root: Path, paths: list[str]) -> dict[str, str]:
    return {path: hashlib.sha256((root / path).read_bytes()).hexdigest() for path in paths}


def temporaries(root: Path) -> list[Path]:
    return [path for path in root.rglob(".*.tmp") if ".dvc" not in path.parts and ".git" not in path.parts]


# --- a set of files is renamed into place only when every rename can succeed ----------------------


def test_a_folder_in_place_of_a_report_file_changes_no_file_of_the_set(reproduced: Path) -> None:
    before = hashes(reproduced, REPORT_OUTPUTS)
    (reproduced / "plots/reliability.png").unlink()
    (reproduced / "plots/reliability.png").mkdir()
    result = lossbench(reproduced, "report")
    assert "Traceback" not in result.stderr and result.returncode == 1, result.stderr
    assert result.stderr.strip() == (
        "error: could not write plots/reliability.png: a folder is in its place (remove or rename it); "
        "no file of the set was replaced"
    )
    assert hashes(reproduced, REPORT_OUTPUTS) == before
    assert temporaries(reproduced) == []


# --- --params: what it is when it is not a regular file, and files too large to parse ------------


def _check_within(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`lossbench check ARGS` that fails the test, not the suite, if it blocks (a FIFO)."""
    return lossbench_within(root, "check", *args)


def test_params_that_is_not_a_regular_file_says_what_it_is(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo.yaml")
    (tmp_path / "folder").mkdir()
    cases = {
        "/dev/zero": "/dev/zero: a character device",
        "fifo.yaml": "fifo.yaml: a FIFO",
        "folder": "folder: a folder",
    }
    for given, what in cases.items():
        line = error_line(_check_within(tmp_path, "--params", given))
        assert line == f"error: {what}, not a regular file; give a YAML file", line
    missing = error_line(_check_within(tmp_path, "--params", "nowhere.yaml"))
    assert missing == "error: nowhere.yaml: file not found (run from the project root or pass --params)"


def test_a_million_seeds_are_refused_before_parsing_by_size(tmp_path: Path) -> None:
    text = yaml.safe_dump({k: v for k, v in TINY_PARAMS.items() if k != "seeds"})
    text += "seeds:\n" + "".join(f"- {seed}\n" for seed in range(1_000_000))
    (tmp_path / "params.yaml").write_text(text)
    line = error_line(_check_within(tmp_path))
    assert line == (
        f"error: params.yaml: {len(text):,} bytes; a params file is at most 128 KiB (the default is 3 KB). "
        "Too many seeds or losses? `seeds` takes at most 1,000 (each is a training stage per loss)"
    )


def test_too_many_seeds_for_their_size_are_named_with_the_limit(tmp_path: Path) -> None:
    write_params(tmp_path, TINY_PARAMS | {"seeds": list(range(5_000))})
    result = _check_within(tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "error: params.yaml: invalid parameters",
        "  seeds: List should have at most 1000 items after validation, not 5000",
    ]


# --- image folders: huge images, names that are not UTF-8, links to files outside -------------------


def test_an_image_declaring_too_many_pixels_is_named_and_never_decoded(tmp_path: Path) -> None:
    photos = write_images(tmp_path / RAW / "photos")
    big = photos / "cats" / "big.png"
    Image.new("1", (12000, 12000)).save(big)  # a few KB on disk, 144 million pixels declared
    assert big.stat().st_size < 200_000
    write_params(tmp_path, image_params(root="photos", max_bad_fraction=0.5))
    result = lossbench_within(tmp_path, "prepare")
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "DecompressionBomb" not in output and "Warning" not in output, output
    assert (
        f"{RAW}/photos/cats/big.png (12000x12000 = 144,000,000 pixels, more than the 89,478,485 "
        "lossbench reads; shrink it)"
    ) in output, output


def test_a_class_folder_whose_name_is_not_utf8_is_refused_by_check(tmp_path: Path) -> None:
    photos = write_images(tmp_path / RAW / "photos")
    os.rename(photos / "owls", os.fsencode(photos) + b"/caf\xe9")
    write_params(tmp_path, image_params(root="photos"))
    expected = (
        f"error: {RAW}/photos/caf\\xe9: class folder name is not UTF-8 text; rename it "
        "(a class name is written to the report, its figures and JSON files)"
    )
    assert error_line(lossbench_within(tmp_path, "check")) == expected
    assert error_line(lossbench_within(tmp_path, "prepare")) == expected
    assert not (tmp_path / "data" / "prepared").exists()


def test_a_link_to_a_file_outside_the_image_root_is_refused(tmp_path: Path) -> None:
    photos = write_images(tmp_path / RAW / "photos")
    outside = write_images(tmp_path / "elsewhere") / "cats" / "0.png"
    os.symlink(outside, photos / "cats" / "linked.png")
    os.symlink("0.png", photos / "dogs" / "inside.png")  # a link inside the root is read
    write_params(tmp_path, image_params(root="photos"))
    expected = (
        f"error: {RAW}/photos/cats/linked.png is a link to a file outside {RAW} (to {outside}); "
        f"lossbench reads only images that lie inside {RAW}. Copy the image in, or remove the link"
    )
    for command in ("check", "validate", "prepare"):
        assert error_line(lossbench_within(tmp_path, command)) == expected, command
    assert not (tmp_path / "data" / "prepared").exists()
    (photos / "cats" / "linked.png").unlink()
    assert lossbench_within(tmp_path, "prepare").returncode == 0
