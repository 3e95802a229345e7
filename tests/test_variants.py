import copy
import gc
import json
from pathlib import Path

import numpy as np
from conftest import TINY_PARAMS
from rich.console import Console

from lossbench.calibrate import calibrate
from lossbench.params import parse_params
from lossbench.prepare import long_tail_counts, prepare
from lossbench.publish import publish
from lossbench.report import report
from lossbench.storage import CLASS_COUNTS_FILE, PREPARED_DIR, load_prepared
from lossbench.train_stage import train

QUIET = Console(quiet=True)


def _prepare(root: Path, **data: object) -> None:
    params = parse_params(
        {
            "data": {
                "dataset": "synthetic",
                "seed": 5,
                "synthetic": {"train_size": 1000, "test_size": 200},
                **data,
            },
            "seeds": [1],
            "losses": {"ce": {"kind": "ce"}},
        }
    )
    prepare(params, root, QUIET)


def test_long_tail_profile_matches_cifar10_lt() -> None:
    # CIFAR-10-LT with imbalance ratio 100, as published.
    assert long_tail_counts(5000, 10, 100) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert long_tail_counts(5000, 10, 1) == [5000] * 10


def test_imbalanced_training_set_has_exact_counts_and_a_balanced_test_set(tmp_path: Path) -> None:
    _prepare(tmp_path / "balanced")
    _prepare(tmp_path / "long_tail", imbalance_ratio=10)
    balanced = load_prepared(tmp_path / "balanced" / PREPARED_DIR)
    long_tail = load_prepared(tmp_path / "long_tail" / PREPARED_DIR)
    expected = [int(100 * 10 ** (-c / 9)) for c in range(10)]  # 100 per class before
    assert expected[0] == 100 and expected[-1] == 10
    assert np.bincount(long_tail.train_labels, minlength=10).tolist() == expected
    assert np.array_equal(long_tail.test_images, balanced.test_images)
    assert np.array_equal(long_tail.test_labels, balanced.test_labels)
    counts = json.loads((tmp_path / "long_tail" / CLASS_COUNTS_FILE).read_text())
    assert list(counts["train"].values()) == expected and counts["imbalance_ratio"] == 10


def test_label_noise_flips_exactly_the_asked_fraction_to_other_classes(tmp_path: Path) -> None:
    _prepare(tmp_path / "clean")
    _prepare(tmp_path / "noisy", label_noise=0.25)
    clean = load_prepared(tmp_path / "clean" / PREPARED_DIR)
    noisy = load_prepared(tmp_path / "noisy" / PREPARED_DIR)
    assert np.array_equal(clean.train_images, noisy.train_images)
    assert int((clean.train_labels != noisy.train_labels).sum()) == 250  # exactly 25% of 1000
    assert np.array_equal(clean.test_labels, noisy.test_labels)  # test labels stay clean
    counts = json.loads((tmp_path / "noisy" / CLASS_COUNTS_FILE).read_text())
    assert counts["labels_flipped"] == 250
    # Flips go to every other class, not one fixed neighbour.
    flipped = clean.train_labels != noisy.train_labels
    offsets = (noisy.train_labels[flipped] - clean.train_labels[flipped]) % 10
    assert offsets.min() >= 1 and len(set(offsets.tolist())) == 9


def test_same_seed_same_noise(tmp_path: Path) -> None:
    _prepare(tmp_path / "a", label_noise=0.1, imbalance_ratio=5)
    _prepare(tmp_path / "b", label_noise=0.1, imbalance_ratio=5)
    a, b = (load_prepared(tmp_path / run / PREPARED_DIR) for run in "ab")
    assert np.array_equal(a.train_labels, b.train_labels) and np.array_equal(a.train_images, b.train_images)


def test_report_on_a_long_tailed_noisy_run_tests_claim_five(tmp_path: Path) -> None:
    params = copy.deepcopy(TINY_PARAMS)
    params["data"] |= {"imbalance_ratio": 3.0, "label_noise": 0.1}  # type: ignore[operator]
    params["losses"] = {"ce": {"kind": "ce"}, "focal": {"kind": "focal", "gamma": 2.0}}
    params["machine"] = {"workers": 1}  # in this process: the stages' own functions, no CLI
    parsed = parse_params(params)
    prepare(parsed, tmp_path, QUIET)
    frozen = gc.get_freeze_count()
    for name in parsed.losses:
        for seed in parsed.seeds:
            train(parsed, name, seed, tmp_path, QUIET)
        publish(parsed, name, tmp_path, QUIET)
    # The caller's cycle collector is its own (only the lossbench command turns it off and on).
    assert gc.isenabled() and gc.get_freeze_count() == frozen
    calibrate(parsed, tmp_path, QUIET)
    report(parsed, tmp_path, QUIET)
    written = (tmp_path / "plots" / "report.md").read_text()
    assert "tail recall" in written
    # Head and tail by the training counts (after noise): the LT profile's first and last classes.
    assert "Head classes (disc, " in written and "checker) the fewest" in written
    claim = next(line for line in written.splitlines() if line.startswith("**5."))
    # With every run: testable (without the runs at chance, a tiny run may have no CE left)
    assert "not testable" not in claim.split("*Without runs at chance")[0]
    assert "tail-class recall, Focal (γ=2) − CE" in claim and "under 10.0% label noise" in claim
