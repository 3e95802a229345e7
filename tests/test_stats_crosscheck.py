"""Cross-checks of the statistics helpers against independent implementations.

The report's verdicts rest on a handful of hand-written formulas: ECE, per-class
recall and macro-F1 (evaluation.py), the detectable difference and the paired
p-values (stats.py). The unit tests in test_stats.py check them on hand-made
examples; here they are compared, on seeded random inputs and on edge cases,
with torchmetrics, scikit-learn, statsmodels, a direct numerical integration of
the t-test's power and an exact enumeration of the signed-rank distribution.
Where a library's convention legitimately differs (a bin-edge rule, which
classes a macro average counts), the inputs avoid the difference and one test
pins the difference down, so that a change on either side is noticed.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from numpy.typing import NDArray
from scipy import integrate, stats
from sklearn.metrics import f1_score, precision_score, recall_score
from statsmodels.stats.power import TTestPower
from statsmodels.stats.weightstats import DescrStatsW
from statsmodels.stats.weightstats import ttest_ind as unpaired_ttest
from torchmetrics.functional.classification import binary_calibration_error, multiclass_calibration_error

from lossbench.evaluation import (
    ECE_BINS,
    calibration_bins,
    evaluate_probabilities,
    expected_calibration_error,
    per_class_recall_and_macro_f1,
)
from lossbench.stats import detectable_difference, paired_comparison, wilcoxon_p

pytestmark = pytest.mark.fast  # in-process: no trainer, no DVC, no lossbench subprocess

# Sums of a few hundred float64 terms in a different order agree to ~1e-14 (ECE values near 0: abs).
REL, ABS = 1e-9, 1e-12


def _softmax(logits: NDArray[np.float64]) -> NDArray[np.float64]:
    shifted: NDArray[np.float64] = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities: NDArray[np.float64] = shifted / shifted.sum(axis=1, keepdims=True)
    return probabilities


def _case(name: str) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """(N, C) float64 probabilities and labels of one named test case."""
    rng = np.random.default_rng(sum(map(ord, name)))
    n, classes = (300, 3) if name == "three_classes" else (500, 10)
    logits = rng.normal(0.0, 2.0, (n, classes))
    if name == "never_predicted":
        logits[:, 4] -= 50.0  # class 4 is never the arg-max
    probabilities = _softmax(logits)
    predictions = probabilities.argmax(axis=1)
    # About 60% right, the rest uniform: every bin and class sees both outcomes.
    labels = np.where(rng.random(n) < 0.6, predictions, rng.integers(0, classes, n))
    if name == "absent_label":
        labels[labels == 7] = 2  # class 7 is predicted but never the label
    if name == "all_correct":
        labels = predictions
    return probabilities, labels.astype(np.int64)


CASES = ["random", "three_classes", "never_predicted", "absent_label", "all_correct"]


def _distance_to_bin_edges(confidence: NDArray[np.float64], bins: int = ECE_BINS) -> float:
    edges = np.arange(bins + 1) / bins
    return float(np.min(np.abs(confidence[:, None] - edges[None, :])))


# --- ECE against torchmetrics ------------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_ece_matches_torchmetrics_multiclass_calibration_error(name: str) -> None:
    probabilities, labels = _case(name)
    # torchmetrics casts the confidences to float32 (`.float()` in its multiclass update) and
    # sums them in float32: ~4e-8 seen on the ECE, 1e-6 allowed; and no confidence may sit
    # close enough to a bin edge for that rounding (~6e-8) to move it across.
    assert _distance_to_bin_edges(probabilities.max(axis=1)) > 1e-6
    expected = multiclass_calibration_error(
        torch.from_numpy(probabilities),
        torch.from_numpy(labels),
        num_classes=probabilities.shape[1],
        n_bins=ECE_BINS,
        norm="l1",
    )
    assert evaluate_probabilities(probabilities, labels).ece == pytest.approx(float(expected), abs=1e-6)


@pytest.mark.parametrize("name", CASES)
def test_ece_matches_torchmetrics_top_label_binary_error_in_float64(name: str) -> None:
    # The binary metric on (top-class probability, prediction correct) is the same
    # top-label ECE, computed in the input's float64.
    probabilities, labels = _case(name)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    assert _distance_to_bin_edges(confidence) > 1e-12
    expected = binary_calibration_error(
        torch.from_numpy(confidence), torch.from_numpy(correct.astype(np.int64)), n_bins=ECE_BINS, norm="l1"
    )
    assert expected.dtype == torch.float64
    assert evaluate_probabilities(probabilities, labels).ece == pytest.approx(
        float(expected), rel=REL, abs=ABS
    )


def test_ece_of_all_correct_predictions_is_the_mean_shortfall_of_confidence() -> None:
    # Accuracy 1 in every bin: the ECE is mean(1 - confidence) whatever the binning.
    probabilities, labels = _case("all_correct")
    assert evaluate_probabilities(probabilities, labels).ece == pytest.approx(
        float(np.mean(1 - probabilities.max(axis=1))), rel=REL, abs=ABS
    )


def test_ece_with_shuffled_labels_disagrees_with_torchmetrics() -> None:
    probabilities, labels = _case("random")
    shuffled = np.random.default_rng(1).permutation(labels)
    expected = multiclass_calibration_error(
        torch.from_numpy(probabilities), torch.from_numpy(labels), num_classes=10, n_bins=ECE_BINS
    )
    assert abs(evaluate_probabilities(probabilities, shuffled).ece - float(expected)) > 0.05


def test_ece_ties_on_bin_edges_match_torchmetrics_on_mirrored_confidences() -> None:
    # The project's bins are upper-closed, (i/15, (i+1)/15]; torchmetrics' are lower-closed,
    # [i/15, (i+1)/15), with 1.0 alone in a 16th bin. For 1 - confidence the project's bins
    # become lower-closed, and |(1 - accuracy) - (1 - confidence)| = |accuracy - confidence|,
    # so torchmetrics on the mirrored inputs must give the project's ECE, ties included.
    torch_edges = torch.linspace(0, 1, ECE_BINS + 1, dtype=torch.float64).tolist()
    # Ties at k/15 whose mirror 1 - k/15 is bit-for-bit torchmetrics' edge (not so for k = 5, 10..14).
    ties = [k / ECE_BINS for k in range(1, ECE_BINS + 1) if 1 - k / ECE_BINS == torch_edges[ECE_BINS - k]]
    assert len(ties) >= 8 and 1.0 in ties and 1 / 15 in ties
    # Each tie wrong, with right neighbours 0.02 below and above it: which side it joins matters.
    below, above = np.array(ties) - 0.02, np.array(ties[:-1]) + 0.02
    confidence = np.concatenate([ties, below, above])
    correct = np.concatenate([np.zeros(len(ties), bool), np.ones(len(below) + len(above), bool)])
    project = expected_calibration_error(calibration_bins(confidence, correct))
    mirrored = binary_calibration_error(
        torch.from_numpy(1 - confidence), torch.from_numpy((~correct).astype(np.int64)), n_bins=ECE_BINS
    )
    assert project == pytest.approx(float(mirrored), rel=REL, abs=ABS)
    # Not mirrored, the same ties fall into other bins and the answer changes.
    plain = binary_calibration_error(
        torch.from_numpy(confidence), torch.from_numpy(correct.astype(np.int64)), n_bins=ECE_BINS
    )
    assert abs(project - float(plain)) > 0.01


def test_ece_bin_edge_rule_differs_from_torchmetrics() -> None:
    # A documented convention difference, not a bug: the project closes bins at the top
    # (0.6 = 9/15 is in bin 8, 1.0 in bin 14), torchmetrics at the bottom (0.6 is in
    # bin 9 with 0.65, and 1.0 has a 16th bin of its own).
    confidence = np.array([0.6, 0.65])
    correct = np.array([True, False])
    # Project: |1 - 0.6| and |0 - 0.65| in two bins; torchmetrics: |0.5 - 0.625| in one.
    assert expected_calibration_error(calibration_bins(confidence, correct)) == pytest.approx(
        0.525, rel=REL, abs=ABS
    )
    theirs = binary_calibration_error(torch.from_numpy(confidence), torch.tensor([1, 0]), n_bins=ECE_BINS)
    assert float(theirs) == pytest.approx(0.125, rel=REL, abs=ABS)
    confidence, correct = np.array([1.0, 0.95]), np.array([False, True])
    # Project: |0.5 - 0.975| in one bin; torchmetrics: (|0 - 1| + |1 - 0.95|) / 2 in two.
    assert expected_calibration_error(calibration_bins(confidence, correct)) == pytest.approx(
        0.475, rel=REL, abs=ABS
    )
    theirs = binary_calibration_error(torch.from_numpy(confidence), torch.tensor([0, 1]), n_bins=ECE_BINS)
    assert float(theirs) == pytest.approx(0.525, rel=REL, abs=ABS)


# --- per-class recall and macro-F1 against scikit-learn ------------------------------------------


def _sklearn_recall_and_macro_f1(
    labels: NDArray[np.int64], predictions: NDArray[np.int64], num_classes: int
) -> tuple[list[float], float]:
    # labels= fixes the class list (the project averages over all of them); zero_division=0
    # is the project's 0 for a recall without labels or a precision without predictions.
    classes = list(range(num_classes))
    recall = recall_score(labels, predictions, labels=classes, average=None, zero_division=0.0)
    macro_f1 = f1_score(labels, predictions, labels=classes, average="macro", zero_division=0.0)
    return [float(r) for r in recall], float(macro_f1)


@pytest.mark.parametrize("name", CASES)
def test_recall_and_macro_f1_match_sklearn(name: str) -> None:
    probabilities, labels = _case(name)
    evaluation = evaluate_probabilities(probabilities, labels)
    recall, macro_f1 = _sklearn_recall_and_macro_f1(labels, evaluation.predictions, probabilities.shape[1])
    assert evaluation.per_class_recall == pytest.approx(recall, rel=REL, abs=ABS)
    assert evaluation.macro_f1 == pytest.approx(macro_f1, rel=REL, abs=ABS)


def test_the_edge_cases_are_what_their_names_say() -> None:
    never = _case("never_predicted")
    assert 4 not in never[0].argmax(axis=1) and 4 in never[1]
    absent = _case("absent_label")
    assert 7 not in absent[1] and 7 in absent[0].argmax(axis=1)
    probabilities, labels = _case("all_correct")
    assert evaluate_probabilities(probabilities, labels).macro_f1 == 1.0


def test_recall_and_macro_f1_match_sklearn_with_a_class_absent_from_both() -> None:
    rng = np.random.default_rng(3)
    labels = rng.choice([0, 1, 2, 4], 200)  # class 3 neither label nor prediction
    predictions = np.where(rng.random(200) < 0.5, labels, rng.choice([0, 1, 2, 4], 200))
    recall, macro_f1 = per_class_recall_and_macro_f1(labels, predictions, 5)
    expected_recall, expected_f1 = _sklearn_recall_and_macro_f1(labels, predictions, 5)
    assert recall == pytest.approx(expected_recall, rel=REL, abs=ABS) and recall[3] == 0.0
    assert macro_f1 == pytest.approx(expected_f1, rel=REL, abs=ABS)


def test_recall_with_labels_and_predictions_swapped_is_sklearns_precision() -> None:
    probabilities, labels = _case("random")
    predictions = probabilities.argmax(axis=1)
    recall, _ = per_class_recall_and_macro_f1(labels, predictions, 10)
    swapped, _ = per_class_recall_and_macro_f1(predictions, labels, 10)
    precision = precision_score(labels, predictions, labels=list(range(10)), average=None, zero_division=0.0)
    assert swapped == pytest.approx(list(precision), rel=REL, abs=ABS)
    assert max(abs(r - p) for r, p in zip(recall, precision, strict=True)) > 0.05


def test_macro_f1_averages_over_all_classes_unlike_sklearns_default() -> None:
    # A documented convention difference: without labels=, sklearn averages only over the
    # classes seen in labels or predictions; the project over all num_classes (an unseen
    # class counts as F1 0), so a test set's class list does not change the scale.
    labels, predictions = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])
    _, macro_f1 = per_class_recall_and_macro_f1(labels, predictions, 3)
    seen_only = float(f1_score(labels, predictions, average="macro"))
    assert seen_only == pytest.approx((2 / 3 + 4 / 5) / 2, rel=REL, abs=ABS)
    assert macro_f1 == pytest.approx(seen_only * 2 / 3, rel=REL, abs=ABS)


# --- detectable difference against statsmodels and numerical integration ------------------------

# alpha 0.01 is left out where statsmodels is compared: see the last test of this section.
POWER_GRID = [
    (n, alpha, power) for n in (3, 4, 5, 8, 12, 20) for alpha in (0.05, 0.1) for power in (0.5, 0.8, 0.95)
]


def _power_by_integration(effect: float, n: int, alpha: float) -> float:
    """Two-sided one-sample t-test power, from its definition rather than scipy's noncentral t:
    T = (Z + effect·√n) / √(V/df), V ~ χ²(df); the test rejects when |T| > t_{1-α/2, df}."""
    df = n - 1
    critical = float(stats.t.isf(alpha / 2, df))
    shift = effect * math.sqrt(n)
    log_norm = -(df / 2) * math.log(2) - math.lgamma(df / 2)

    def integrand(v: float) -> float:
        threshold = critical * math.sqrt(v / df)
        reject = 0.5 * math.erfc((threshold - shift) / math.sqrt(2)) + 0.5 * math.erfc(
            (threshold + shift) / math.sqrt(2)
        )
        return reject * math.exp(log_norm + (df / 2 - 1) * math.log(v) - v / 2) if v > 0 else 0.0

    return float(integrate.quad(integrand, 0, math.inf, epsabs=1e-13, epsrel=1e-12, limit=200)[0])


@pytest.mark.parametrize(("n", "alpha", "power"), POWER_GRID)
def test_detectable_difference_matches_statsmodels_solve_power(n: int, alpha: float, power: float) -> None:
    effect = TTestPower().solve_power(effect_size=None, nobs=n, alpha=alpha, power=power)
    for std in (0.004, 1.0, 2.5):
        found = detectable_difference(std, n, alpha, power)
        assert found is not None
        # statsmodels stops its bracketing root search at xtol=1e-5 (in effect-size units);
        # the project's brentq at 2e-12.
        assert found / std == pytest.approx(effect, rel=0, abs=1e-5)


@pytest.mark.parametrize(("n", "alpha", "power"), POWER_GRID)
def test_detectable_difference_has_the_target_power_by_statsmodels(
    n: int, alpha: float, power: float
) -> None:
    found = detectable_difference(1.0, n, alpha, power)
    assert found is not None
    # The root is within 2e-12 of the exact one and power changes by < 1 per unit effect.
    assert TTestPower().power(found, n, alpha, alternative="two-sided") == pytest.approx(power, abs=1e-10)
    # One-sided, the same difference would be detected clearly more often: it is two-sided.
    assert TTestPower().power(found, n, alpha, alternative="larger") > power + 0.01


@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.1])
@pytest.mark.parametrize("n", [3, 4, 6, 10, 20])
def test_detectable_difference_has_the_target_power_by_integration(n: int, alpha: float) -> None:
    for power in (0.5, 0.8, 0.9):
        found = detectable_difference(1.0, n, alpha, power)
        assert found is not None
        # quad's tolerance (1e-12) and the root's (2e-12) leave ~1e-11; 1e-9 is slack.
        assert _power_by_integration(found, n, alpha) == pytest.approx(power, abs=1e-9)
        assert abs(_power_by_integration(found * 0.95, n, alpha) - power) > 1e-3


def test_statsmodels_solve_power_misses_the_root_for_three_pairs_at_alpha_001() -> None:
    # Not the project's error: statsmodels' power() is nan there (its noncentral-t far
    # tail), and its solver silently returns a non-root, at power 0.41 instead of 0.9.
    found = detectable_difference(1.0, 3, 0.01, 0.9)
    assert found is not None and _power_by_integration(found, 3, 0.01) == pytest.approx(0.9, abs=1e-9)
    assert math.isnan(TTestPower().power(found, 3, 0.01))
    theirs = TTestPower().solve_power(effect_size=None, nobs=3, alpha=0.01, power=0.9)
    assert _power_by_integration(theirs, 3, 0.01) < 0.5


# --- paired t-test and Wilcoxon p-values --------------------------------------------------------


@pytest.mark.parametrize("n", [3, 4, 5, 10, 20])
def test_paired_t_p_value_and_interval_match_statsmodels(n: int) -> None:
    rng = np.random.default_rng(n)
    seed_effect = rng.normal(0.7, 0.1, n)  # shared by both losses on a seed
    first = seed_effect + rng.normal(0.01, 0.01, n)
    second = seed_effect + rng.normal(0.0, 0.01, n)
    comparison = paired_comparison(first.tolist(), second.tolist())
    differences = DescrStatsW(first - second)
    _, p_value, df = differences.ttest_mean(0.0, alternative="two-sided")
    low, high = differences.tconfint_mean(alpha=0.05, alternative="two-sided")
    assert df == n - 1
    assert comparison["p_value"] == pytest.approx(p_value, rel=REL, abs=ABS)
    assert comparison["mean_difference"] == pytest.approx(differences.mean, rel=REL, abs=ABS)
    assert (comparison["ci95_low"], comparison["ci95_high"]) == pytest.approx((low, high), rel=REL, abs=ABS)
    # Unpaired, the seed effect swamps the difference: a clearly different p-value.
    unpaired_p = unpaired_ttest(first, second)[1]
    assert abs(math.log(unpaired_p) - math.log(comparison["p_value"])) > 0.5


def _exact_wilcoxon_p(differences: NDArray[np.float64]) -> float:
    """Two-sided signed-rank p-value by enumerating all 2**n sign patterns (zeros dropped,
    tied |differences| given their mean rank; sums of half-integers are exact in float64)."""
    data = differences[differences != 0]
    ranks = stats.rankdata(np.abs(data))
    observed = ranks[data > 0].sum()
    signs = np.array(list(itertools.product((0.0, 1.0), repeat=len(data))))
    positive_sums = signs @ ranks
    return min(1.0, 2 * float(min(np.mean(positive_sums <= observed), np.mean(positive_sums >= observed))))


WILCOXON_CASES = {
    "n3": np.random.default_rng(3).normal(0.5, 1, 3),
    "n6": np.random.default_rng(6).normal(0.5, 1, 6),
    "n9": np.random.default_rng(9).normal(0.5, 1, 9),
    "n12": np.random.default_rng(12).normal(0.5, 1, 12),
    # Dropping the zeros ("wilcox") gives 0.3125 here; ranking them first ("pratt") 0.34375.
    "zeros": np.array([0.0, 0.3, -0.25, 0.0, 0.7, -0.2, 0.5, 0.1]),
    "ties": np.array([0.2, -0.2, 0.4, 0.4, -0.1, 0.6, 0.2, 0.3]),
}


@pytest.mark.parametrize("name", WILCOXON_CASES)
def test_wilcoxon_p_matches_exact_sign_flip_enumeration(name: str) -> None:
    differences = WILCOXON_CASES[name]
    assert wilcoxon_p(differences.tolist()) == pytest.approx(_exact_wilcoxon_p(differences), rel=REL, abs=ABS)


def test_wilcoxon_p_changes_when_one_sign_is_flipped() -> None:
    differences = WILCOXON_CASES["n9"]
    flipped = differences.copy()
    largest = int(np.argmax(np.abs(flipped)))
    flipped[largest] = -flipped[largest]
    p_value = wilcoxon_p(flipped.tolist())
    assert p_value is not None and p_value == pytest.approx(_exact_wilcoxon_p(flipped), rel=REL, abs=ABS)
    assert abs(p_value - _exact_wilcoxon_p(differences)) > 0.01
