"""Calibration as the focal-loss literature measures it, before and after
temperature scaling (Guo et al. 2017; Mukhoti et al. 2020): numpy and scipy
only, from a network's test logits.

Temperature scaling divides the logits by one scalar T > 0 fitted by the
negative log-likelihood on held-out images. Here the held-out images are half
of the test set: `cross_fit` fits T on one class-stratified half and scores
the other half, then swaps, so no image is scored with a T fitted on it, and
reports each measure as the mean over the two scored halves.

The measures, each in [0, 1] but NLL:
- ECE: top-label confidence in 15 equal-width bins, sum over bins of the
  bin's share of images × |accuracy − mean confidence| (as `evaluation`);
- AdaECE: the same over 15 equal-mass bins (equal numbers of images);
- class-wise ECE: for each class, its probability in 15 equal-width bins
  against whether the image is of that class; the mean over classes;
- NLL, Brier score (sum over classes of the squared error, mean over images),
  and the signed gap, mean confidence − accuracy (> 0: over-confident).

A perfectly calibrated model still scores above 0 on a finite test set: its
*floor* is estimated by drawing each image's label from the model's own
probabilities (so the model is calibrated by construction) and scoring that,
a seeded average over FLOOR_DRAWS draws. An ECE near its floor is noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from lossbench.evaluation import ECE_BINS, calibration_bins, expected_calibration_error

FLOOR_DRAWS = 200
# T is searched in [1/100, 100] (on a log scale, where the fitted NLL is
# unimodal: it is convex in 1/T). A T at either end is reported as such.
TEMPERATURE_RANGE = (1e-2, 1e2)
FOLDS = 2


@dataclass(frozen=True)
class Scores:
    """One set of test images' calibration measures and the floors of the three ECEs."""

    ece: float
    ada_ece: float
    classwise_ece: float
    nll: float
    brier: float
    gap: float  # mean confidence - accuracy
    ece_floor: float
    ada_ece_floor: float
    classwise_ece_floor: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


MEASURES = tuple(Scores.__dataclass_fields__)


