import math

import numpy as np
import pytest
from scipy import stats

from lossbench.evaluation import (
    at_chance,
    calibration_bins,
    evaluate_probabilities,
    expected_calibration_error,
)
from lossbench.stats import detectable_difference, paired_comparison, summarize, wilcoxon_p

pytestmark = pytest.mark.fast  # in-process: no trainer, no DVC, no lossbench subprocess


def test_summary_with_the_t_interval() -> None:
    summary = summarize([1.0, 2.0, 3.0])
    # mean 2, sd 1, t(0.975, df=2) = 4.302653 -> half-width 4.302653 / sqrt(3) = 2.484138
    assert summary["mean"] == 2.0 and summary["std"] == pytest.approx(1.0)
    assert summary["ci95_low"] == pytest.approx(2 - 2.484138, abs=1e-6)
    assert summary["ci95_high"] == pytest.approx(2 + 2.484138, abs=1e-6)


def test_one_value_has_no_interval() -> None:
    assert summarize([0.7]) == {"mean": 0.7, "std": 0.0, "ci95_low": None, "ci95_high": None, "n": 1}
    comparison = paired_comparison([0.7], [0.6])
    assert comparison["p_value"] is None


def test_paired_t_test_by_hand() -> None:
    # Differences 1, 2, 3: t = 2 / (1 / sqrt 3) = 3.4641 with 2 df; for df = 2 the t CDF
    # is 1/2 + t / (2 sqrt(2 + t^2)), so p = 1 - t / sqrt(2 + t^2) = 0.074180.
    comparison = paired_comparison([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    t = 2 / (1 / math.sqrt(3))
    assert comparison["p_value"] == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-6)
    assert comparison["mean_difference"] == 2.0


def test_pairing_removes_the_shared_seed_effect() -> None:
    # Seed effects are large, the loss effect small but steady: paired, it is significant.
    seed_effect = np.array([0.50, 0.60, 0.70, 0.55])
    loss_effect = np.array([0.010, 0.012, 0.009, 0.011])
    comparison = paired_comparison(seed_effect + loss_effect, seed_effect)
    assert comparison["mean_difference"] == pytest.approx(0.0105)
    assert comparison["p_value"] < 0.001
    assert stats.ttest_ind(seed_effect + loss_effect, seed_effect).pvalue > 0.5  # unpaired, it is lost


def test_ece_on_a_hand_made_example() -> None:
    confidence = np.array([0.95, 0.95, 0.55, 0.55])
    correct = np.array([True, False, True, True])
    rows = calibration_bins(confidence, correct)
    assert len(rows) == 15 and [r["count"] for r in rows if r["count"]] == [2, 2]
    assert rows[14]["accuracy"] == 0.5 and rows[8]["accuracy"] == 1.0
    # bin 14: 2/4 * |0.5 - 0.95| ; bin 8: 2/4 * |1.0 - 0.55|
    assert expected_calibration_error(rows) == pytest.approx(0.45)


def test_bin_edges_are_upper_inclusive() -> None:
    rows = calibration_bins(np.array([1 / 15, 1.0, 0.0]), np.array([True, True, True]))
    assert rows[0]["count"] == 2 and rows[14]["count"] == 1


def test_nll_brier_recall_and_macro_f1_by_hand() -> None:
    probabilities = np.array([[0.8, 0.2], [0.4, 0.6]])
    evaluation = evaluate_probabilities(probabilities, np.array([0, 0]))
    assert evaluation.predictions.tolist() == [0, 1]
    assert evaluation.nll == pytest.approx(-(math.log(0.8) + math.log(0.4)) / 2)
    assert evaluation.brier == pytest.approx(((0.2**2 + 0.2**2) + (0.6**2 + 0.6**2)) / 2)
    assert evaluation.per_class_recall == [0.5, 0.0]
    # class 0: precision 1, recall 0.5 -> F1 2/3; class 1: precision 0 -> F1 0
    assert evaluation.macro_f1 == pytest.approx(1 / 3)


def test_detectable_difference_known_answers() -> None:
    # Paired t, two-sided alpha 0.05, power 0.8: an effect of 0.6604 standard
    # deviations of the differences with 20 pairs (G*Power's one-sample t table).
    assert detectable_difference(1.0, 20) == pytest.approx(0.6604, abs=5e-4)
    assert detectable_difference(2.0, 20) == pytest.approx(2 * 0.6604, abs=1e-3)  # scales with the spread
    assert detectable_difference(1.0, 1) is None and detectable_difference(0.0, 10) is None


def test_the_detectable_difference_is_detected_four_times_in_five() -> None:
    """Simulated: paired differences of that mean and sd 1 reach p < 0.05 in 80% of 20,000 studies of 10 seeds."""
    effect = detectable_difference(1.0, 10)
    assert effect is not None
    rng = np.random.default_rng(0)
    samples = rng.normal(effect, 1.0, (20_000, 10))
    t = samples.mean(axis=1) / (samples.std(axis=1, ddof=1) / math.sqrt(10))
    power = float(np.mean(2 * stats.t.sf(np.abs(t), 9) < 0.05))
    assert power == pytest.approx(0.8, abs=0.01)


def test_wilcoxon_signed_rank_by_hand() -> None:
    # All four differences positive: the exact two-sided p is 2 / 2**4.
    assert wilcoxon_p([1.0, 2.0, 3.0, 4.0]) == pytest.approx(0.125)
    assert wilcoxon_p(list(range(1, 11))) == pytest.approx(2 / 2**10)
    # Ranks of |0.5|, |1|, |-2|, |3| are 1, 2, 3, 4; the negative ranks sum to 3, and 5 of the
    # 16 sign patterns have a sum of 3 or less: p = 2 * 5 / 16.
    assert wilcoxon_p([1.0, -2.0, 3.0, 0.5]) == pytest.approx(0.625)
    assert wilcoxon_p([0.0, 0.0]) == 1.0 and wilcoxon_p([1.0]) is None
    comparison = paired_comparison([0.9, 0.8, 0.7, 0.6], [0.5, 0.5, 0.5, 0.5])
    assert comparison["wilcoxon_p"] == pytest.approx(0.125) and comparison["p_value"] < 0.05


def test_runs_at_chance_on_constructed_histories() -> None:
    assert at_chance([0.10, 0.12, 0.11, 0.10], num_classes=10) == "never left chance"
    assert at_chance([0.10, 0.45, 0.52, 0.13], num_classes=10) == "collapsed to chance"
    assert at_chance([0.10, 0.45, 0.52, 0.55], num_classes=10) is None
    assert at_chance([0.50, 0.53, 0.54], num_classes=2) == "never left chance"
