"""params.yaml: every bad value ends with one line naming its key, before any work."""

import copy
import json
import sys
from pathlib import Path

import pytest
from conftest import PROJECT, TINY_PARAMS, run_in, write_params
from typer.testing import CliRunner

from lossbench.cli import app
from lossbench.errors import ParamsError
from lossbench.params import Params, check_fits_in_memory, load_params, parse_params

DELETE = object()

# (key path, new value or DELETE, message the user must see)
BAD_PARAMS = [
    (
        "losses.ce.kind",
        "hinge",
        "losses.ce.kind: unknown loss kind; allowed: ce, flsd, focal, gce, ls_ce, mae, sce",
    ),
    # The kinds beyond mae, ce and focal: strict types and bounds, one line each.
    ("losses.ce", {"kind": "gce", "q": 0.0}, "losses.ce.q: Input should be greater than 0"),
    ("losses.ce", {"kind": "gce", "q": 1.5}, "losses.ce.q: Input should be less than or equal to 1"),
    (
        "losses.ce",
        {"kind": "gce", "q": "0.7"},
        "losses.ce.q: Input should be a valid number, not a quoted string",
    ),
    (
        "losses.ce",
        {"kind": "sce", "alpha": -0.1},
        "losses.ce.alpha: Input should be greater than or equal to 0",
    ),
    (
        "losses.ce",
        {"kind": "sce", "beta": True},
        "losses.ce.beta: Input should be a valid number, not a boolean",
    ),
    (
        "losses.ce",
        {"kind": "sce", "alpha": 0.0, "beta": 0.0},
        "losses.ce: Value error, alpha and beta are both 0, which leaves no loss; give one > 0",
    ),
    ("losses.ce", {"kind": "sce", "A": -4}, "losses.ce.A: unknown key (check its spelling)"),
    (
        "losses.ce",
        {"kind": "ls_ce", "label_smoothing": 1.0},
        "losses.ce.label_smoothing: Input should be less than 1",
    ),
    (
        "losses.ce",
        {"kind": "ls_ce", "label_smoothing": 0.0},
        "losses.ce.label_smoothing: Input should be greater than 0",
    ),
    ("losses.ce", {"kind": "ce", "label_smoothing": 0.1}, "losses.ce.label_smoothing: unknown key"),
    ("losses.ce", {"kind": "flsd", "threshold": 1.0}, "losses.ce.threshold: Input should be less than 1"),
    (
        "losses.ce",
        {"kind": "flsd", "gamma_hard": -1.0},
        "losses.ce.gamma_hard: Input should be greater than or equal to 0",
    ),
    ("losses.ce", {"kind": "flsd", "gamma": 5.0}, "losses.ce.gamma: unknown key (check its spelling)"),
    ("losses.focal_low.gamma", -0.5, "losses.focal_low.gamma: Input should be greater than or equal to 0"),
    ("losses.focal_low.gamma", DELETE, "losses.focal_low.gamma: required key is missing"),
    ("losses.focal_low.gamma", float("nan"), "losses.focal_low.gamma: Input should be a finite number"),
    ("losses", DELETE, "losses: required key is missing"),
    ("losses", {}, "losses: Value error, at least one loss is required"),
    ("train.epohcs", 3, "train.epohcs: unknown key (check its spelling)"),
    ("train.epochs", "ten", "train.epochs: Input should be a valid integer"),
    ("train.epochs", 0, "train.epochs: Input should be greater than or equal to 1"),
    ("train.batch_size", 0, "train.batch_size: Input should be greater than or equal to 1"),
    ("train.lr", 0.0, "train.lr: Input should be greater than 0"),
    ("train.lr", 1e308, "train.lr: Input should be less than or equal to 3.4028235e+38"),
    ("train.lr", float("inf"), "train.lr: Input should be a finite number"),
    ("seeds", [18446744073709551616], "seeds.0: Input should be less than or equal to"),
    ("seeds", [-1], "seeds.0: Input should be greater than or equal to 0"),
    ("seeds", [1, 1], "seeds: Value error, seeds must be distinct"),
    ("seeds", [], "seeds: List should have at least 1 item"),
    ("train.seeds", [1, 2], "train: Value error, the seed list is now top-level `seeds:`, not train.seeds"),
    ("train.threads", 1099511627776, "train.threads: Input should be less than or equal to 1024"),
    ("machine.workers", -1, "machine.workers: Input should be greater than or equal to 0"),
    ("data.seed", -1, "data.seed: Input should be greater than or equal to 0"),
    (
        "data.dataset",
        "imagenet",
        "data.dataset: Input should be 'cifar10_jpeg', 'synthetic', 'cifar10' or 'imagefolder'",
    ),
    ("data.cifar10.download", "maybe", "data.cifar10.download: Input should be a valid boolean"),
    ("data.cifar10.root", "data/raw", "data.cifar10.root: unknown key (check its spelling)"),
    ("data.imbalance_ratio", 0.5, "data.imbalance_ratio: Input should be greater than or equal to 1"),
    ("data.label_noise", 1.0, "data.label_noise: Input should be less than 1"),
    ("data.dataset", "imagefolder", "data: Value error, data.imagefolder needs `root`"),
    (
        "data.imagefolder.root",
        "../../../etc",
        "data.imagefolder.root: Value error, '../../../etc' must be a folder",
    ),
    ("data.imagefolder.train_root", "/home/me/photos", "data.imagefolder.train_root: Value error, '/home/me"),
]


