"""Hostile input, round two: params, the CLI's output, damaged prepared data, and a
training stage that fails after validate passed."""

import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import TINY_PARAMS, lossbench, prepared_in, run_in, write_params

from lossbench.errors import SHOWN_LIMIT, DamagedInput, shown
from lossbench.jsonfile import parse_json


def _check(root: Path, params: object) -> tuple[int, str]:
    (root / "params.yaml").write_text(params if isinstance(params, str) else yaml.safe_dump(params))
    result = lossbench(root, "check")
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    return result.returncode, result.stderr


def _with(change: object) -> dict[str, object]:
    params = copy.deepcopy(TINY_PARAMS)
    change(params)  # type: ignore[operator]
    return params


# --- strict types: a boolean is not a seed, a quoted number is not a number ---------------------

STRICT_CASES = [
    (
        lambda p: p.update(seeds=[True, False]),
        "seeds.0: Input should be a valid integer, not a boolean",
    ),
    (
        lambda p: p["train"].update(epochs=True),
        "train.epochs: Input should be a valid integer, not a boolean",
    ),
    (
        lambda p: p.update(seeds=["1", "2"]),
        "seeds.0: Input should be a valid integer, not a quoted string",
    ),
    (lambda p: p["train"].update(epochs=1.5), "train.epochs: Input should be a valid integer"),
    (lambda p: p["train"].update(lr=True), "train.lr: Input should be a valid number, not a boolean"),
    (
        lambda p: p["data"].update(cifar10={"download": 1}),
        "data.cifar10.download: Input should be a valid boolean",
    ),
]


@pytest.mark.parametrize(("change", "message"), STRICT_CASES, ids=[m.split(":")[0] for _, m in STRICT_CASES])
def test_lax_values_are_refused_by_name(tmp_path: Path, change: object, message: str) -> None:
    code, errors = _check(tmp_path, _with(change))
    assert code == 1 and message in errors, errors


def test_dvc_exp_run_set_with_quoted_seeds_is_refused_before_training(tmp_path: Path) -> None:
    # `dvc exp run -S 'seeds=["1","2"]'` writes strings into params.yaml; DVC's own parser reads them.
    text = yaml.safe_dump(TINY_PARAMS).replace("seeds:\n- 1\n- 2\n", "seeds:\n- '1'\n- '2'\n")
    assert "'1'" in text
    code, errors = _check(tmp_path, text)
    assert code == 1 and "seeds.0: Input should be a valid integer, not a quoted string" in errors


# --- YAML that is legal but hostile -------------------------------------------------------------


def test_deeply_nested_yaml_is_one_line(tmp_path: Path) -> None:
    code, errors = _check(tmp_path, "losses: " + "[" * 500 + "]" * 500 + "\n")
    assert code == 1 and errors.strip() == (
        "error: params.yaml: not valid params: nested too deeply for a params file"
    )


def test_an_alias_bomb_is_named_by_check(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 6)]  # 10^6 values
    code, errors = _check(tmp_path, "\n".join(lines) + "\n")
    assert code == 1 and "params.yaml: expands to more than 100,000 values (YAML anchors" in errors, errors


def test_a_duplicate_key_is_named_without_its_values(tmp_path: Path) -> None:
    text = yaml.safe_dump(TINY_PARAMS).replace("  epochs: 2\n", "  epochs: 2\n  epochs: 'secret-value'\n")
    code, errors = _check(tmp_path, text)
    assert code == 1 and "params.yaml: not valid YAML: found duplicate key 'epochs' (line" in errors, errors
    assert "secret-value" not in errors


# --- what reaches the terminal: no markup, no control characters, nothing unbounded -----------


@pytest.mark.parametrize("key", ["[/]", "[red]hidden[/red]", "[link=http://x]y[/link]"])
def test_user_text_is_never_rich_markup(tmp_path: Path, key: str) -> None:
    code, errors = _check(tmp_path, _with(lambda p: p["train"].update({key: 1})))
    assert code == 1 and f"train.{key}: unknown key (check its spelling)" in errors, errors