def ece(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    return expected_calibration_error(calibration_bins(confidence, correct, bins))


def _binned_gaps(scores: np.ndarray, hits: np.ndarray, index: np.ndarray, bins: int) -> np.ndarray:
    """Sum over bins of (share of images) × |mean hit − mean score|, for each row of
    `hits` (draws × images, or one row): the bins depend on the scores alone."""
    members = np.zeros((len(scores), bins))
    members[np.arange(len(scores)), index] = 1.0
    gaps: np.ndarray = np.abs(np.atleast_2d(hits).astype(float) @ members - scores @ members).sum(axis=1)
    return gaps / len(scores)


def _equal_width_index(scores: np.ndarray, bins: int) -> np.ndarray:
    # bin i holds i/bins < score <= (i+1)/bins, and a score of 0 bin 0 (as evaluation.calibration_bins)
    index: np.ndarray = np.clip(np.ceil(scores * bins).astype(int) - 1, 0, bins - 1)
    return index


def _equal_mass_index(scores: np.ndarray, bins: int) -> np.ndarray:
    """The scores sorted (ties kept in image order) and split into `bins` runs of
    equal size (sizes differ by at most one)."""
    index = np.empty(len(scores), dtype=int)
    for number, members in enumerate(np.array_split(np.argsort(scores, kind="stable"), bins)):
        index[members] = number
    return index


def adaptive_ece(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE over equal-mass bins of the top-class confidence."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    return float(_binned_gaps(confidence, correct, _equal_mass_index(confidence, bins), bins)[0])


def classwise_ece(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """The mean over classes of each class's probability's ECE against 'is of that class'."""
    return float(np.mean(_classwise_gaps(probabilities, labels, bins)))


def _classwise_gaps(probabilities: np.ndarray, labels: np.ndarray, bins: int) -> np.ndarray:
    """Per row of `labels` (draws × images, or one row), the class-wise ECE."""
    classes = probabilities.shape[1]
    per_class = [
        _binned_gaps(probabilities[:, k], labels == k, _equal_width_index(probabilities[:, k], bins), bins)
        for k in range(classes)
    ]
    gaps: np.ndarray = np.mean(per_class, axis=0)
    return gaps


def _floors(probabilities: np.ndarray, rng: np.random.Generator) -> tuple[float, float, float]:
    """The three ECEs of a model calibrated by construction: labels drawn from
    `probabilities` themselves, FLOOR_DRAWS times, the mean of each."""
    cumulative = probabilities.cumsum(axis=1)
    cumulative[:, -1] = np.inf  # a draw past rounding's last cent is the last class
    draws = rng.random((FLOOR_DRAWS, len(probabilities)))
    drawn = (draws[:, :, None] >= cumulative[None, :, :]).sum(axis=2)  # draws × images
    confidence = probabilities.max(axis=1)
    correct = drawn == probabilities.argmax(axis=1)[None, :]
    ece_floor = _binned_gaps(confidence, correct, _equal_width_index(confidence, ECE_BINS), ECE_BINS)
    ada_floor = _binned_gaps(confidence, correct, _equal_mass_index(confidence, ECE_BINS), ECE_BINS)
    classwise_floor = _classwise_gaps(probabilities, drawn, ECE_BINS)
    return float(ece_floor.mean()), float(ada_floor.mean()), float(classwise_floor.mean())


def scores(log_probabilities: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> Scores:
    """Every measure of one set of images, from log-softmax outputs (N, classes)."""
    probabilities = np.exp(log_probabilities)
    one_hot = np.eye(probabilities.shape[1])[labels]
    confidence = probabilities.max(axis=1)
    accuracy = float(np.mean(probabilities.argmax(axis=1) == labels))
    ece_floor, ada_floor, classwise_floor = _floors(probabilities, rng)
    return Scores(
        ece=ece(probabilities, labels),
        ada_ece=adaptive_ece(probabilities, labels),
        classwise_ece=classwise_ece(probabilities, labels),
        nll=float(-log_probabilities[np.arange(len(labels)), labels].mean()),
        brier=float(((probabilities - one_hot) ** 2).sum(axis=1).mean()),
        gap=float(confidence.mean()) - accuracy,
        ece_floor=ece_floor,
        ada_ece_floor=ada_floor,
        classwise_ece_floor=classwise_floor,
    )


def scaled_nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    return float(-log_softmax(logits / temperature, axis=1)[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T > 0 that minimises the NLL of softmax(logits / T) on these images."""
    low, high = np.log(TEMPERATURE_RANGE)
    found = minimize_scalar(
        lambda log_t: scaled_nll(logits, labels, float(np.exp(log_t))),
        bounds=(low, high),
        method="bounded",
        options={"xatol": 1e-7},
    )
    return float(np.exp(found.x))


def stratified_halves(labels: np.ndarray, seed: int) -> np.ndarray:
    """Each image's half (0 or 1): every class's images shuffled with `seed`, then
    dealt alternately, so each half holds half of every class (one more where odd)."""
    rng = np.random.default_rng(seed)
    half = np.empty(len(labels), dtype=int)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        half[members] = np.arange(len(members)) % FOLDS
    return half


@dataclass(frozen=True)
class CrossFit:
    """Temperature scaling cross-fitted over the two halves of a test set."""

    temperatures: tuple[float, ...]  # [k]: fitted on half k, used to score the other half
    before: Scores  # each measure the mean over the two scored halves, unscaled
    after: Scores  # the same, scaled
    scaled: np.ndarray  # every image's log-probabilities, scaled by the T fitted on the other half


def _mean_scores(parts: list[Scores]) -> Scores:
    return Scores(**{name: float(np.mean([getattr(part, name) for part in parts])) for name in MEASURES})


def cross_fit(
    logits: np.ndarray, labels: np.ndarray, half: np.ndarray, floor_seed: Sequence[int]
) -> CrossFit:
    """Fit T on each half and score the other with it; `half` from `stratified_halves`."""
    rng = np.random.default_rng(list(floor_seed))
    logits = logits.astype(np.float64)
    scaled = np.empty_like(logits)
    temperatures, before, after = [], [], []
    for fitted in range(FOLDS):
        on, scored = half == fitted, half != fitted
        temperature = fit_temperature(logits[on], labels[on])
        scaled[scored] = log_softmax(logits[scored] / temperature, axis=1)
        temperatures.append(temperature)
        before.append(scores(log_softmax(logits[scored], axis=1), labels[scored], rng))
        after.append(scores(scaled[scored], labels[scored], rng))
    return CrossFit(tuple(temperatures), _mean_scores(before), _mean_scores(after), scaled)
