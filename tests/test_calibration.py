"""Temperature scaling and the calibration measures, against independent
implementations and constructed models whose answer is known."""

import json

import numpy as np
import pytest
import torch
from conftest import PROJECT
from scipy.special import log_softmax, softmax
from torchmetrics.functional.classification import multiclass_calibration_error

from lossbench.calibration import (
    FOLDS,
    adaptive_ece,
    classwise_ece,
    cross_fit,
    ece,
    fit_temperature,
    scores,
    stratified_halves,
)

pytestmark = pytest.mark.fast

CLASSES = 10


def calibrated_model(n: int, seed: int = 0, scale: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits): calibrated by construction."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, CLASSES)) * scale
    cumulative = softmax(logits, axis=1).cumsum(axis=1)
    labels = np.minimum((rng.random(n)[:, None] >= cumulative).sum(axis=1), CLASSES - 1)
    return logits, labels


def test_ece_matches_torchmetrics() -> None:
    logits, labels = calibrated_model(3000, scale=3.0)
    probabilities = softmax(logits * 2.5, axis=1)  # over-confident
    reference = multiclass_calibration_error(
        torch.from_numpy(probabilities), torch.from_numpy(labels), num_classes=CLASSES, n_bins=15, norm="l1"
    )
    assert ece(probabilities, labels) == pytest.approx(float(reference), abs=1e-6)
    assert ece(probabilities, labels) > 0.1


def _mukhoti_adaptive_ece(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """AdaECE as Mukhoti et al.'s code writes it: bin edges at equal counts by interpolation."""
    edges = np.interp(
        np.linspace(0, len(confidence), bins + 1), np.arange(len(confidence)), np.sort(confidence)
    )
    counts, edges = np.histogram(confidence, edges)
    total = 0.0
    for low, high, count in zip(edges[:-1], edges[1:], counts, strict=True):
        inside = (confidence > low) & (confidence <= high) if low != edges[0] else confidence <= high
        if count:
            total += inside.sum() / len(confidence) * abs(correct[inside].mean() - confidence[inside].mean())
    return total


def test_adaptive_ece_matches_the_equal_count_binning_of_the_literature() -> None:
    logits, labels = calibrated_model(3000, seed=1)
    probabilities = softmax(logits * 0.5, axis=1)  # under-confident
    reference = _mukhoti_adaptive_ece(probabilities.max(axis=1), probabilities.argmax(axis=1) == labels)
    assert adaptive_ece(probabilities, labels) == pytest.approx(reference, abs=2e-3)
    assert adaptive_ece(probabilities, labels) > 0.05


def test_adaptive_ece_on_a_hand_computed_case() -> None:
    # 30 images in 15 bins of two: bin b holds the top-class probabilities
    # 0.5 + (b+1)/32 ± 0.001 of two classes; in the first 5 bins both images are
    # right, in the rest both wrong. Equal-mass bins are these pairs.
    confidence = np.repeat(0.5 + (np.arange(15) + 1) / 32, 2) + np.tile([-0.001, 0.001], 15)
    probabilities = np.column_stack([confidence, 1 - confidence])
    right = np.arange(15) < 5
    labels = np.where(np.repeat(right, 2), 0, 1)
    pair_means = (confidence[::2] + confidence[1::2]) / 2
    expected = np.mean(np.abs(right - pair_means))
    assert adaptive_ece(probabilities, labels) == pytest.approx(expected, abs=1e-12)


def test_classwise_ece_matches_a_direct_per_class_loop() -> None:
    logits, labels = calibrated_model(2000, seed=2)
    probabilities = softmax(logits * 1.7, axis=1)
    per_class = []
    for k in range(CLASSES):
        p, hit = probabilities[:, k], labels == k
        total = 0.0
        for b in range(15):
            low, high = b / 15, (b + 1) / 15
            inside = (p > low) & (p <= high) if b else p <= high
            if inside.any():
                total += inside.mean() * abs(hit[inside].mean() - p[inside].mean())
        per_class.append(total)
    assert classwise_ece(probabilities, labels) == pytest.approx(np.mean(per_class), abs=1e-12)


def test_nll_brier_and_gap_match_their_formulas() -> None:
    logits, labels = calibrated_model(500, seed=3)
    measured = scores(log_softmax(logits, axis=1), labels, np.random.default_rng(0))
    reference_nll = torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels))
    assert measured.nll == pytest.approx(float(reference_nll), rel=1e-12)
    probabilities = softmax(logits, axis=1)
    assert measured.brier == pytest.approx(
        np.mean([np.sum((p - np.eye(CLASSES)[y]) ** 2) for p, y in zip(probabilities, labels, strict=True)])
    )
    accuracy = np.mean(probabilities.argmax(axis=1) == labels)
    assert measured.gap == pytest.approx(probabilities.max(axis=1).mean() - accuracy)
    # Known answers: a uniform prediction's Brier score is 1 - 1/K, its NLL log K.
    uniform = scores(np.full((4, CLASSES), -np.log(CLASSES)), np.arange(4), np.random.default_rng(0))
    assert uniform.brier == pytest.approx(1 - 1 / CLASSES)
    assert uniform.nll == pytest.approx(np.log(CLASSES))