def test_terminal_escape_sequences_in_names_are_shown_escaped(tmp_path: Path) -> None:
    code, errors = _check(tmp_path, _with(lambda p: p["train"].update({"\x1b[2J\x1b[31mevil": 1})))
    assert code == 1 and "\x1b" not in errors
    assert "\\x1b[2J\\x1b[31mevil" in errors, errors


@pytest.mark.parametrize("name", ["x" * 100_000, "a." * 50_000])  # params files stop at 128 KiB
def test_a_huge_value_is_echoed_cut_to_a_line(tmp_path: Path, name: str) -> None:
    code, errors = _check(tmp_path, _with(lambda p: p["losses"].update({name: {"kind": "ce"}})))
    assert code == 1 and f"({len(name):,} characters)" in errors
    assert len(errors) < 1000, len(errors)


def test_shown_keeps_short_text_and_cuts_long_text() -> None:
    assert shown("focal_high") == "focal_high"
    assert shown("a\nb\x1b") == "a\\nb\\x1b"
    cut = shown("é" * 10_000)
    assert cut.startswith("é" * (SHOWN_LIMIT - 1) + "…") and cut.endswith("(10,000 characters)")


# --- operating-system errors and a missing dvc are one line -----------------------------------


def test_params_that_is_a_folder_and_a_root_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").mkdir()
    result = lossbench(tmp_path, "check")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr == "error: params.yaml: a folder, not a regular file; give a YAML file\n"
    (tmp_path / "p").mkdir()
    write_params(tmp_path / "p", TINY_PARAMS)
    (tmp_path / "root-file").write_text("not a folder")
    result = lossbench(tmp_path, "prepare", "--params", "p/params.yaml", "--root", "root-file")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "root-file" in result.stderr, result.stderr