def changed(path: str, value: object, params: dict[str, object] = TINY_PARAMS) -> dict[str, object]:
    params = copy.deepcopy(params)
    *parents, last = path.split(".")
    node: dict[str, object] = params
    for key in parents:
        node = node.setdefault(key, {})  # type: ignore[assignment]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return params


def check(folder: Path) -> tuple[int, str]:
    """`lossbench check` in this process: exit code, everything it printed."""
    result = CliRunner().invoke(app, ["check", "--params", str(folder / "params.yaml")])
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("path", "value", "message"),
    BAD_PARAMS,
    ids=[f"{p}={'(deleted)' if v is DELETE else v}" for p, v, _ in BAD_PARAMS],
)
def test_a_bad_value_is_one_message_naming_its_key(
    tmp_path: Path, path: str, value: object, message: str
) -> None:
    write_params(tmp_path, changed(path, value))
    code, output = check(tmp_path)
    assert code == 1 and message in output, output
    assert "Traceback" not in output


@pytest.mark.parametrize("command", ["validate", "prepare", "train ce", "publish ce", "report"])
def test_every_stage_refuses_bad_params_before_writing_anything(tmp_path: Path, command: str) -> None:
    write_params(tmp_path, changed("losses.focal_low.gamma", -0.5))
    result = run_in(tmp_path, sys.executable, "-m", "lossbench", *command.split(), check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("error: params.yaml: invalid parameters\n  losses.focal_low.gamma:")
    assert "Traceback" not in result.stderr + result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing written


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("ce\n", "loss name 'ce\\n' is not allowed"),
        ("x;touch PWNED;", "loss name 'x;touch PWNED;' is not allowed"),
        ("a" * 65, f"loss name '{'a' * 65}' is not allowed"),
        ("summary", "loss name 'summary' is taken by a file the report writes"),
        ("CE", "loss names 'ce' and 'CE' differ only in case"),
        (
            "focal_0.5",
            "contains '.', which DVC cannot address as a parameter path (losses.focal_0.5); use e.g. 'focal_0_5'",
        ),
    ],
)
def test_loss_names_that_cannot_be_stage_parameter_and_file_names(
    tmp_path: Path, name: str, message: str
) -> None:
    params = copy.deepcopy(TINY_PARAMS)
    params["losses"][name] = {"kind": "ce"}  # type: ignore[index]
    write_params(tmp_path, params)
    code, output = check(tmp_path)
    assert code == 1 and message in output, output


def test_params_are_read_as_dvc_reads_them_yaml_1_2(tmp_path: Path) -> None:
    text = (PROJECT / "params.yaml").read_text().replace("epochs: 30", "epochs: 010")
    (tmp_path / "params.yaml").write_text(text)
    assert load_params(tmp_path / "params.yaml").train.epochs == 10  # YAML 1.1 would read octal 8
    (tmp_path / "params.yaml").write_text(text.replace("  lr: 0.1", "  lr: 0.1\n  lr: 0.2"))
    code, output = check(tmp_path)
    assert code == 1 and "params.yaml: not valid YAML: found duplicate key 'lr'" in output, output


def test_a_params_file_that_is_not_utf8_or_not_yaml(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_bytes("losses: {ce: {kind: ce}}\n# é\n".encode("latin-1"))
    code, output = check(tmp_path)
    assert code == 1 and "params.yaml: not UTF-8 text (byte 27); save it as UTF-8" in output
    (tmp_path / "params.yaml").write_text("train: [unclosed\n")
    code, output = check(tmp_path)
    assert code == 1 and "params.yaml: not valid YAML" in output and "Traceback" not in output


def test_synthetic_sizes_that_cannot_fit_in_memory_are_refused_with_the_size(tmp_path: Path) -> None:
    params = parse_params(changed("data.synthetic.train_size", 1_000_000_000_000))
    with pytest.raises(
        ParamsError, match=r"data.synthetic.train_size / test_size: .* would need about 20,742,416.4 GiB"
    ):
        check_fits_in_memory(params, available=24 * 2**30)
    check_fits_in_memory(parse_params(TINY_PARAMS), available=24 * 2**30)
    write_params(tmp_path, changed("data.synthetic.train_size", 1_000_000_000_000))
    code, output = check(tmp_path)
    assert code == 1 and "of memory to train on; this machine has" in output


def test_root_together_with_train_and_test_roots_is_refused(tmp_path: Path) -> None:
    imagefolder = {"root": "a", "train_root": "b", "test_root": "c"}
    write_params(tmp_path, changed("data", {"dataset": "imagefolder", "imagefolder": imagefolder}))
    code, output = check(tmp_path)
    assert (
        code == 1
        and "give either `root` (split by test_fraction) or `train_root` and `test_root`, not both" in output
    )


def test_params_yaml_holds_exactly_lossbench_defaults() -> None:
    """One source of truth: each value in params.yaml is the default params.py has
    (but the losses and seeds, which dvc.yaml reads and params.yaml must give)."""
    committed = load_params(PROJECT / "params.yaml")
    defaults = Params(losses=committed.losses, seeds=[1, 2, 3, 4])
    assert committed.model_dump() == defaults.model_dump()
    printed = json.loads(json.dumps(committed.model_dump(mode="json")))
    assert set(printed) == {"data", "train", "seeds", "machine", "analysis", "calibration", "losses"}