@pytest.mark.parametrize(("sharpness", "expected_t"), [(3.0, 3.0), (0.4, 0.4)])
def test_temperature_undoes_over_and_under_confidence(sharpness: float, expected_t: float) -> None:
    """A calibrated model's logits multiplied by `sharpness` need T = sharpness."""
    logits, labels = calibrated_model(10_000, seed=4)
    distorted = logits * sharpness
    half = stratified_halves(labels, 0)
    fitted = cross_fit(distorted, labels, half, floor_seed=[0, 1])
    for temperature in fitted.temperatures:
        assert temperature == pytest.approx(expected_t, rel=0.1)
    assert (min(fitted.temperatures) > 1) == (sharpness > 1)
    assert fitted.after.ece < fitted.before.ece / 2
    assert fitted.after.nll < fitted.before.nll
    assert (fitted.before.gap > 0) == (sharpness > 1)  # over-confident: confidence above accuracy


def test_the_fitted_temperature_minimises_the_nll() -> None:
    logits, labels = calibrated_model(2000, seed=5)
    temperature = fit_temperature(logits * 2, labels)

    def nll(t: float) -> float:
        return float(
            torch.nn.functional.cross_entropy(torch.from_numpy(logits * 2 / t), torch.from_numpy(labels))
        )

    assert nll(temperature) <= min(nll(temperature * 0.98), nll(temperature * 1.02))


def test_cross_fitting_never_scores_an_image_with_a_temperature_fitted_on_it() -> None:
    logits, labels = calibrated_model(3000, seed=6)
    logits = logits * 2
    half = stratified_halves(labels, 7)
    fitted = cross_fit(logits, labels, half, floor_seed=[0, 0])
    for k in range(FOLDS):
        on = half == k
        assert fitted.temperatures[k] == fit_temperature(logits[on], labels[on])
        np.testing.assert_array_equal(
            fitted.scaled[~on], log_softmax(logits[~on] / fitted.temperatures[k], axis=1)
        )
    # Change only half 1's images: the T fitted on half 0 and the scores of half 1's
    # images (scored with it) do not see half 1's own change through T.
    changed = logits.copy()
    changed[half == 1] *= 3
    refitted = cross_fit(changed, labels, half, floor_seed=[0, 0])
    assert refitted.temperatures[0] == fitted.temperatures[0]
    assert refitted.temperatures[1] != fitted.temperatures[1]
    np.testing.assert_array_equal(
        refitted.scaled[half == 1], log_softmax(changed[half == 1] / fitted.temperatures[0], axis=1)
    )


def test_halves_hold_half_of_every_class_and_follow_the_seed() -> None:
    labels = np.repeat(np.arange(CLASSES), [300, 301, 10, 11, 1, 2, 3, 50, 51, 1000])
    half = stratified_halves(labels, 0)
    for k in range(CLASSES):
        counts = np.bincount(half[labels == k], minlength=2)
        assert abs(counts[0] - counts[1]) <= 1, (k, counts)
    np.testing.assert_array_equal(half, stratified_halves(labels, 0))
    assert (half != stratified_halves(labels, 1)).any()


def test_the_floor_is_what_a_calibrated_model_scores_and_shrinks_with_more_images() -> None:
    floors = {}
    for n in (3000, 10_000):
        logits, labels = calibrated_model(n, seed=8)
        measured = scores(log_softmax(logits, axis=1), labels, np.random.default_rng(1))
        floors[n] = measured.ece_floor
        # The model is calibrated: its ECE is of the floor's size, not zero.
        assert 0.3 * measured.ece_floor < measured.ece < 3 * measured.ece_floor
        assert measured.ada_ece_floor > 0 and measured.classwise_ece_floor > 0
    assert floors[10_000] < floors[3000]
    # A sampling error: about 1/sqrt(n), so 10,000 images roughly halve it (√(10/3) = 1.8).
    assert 1.3 < floors[3000] / floors[10_000] < 2.5


def test_a_network_at_chance_fits_the_temperature_at_its_bound() -> None:
    """Logits that carry nothing about the label: no finite T is best, so the fit ends at
    the upper bound; that is why summaries give the median T, not the mean."""
    rng = np.random.default_rng(0)
    logits = np.tile(rng.normal(size=CLASSES), (2_000, 1))
    labels = rng.integers(0, CLASSES, size=2_000)
    assert fit_temperature(logits, labels) == pytest.approx(100.0, rel=1e-3)


def test_the_summarised_temperature_is_not_dragged_by_a_run_at_chance() -> None:
    """The JPEG study's CE seed 1 never left chance and fitted T at the bound; the
    summary's T for CE is the median over seeds and halves, near the other seeds'."""
    study = PROJECT / "studies" / "cifar10-jpeg"
    per_seed = json.loads((study / "metrics" / "calibration" / "ce.json").read_text())["per_seed"]
    temperatures = [t for seed in per_seed.values() for t in seed["temperatures"]]
    assert max(temperatures) == pytest.approx(100.0, rel=1e-3)  # the run at chance
    summary = json.loads((study / "metrics" / "summary.json").read_text())["calibration"]["temperature"]
    assert summary["ce"] == pytest.approx(float(np.median(temperatures)), abs=1e-4)
    assert summary["ce"] < 2