def test_compare_needs_no_dvc_on_the_path(tmp_path: Path) -> None:
    """compare reads the runs from git and the workspace (experiments.exp_show): a
    shell whose PATH has git but no dvc gets the table."""
    write_params(tmp_path, TINY_PARAMS)
    (tmp_path / "metrics").mkdir()
    for name in TINY_PARAMS["losses"]:  # type: ignore[attr-defined]
        headline = {"test_acc": 0.5, "test_sd": 0.01, "best_acc": 0.52, "ece": 0.03, "conv_ep": 2.0}
        (tmp_path / "metrics" / f"{name}.json").write_text(json.dumps(headline))
    run_in(tmp_path, "git", "init", "-q")
    run_in(tmp_path, "git", "add", "-A")
    run_in(tmp_path, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "results")
    python_only = tmp_path / "bin"
    python_only.mkdir()
    (python_only / "git").symlink_to(shutil.which("git") or "/usr/bin/git")
    result = subprocess.run(
        [sys.executable, "-m", "lossbench", "compare"],
        cwd=tmp_path,
        env={**os.environ, "PATH": str(python_only)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "0.500 ± 0.010" in result.stdout, result.stdout


# --- damaged prepared data is named before training ----------------------------------------------


@pytest.fixture(scope="module")
def prepared_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    params = _with(
        lambda p: p["train"].update(epochs=1) or p.update(losses={"ce": {"kind": "ce"}}, seeds=[1])
    )
    return prepared_in(tmp_path_factory.mktemp("prepared"), params)


@pytest.fixture
def prepared(tmp_path: Path, prepared_template: Path) -> Path:
    shutil.copytree(prepared_template, tmp_path, dirs_exist_ok=True)
    return tmp_path


def _damage_labels(folder: Path) -> None:
    labels = np.load(folder / "train_labels.npy")
    labels[3] = 99
    np.save(folder / "train_labels.npy", labels)


def _object_images(folder: Path) -> None:
    np.save(folder / "train_images.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)


DAMAGES = [
    (
        _damage_labels,
        "data/prepared/train_labels.npy: labels must be 0..9 (one per class in classes.json), found 0..99",
    ),
    (
        lambda f: (f / "classes.json").write_text('["airplane", "auto'),
        "data/prepared/classes.json: not readable JSON",
    ),
    (
        lambda f: (f / "classes.json").write_text('{"a": 1}'),
        "data/prepared/classes.json: expected a list of at least 2 class names",
    ),
    (_object_images, "data/prepared/train_images.npy: not a numeric .npy array"),
    (
        lambda f: (f / "test_images.npy").write_bytes(b"\x93NUMPY\x01\x00"),
        "data/prepared/test_images.npy: not a numeric .npy array",
    ),
]


@pytest.mark.parametrize(
    ("damage", "message"),
    DAMAGES,
    ids=["label-99", "truncated-classes", "classes-object", "object-array", "truncated-npy"],
)
@pytest.mark.parametrize("workers", [1, 2])
def test_damaged_prepared_data_is_named_before_training(
    prepared: Path, damage: object, message: str, workers: int
) -> None:
    params = yaml.safe_load((prepared / "params.yaml").read_text())
    params["machine"] = {"workers": workers}
    params["seeds"] = [1, 2]
    write_params(prepared, params)
    damage(prepared / "data" / "prepared")  # type: ignore[operator]
    result = lossbench(prepared, "train", "ce", "1")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert message in result.stderr and "run `dvc repro prepare`" in result.stderr, result.stderr
    assert "out of memory" not in result.stderr


# --- a training stage that fails after validate passed keeps the previous run -------------------


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_a_diverging_run_under_dvc_repro_gives_back_the_previous_run(reproduced: Path) -> None:
    before = _digests(reproduced / "data" / "runs")
    params = yaml.safe_load((reproduced / "params.yaml").read_text())
    params["train"]["lr"] = 1.0e30  # passes validate; the loss becomes nan in epoch 1
    write_params(reproduced, params)
    result = run_in(reproduced, "dvc", "repro", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "the training loss became nan" in output, output
    assert "note: data/runs/mae/seed1 is back as dvc.lock records it (copied from the DVC cache)" in output, (
        output
    )
    assert _digests(reproduced / "data" / "runs") == before  # every loss's previous run, byte for byte
    status = json.loads(run_in(reproduced, "dvc", "status", "--json").stdout)
    # Only the params edit is pending: no output of train@mae-1 is missing or changed.
    assert "changed outs" not in json.dumps(status.get("train@mae-1", [])), status


def test_a_failed_run_outside_dvc_leaves_the_folder_and_restores_nothing(prepared: Path) -> None:
    assert lossbench(prepared, "train", "ce", "1").returncode == 0
    before = _digests(prepared / "data" / "runs")
    params = yaml.safe_load((prepared / "params.yaml").read_text())
    params["train"]["lr"] = 1.0e30
    write_params(prepared, params)
    result = lossbench(prepared, "train", "ce", "1")
    assert result.returncode == 1 and "note:" not in result.stdout + result.stderr
    assert _digests(prepared / "data" / "runs") == before


def test_json_nested_too_deeply_is_one_line() -> None:
    with pytest.raises(DamagedInput, match=r"x\.json is nested too deeply"):
        parse_json("[" * 100_000 + "]" * 100_000, "x.json")


def test_check_refuses_what_validate_refuses(tmp_path: Path) -> None:
    # `lossbench check` runs validate's checks (the README recommends it before `dvc repro -s`).
    alpha = _with(lambda p: p["losses"]["focal_high"].update(alpha=[1.0, 2.0, 3.0]))
    code, errors = _check(tmp_path, alpha)
    assert code == 1 and "losses.focal_high.alpha: 3 weights given but the dataset has 10 classes" in errors
    if not torch.cuda.is_available():
        code, errors = _check(tmp_path, _with(lambda p: p["train"].update(device="cuda")))
        assert code == 1 and "train.device: cuda, but torch finds no CUDA device" in errors, errors
