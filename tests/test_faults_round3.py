"""Hostile input, round three: the report set, the shipped remote, params files that
are not files or too large, and image folders (huge images, non-UTF-8 names, links)."""

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import yaml
from conftest import TINY_PARAMS, commit, lossbench, run_in, write_params
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


# --- the shipped remote: verified on pull, and a missing one named ---------------------------------


def _lock_dir_hash(root: Path, stage: str) -> str:
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    (out,) = lock["stages"][stage]["outs"]
    return str(out["md5"])


def _object(remote: Path, md5: str) -> Path:
    return remote / "files" / "md5" / md5[:2] / md5[2:]


def _remote_file(remote: Path, dir_hash: str, name: str) -> Path:
    """The object in `remote` that holds file `name` of the folder `dir_hash`."""
    listing = json.loads(_object(remote, dir_hash).read_text())
    (md5,) = [entry["md5"] for entry in listing if entry["relpath"] == name]
    return _object(remote, md5)


def _replace(path: Path, content: bytes) -> None:
    """Write a new file in place of `path` (DVC's objects and checkouts are read-only, maybe linked)."""
    path.unlink()
    path.write_bytes(content)


def test_a_tampered_object_in_the_shipped_remote_is_not_pulled(reproduced: Path, tmp_path: Path) -> None:
    run_in(reproduced, "dvc", "push", "--run-cache")
    commit(reproduced, "the remote, as shipped")
    clone = tmp_path / "clone"
    run_in(tmp_path, "git", "clone", "-q", str(reproduced), str(clone))
    remote = clone / "dvc-remote"
    metrics = _remote_file(remote, _lock_dir_hash(clone, "train@ce-1"), "metrics.json")
    _replace(metrics, metrics.read_bytes().replace(b'"final_test_acc": 0.', b'"final_test_acc": 0.9'))
    _replace(_remote_file(remote, _lock_dir_hash(clone, "train@ce-2"), "model.pt"), b"")
    run_in(clone, "dvc", "pull", "--run-cache", "--allow-missing", "dvc.yaml", check=False)
    assert not (clone / "data/runs/ce/seed1").exists()
    assert not (clone / "data/runs/ce/seed2").exists()
    assert (clone / "data/runs/mae/seed1/metrics.json").is_file()  # the untouched runs came
    status = run_in(clone, "dvc", "status", "train@ce-1", "train@ce-2").stdout
    assert status.count("not in cache:       data/runs/ce/seed") == 2, status


def test_publish_refuses_seed_files_that_dvc_lock_does_not_record(reproduced: Path) -> None:
    published = hashes(reproduced, ["metrics/ce.json", "metrics/details/ce.json"])
    metrics = reproduced / "data/runs/ce/seed1/metrics.json"
    _replace(metrics, metrics.read_bytes().replace(b'"final_test_acc": 0.', b'"final_test_acc": 0.9'))
    result = lossbench(reproduced, "publish", "ce")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip() == (
        "error: data/runs/ce/seed1/metrics.json: not the file dvc.lock records for train@ce-1 (edited, damaged, "
        "or pulled from an unverified remote); remove data/runs/ce/seed1 and run `dvc pull train@ce-1`, "
        "or `dvc repro train@ce-1`"
    )
    shutil.rmtree(reproduced / "data/runs/ce/seed1")
    _replace(reproduced / "data/runs/ce/seed2/model.pt", b"")
    shutil.rmtree(reproduced / "data/runs/ce/seed2")
    assert hashes(reproduced, ["metrics/ce.json", "metrics/details/ce.json"]) == published
    run_in(reproduced, "dvc", "pull", "train@ce-1", "train@ce-2")  # the advice: from the cache, here
    assert lossbench(reproduced, "publish", "ce").returncode == 0
    assert hashes(reproduced, ["metrics/ce.json", "metrics/details/ce.json"]) == published


def test_publish_names_an_emptied_model(reproduced: Path) -> None:
    _replace(reproduced / "data/runs/ce/seed2/model.pt", b"")
    result = lossbench(reproduced, "publish", "ce")
    assert result.returncode == 1 and result.stderr.startswith(
        "error: data/runs/ce/seed2/model.pt: not the file dvc.lock records for train@ce-2 "
    ), result.stderr


def test_check_says_when_the_default_remote_is_missing(project: Path) -> None:
    assert not (project / "dvc-remote").exists()
    result = lossbench(project, "check")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == (
        f"note: the DVC remote 'shipped' ({project / 'dvc-remote'}) does not exist: `dvc pull` fetches "
        'nothing from it and still says "Everything is up to date"; `git checkout -- dvc-remote` brings '
        "back the shipped one"
    )
    (project / "dvc-remote").mkdir()
    result = lossbench(project, "check")
    assert result.returncode == 0 and result.stderr == "", result.stderr


# --- a run-cache record that points at another seed's files -------------------------------------


def _forget_in_lock(root: Path, stage: str) -> None:
    """Drop a stage from dvc.lock and its outputs: DVC then looks for the stage in its
    run-cache, as in a clone whose params differ from the committed dvc.lock."""
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    out = lock["stages"].pop(stage)["outs"][0]["path"]
    (root / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    shutil.rmtree(root / out)


def test_a_run_cache_record_of_another_seeds_files_is_named_with_how_to_replace_it(reproduced: Path) -> None:
    own, other = (
        _lock_dir_hash(reproduced, "train@focal_high-1"),
        _lock_dir_hash(reproduced, "train@focal_high-2"),
    )
    (record,) = [
        path
        for path in (reproduced / ".dvc/cache/runs").rglob("*")
        if path.is_file() and own in path.read_text()
    ]
    _replace(record, record.read_bytes().replace(own.encode(), other.encode()))
    _forget_in_lock(reproduced, "train@focal_high-1")
    run_in(reproduced, "dvc", "repro", "train@focal_high-1")  # restored from the run-cache: seed 2's files
    assert _lock_dir_hash(reproduced, "train@focal_high-1") == other
    result = lossbench(reproduced, "publish", "focal_high")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip() == (
        "error: data/runs/focal_high/seed1/metrics.json: seeds is [2], not [1]: another run's files (copied, "
        "or restored from a DVC run-cache record that points at them): `rm -rf .dvc/cache/runs` drops DVC's "
        "run-cache records (not the runs), then `dvc repro -f train@focal_high-1` trains the seed again and "
        "records it anew (a plain `dvc repro` would restore the same record)"
    )
    shutil.rmtree(reproduced / ".dvc" / "cache" / "runs")  # the advice
    run_in(reproduced, "dvc", "repro", "-f", "train@focal_high-1")
    retrained = _lock_dir_hash(reproduced, "train@focal_high-1")
    assert retrained != other
    assert lossbench(reproduced, "publish", "focal_high").returncode == 0
    _forget_in_lock(reproduced, "train@focal_high-1")
    restored = run_in(reproduced, "dvc", "repro", "train@focal_high-1").stdout
    assert "Stage 'train@focal_high-1' is cached - skipping run" in restored  # the new record, restored
    assert _lock_dir_hash(reproduced, "train@focal_high-1") == retrained
