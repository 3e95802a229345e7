"""The seed study's five claims, each measured on this run's results.

A claim gets a verdict from paired comparisons over seeds: *supported
(significant)* when every comparison goes the claimed way at p < 0.05
(paired t-test), *opposite (significant)* when one goes the other way, *not
significant* otherwise, with the smallest difference these seeds could have
detected, so a reader knows how large an effect could still hide.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np

from lossbench.params import CeLoss, FocalLoss, MaeLoss
from lossbench.results import LossResult, md
from lossbench.stats import CANNOT_TELL, NO_DIFFERENCE, direction, friedman_p, paired_comparison

# Claim 2's "around epoch 25": each loss's mean convergence epoch within this many epochs of 25.
AROUND_EPOCH_25 = 5
# Claim 3: "barely changes its loss" = the training loss falls by at most this
# fraction from epoch 1 to the end; "near 0.4 accuracy" = within this of 0.4.
BARELY_CHANGES = 0.10
NEAR_04 = 0.10
# Head and tail classes of a long-tailed training set: this many largest and smallest.
HEAD_TAIL_CLASSES = 3


@dataclass(frozen=True)
class Claim:
    number: int
    statement: str
    verdict: str
    evidence: str


def points(value: float) -> str:
    return f"{100 * value:.1f}"


def describe(comparison: dict[str, Any], scale: float = 100.0, unit: str = " points") -> str:
    """'+1.2 points [−0.3, +2.7], p=0.08 (Wilcoxon 0.12; detectable ±2.9)' for a paired comparison."""
    text = f"{scale * comparison['mean_difference']:+.1f}{unit}"
    if comparison["ci95_low"] is not None:
        text += f" [{scale * comparison['ci95_low']:+.1f}, {scale * comparison['ci95_high']:+.1f}]"
    if comparison["p_value"] is not None:
        text += f", p={comparison['p_value']:.3g} (Wilcoxon {comparison['wilcoxon_p']:.3g}"
        if direction(comparison) == NO_DIFFERENCE and comparison["detectable"] is not None:
            text += f"; could detect ±{scale * comparison['detectable']:.1f}"
        text += ")"
    return text


def find_focal(results: list[LossResult], gamma: float) -> LossResult | None:
    return next(
        (
            r
            for r in results
            if isinstance(r.spec, FocalLoss) and r.spec.gamma == gamma and r.spec.alpha is None
        ),
        None,
    )


def combine(directions: list[str], wanted: str) -> str:
    """All comparisons go the claimed way and significantly: supported; any
    significantly the other way: opposite; any that cannot be told (a nan
    p-value): cannot be told; otherwise: not significant."""
    opposite = "lower" if wanted == "higher" else "higher"
    if directions and all(d == wanted for d in directions):
        return "supported (significant)"
    if any(d == opposite for d in directions):
        return "opposite (significant)"
    if CANNOT_TELL in directions:
        return CANNOT_TELL
    return "not significant"


def best_focal(results: list[LossResult], class_counts: dict[str, Any]) -> tuple[str, str]:
    focal = find_focal(results, 0.5)
    others = [r for r in results if r is not focal]
    if focal is None or not others:
        return (
            "not testable",
            "This run has no focal loss with γ=0.5 (and no α), or nothing to compare it with.",
        )
    directions, parts = [], []
    for key, what in (("final_test_acc", "test"), ("final_train_acc", "train")):
        for other in others:
            comparison = paired_comparison(focal.values(key), other.values(key))
            directions.append(direction(comparison))
            parts.append(f"{what} vs {md(other.label)}: {describe(comparison)}")
    return combine(directions, "higher"), (
        f"{md(focal.label)} ends at {points(focal.mean('final_test_acc'))}% test and "
        f"{points(focal.mean('final_train_acc'))}% train accuracy (seed means). Paired differences "
        f"(focal minus other, mean [95% CI], paired t-test): {'; '.join(parts)}."
    )


def same_speed(results: list[LossResult], class_counts: dict[str, Any]) -> tuple[str, str]:
    group = [r for r in results if isinstance(r.spec, CeLoss)]
    group += [f for f in (find_focal(results, 0.5), find_focal(results, 2.0)) if f is not None]
    if len(group) < 2:
        return (
            "not testable",
            "Claim 2 needs CE and the focal losses with γ=0.5 and γ=2; this run lacks them.",
        )
    means = ", ".join(f"{md(r.label)} {r.mean('convergence_epoch'):.1f}" for r in group)
    parts, directions = [], []
    for first, second in combinations(group, 2):
        comparison = paired_comparison(first.values("convergence_epoch"), second.values("convergence_epoch"))
        directions.append(direction(comparison))
        parts.append(f"{md(first.label)} − {md(second.label)}: {describe(comparison, 1.0, ' epochs')}")
    differ = any(d in ("higher", "lower") for d in directions)
    near_25 = all(abs(r.mean("convergence_epoch") - 25) <= AROUND_EPOCH_25 for r in group)
    if differ:
        verdict = "not supported (significant difference)"
    elif CANNOT_TELL in directions:
        verdict = CANNOT_TELL
    elif near_25:
        verdict = "supported (no significant difference)"
    else:
        verdict = "not supported (not around epoch 25)"
    return verdict, (
        f"Mean convergence epochs: {means}. Paired differences: {'; '.join(parts)}. "
        f"{'All' if near_25 else 'Not all'} means lie within {AROUND_EPOCH_25} epochs of epoch 25. "
        "No significant difference is not proof of equal speed, only an absence of evidence against it."
    )


def mae_flat(results: list[LossResult], class_counts: dict[str, Any]) -> tuple[str, str]:
    mae = next((r for r in results if isinstance(r.spec, MaeLoss)), None)
    if mae is None:
        return "not testable", "This run has no MAE/L1 loss, so claim 3 cannot be checked."
    by_seed = mae.history.sort_values("epoch").groupby("seed")["train_loss"]
    change = float(((by_seed.first() - by_seed.last()) / by_seed.first()).mean())
    accuracy = mae.mean("final_test_acc")
    flat, near = abs(change) <= BARELY_CHANGES, abs(accuracy - 0.4) <= NEAR_04
    verdict = "supported" if flat and near else ("partly supported" if flat or near else "not supported")
    return verdict, (
        f"{md(mae.label)}: the training loss fell by {100 * change:.1f}% from epoch 1 to the end on average "
        f"(we call ≤{100 * BARELY_CHANGES:.0f}% 'barely changes'); final test accuracy "
        f"{points(accuracy)}% (claim: about 40%, we allow ±{points(NEAR_04)} points). The MAE gradient "
        "through the softmax vanishes for confidently wrong predictions, which is why it learns slowly."
    )


def gamma_claim(accuracy: dict[float, dict[int, float]]) -> tuple[str, str]:
    """Claim 4 from final test accuracy by γ and seed (CE counts as γ=0): the
    best γ inside [0.5, 2] against the best outside it and against every γ
    above 2, paired on the seeds every γ has; Friedman's rank test asks
    whether γ matters at all."""
    inside = [g for g in accuracy if 0.5 <= g <= 2]
    outside = [g for g in accuracy if not 0.5 <= g <= 2]
    if not inside or not outside:
        return "not testable", "Claim 4 needs a γ inside [0.5, 2] and one outside it."
    seeds = sorted(set.intersection(*(set(by_seed) for by_seed in accuracy.values())))
    unpaired = sorted(set().union(*accuracy.values()) - set(seeds))
    if len(seeds) < 2:
        return "not testable", "Claim 4 needs at least two seeds that every γ was trained on."
    values = {g: [accuracy[g][seed] for seed in seeds] for g in accuracy}
    means = {g: float(np.mean(v)) for g, v in values.items()}
    best_in = max(inside, key=means.__getitem__)
    best_out = max(outside, key=means.__getitem__)
    rivals = [best_out] + [g for g in sorted(outside) if g > 2 and g != best_out]
    directions, parts = [], []
    for rival in rivals:
        comparison = paired_comparison(values[best_in], values[rival])
        directions.append(direction(comparison))
        parts.append(f"γ={best_in:g} − γ={rival:g}: {describe(comparison)}")
    listing = ", ".join(f"γ={g:g}: {points(means[g])}%" for g in sorted(means))
    left_out = f" (seeds {', '.join(map(str, unpaired))} left out: not every γ has them)" if unpaired else ""
    against = "the best outside it" + (", and every γ above 2" if len(rivals) > 1 else "")
    ranks = friedman_p([values[g] for g in sorted(values)])
    rank_text = "" if ranks is None else f" Friedman rank test over all {len(values)} γ: p={ranks:.3g}."
    note = (
        ""
        if any(0.5 < g < 2 for g in accuracy)
        else " No γ strictly between 0.5 and 2 was trained here; a γ sweep tests inside the range."
    )
    return combine(directions, "higher"), (
        f"Final test accuracy by γ (mean of seeds {', '.join(map(str, seeds))}{left_out}): {listing}. The best "
        f"γ inside [0.5, 2] minus {against}: {'; '.join(parts)}.{rank_text}{note}"
    )


def gamma_range(results: list[LossResult], class_counts: dict[str, Any]) -> tuple[str, str]:
    accuracy: dict[float, dict[int, float]] = {}  # CE is focal with γ=0
    for r in results:
        if isinstance(r.spec, CeLoss):
            gamma = 0.0
        elif isinstance(r.spec, FocalLoss) and r.spec.alpha is None:
            gamma = r.spec.gamma
        else:
            continue
        accuracy.setdefault(gamma, dict(zip(r.seeds, r.values("final_test_acc"), strict=True)))
    verdict, evidence = gamma_claim(accuracy)
    return verdict, evidence + " (CE counts as γ=0.)"


def head_and_tail(class_counts: dict[str, Any]) -> tuple[list[int], list[int]]:
    counts = list(class_counts["train"].values())
    order = sorted(range(len(counts)), key=lambda c: counts[c], reverse=True)
    size = min(HEAD_TAIL_CLASSES, len(counts) // 2)
    return order[:size], order[-size:]


def tail_recall(result: LossResult, tail: list[int]) -> list[float]:
    return [
        float(np.mean([numbers["per_class_recall"][c] for c in tail])) for numbers in result.per_seed.values()
    ]


def imbalance_noise(results: list[LossResult], class_counts: dict[str, Any]) -> tuple[str, str]:
    ce = next((r for r in results if isinstance(r.spec, CeLoss)), None)
    focals = [r for r in results if isinstance(r.spec, FocalLoss)]
    imbalanced = class_counts.get("imbalance_ratio", 1.0) > 1
    noisy = class_counts.get("label_noise", 0.0) > 0
    if not (imbalanced or noisy) or ce is None or not focals:
        counts = list(class_counts["train"].values())
        return "not testable", (
            f"This run's training set has a largest/smallest class ratio of {max(counts) / max(1, min(counts)):.2f} "
            "and clean labels (or lacks CE or a focal loss), so it carries no evidence about class imbalance "
            "or label noise. Set data.imbalance_ratio or data.label_noise (README) to test claim 5."
        )
    directions, parts = [], []
    if imbalanced:
        _, tail = head_and_tail(class_counts)
        for focal in focals:
            comparison = paired_comparison(tail_recall(focal, tail), tail_recall(ce, tail))
            directions.append(direction(comparison))
            parts.append(f"tail-class recall, {md(focal.label)} − CE: {describe(comparison)}")
    if noisy:
        for focal in focals:
            comparison = paired_comparison(focal.values("final_test_acc"), ce.values("final_test_acc"))
            directions.append(direction(comparison))
            parts.append(
                f"test accuracy under {points(class_counts['label_noise'])}% label noise, {md(focal.label)} − CE: "
                f"{describe(comparison)}"
            )
    return combine(directions, "higher"), (
        "Focal should beat CE on the minority classes of a long-tailed set, and CE should lose more to "
        f"noisy labels. Paired differences: {'; '.join(parts)}. (Sensitivity to noise proper is the drop "
        "from a clean run, which `dvc metrics diff` against the clean commit shows.)"
    )


STATEMENTS: list[tuple[str, Callable[[list[LossResult], dict[str, Any]], tuple[str, str]]]] = [
    ("Focal γ=0.5 reaches the highest train and test accuracy.", best_focal),
    ("CE, Focal γ=0.5 and Focal γ=2 converge at about the same speed, around epoch 25.", same_speed),
    ("L1 barely changes its loss and stays near 0.4 accuracy.", mae_flat),
    ("A γ between 0.5 and 2 is best; larger γ is not better.", gamma_range),
    ("Focal loss helps with class imbalance; CE is sensitive to label noise.", imbalance_noise),
]


def measure_claims(results: list[LossResult], class_counts: dict[str, Any]) -> list[Claim]:
    """The five claims' verdicts on these results."""
    return [
        Claim(number, statement, *measure(results, class_counts))
        for number, (statement, measure) in enumerate(STATEMENTS, 1)
    ]
