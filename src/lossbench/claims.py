"""The seed study's five claims, measured: on one run's results (the report),
claim 4 across a γ sweep's experiments (`gamma_claim`) and claim 5 across a
study's long-tailed and noisy experiments (`imbalance_half`, `noise_half`).

A claim gets a verdict from paired comparisons over seeds: *supported
(significant)* when every comparison goes the claimed way at p < 0.05
(paired t-test), *opposite (significant)* when one goes the other way, *not
significant* otherwise, with the smallest difference these seeds could have
detected, so a reader knows how large an effect could still hide.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from lossbench.losses.ce import CeLoss
from lossbench.losses.focal import FocalLoss
from lossbench.losses.mae import MaeLoss
from lossbench.results import LossResult, VariantRun, md
from lossbench.stats import CANNOT_TELL, NO_DIFFERENCE, direction, friedman_p, paired_comparison, summarize

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


def percent(fraction: float) -> str:
    """A fraction in percent (or percentage points), one decimal: 0.1234 -> '12.3'."""
    return f"{100 * fraction:.1f}"


def comparison_text(comparison: dict[str, Any], scale: float = 100.0, unit: str = " points") -> str:
    """'+1.2 points [−0.3, +2.7], p=0.08 (Wilcoxon 0.12; could detect ±2.9)' for a paired comparison."""
    text = f"{scale * comparison['mean_difference']:+.1f}{unit}"
    if comparison["ci95_low"] is not None:
        text += f" [{scale * comparison['ci95_low']:+.1f}, {scale * comparison['ci95_high']:+.1f}]"
    if comparison["p_value"] is not None:
        text += f", p={comparison['p_value']:.3g} (Wilcoxon {comparison['wilcoxon_p']:.3g}"
        if direction(comparison) == NO_DIFFERENCE and comparison["detectable"] is not None:
            text += f"; could detect ±{scale * comparison['detectable']:.1f}"
        text += ")"
    return text


@dataclass
class Evidence:
    """Paired comparisons towards a verdict: the direction of each that counts,
    and each one in words ('WHAT: +1.2 points [...]')."""

    directions: list[str] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)

    def compare(
        self,
        what: str,
        first: list[float],
        second: list[float],
        counts: bool = True,
        scale: float = 100.0,
        unit: str = " points",
    ) -> None:
        """`first` minus `second`, paired by seed; `counts`: towards the verdict, not only told."""
        comparison = paired_comparison(first, second)
        if counts:
            self.directions.append(direction(comparison))
        self.parts.append(f"{what}: {comparison_text(comparison, scale, unit)}")


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
    evidence = Evidence()
    for key, what in (("final_test_acc", "test"), ("final_train_acc", "train")):
        for other in others:
            evidence.compare(f"{what} vs {md(other.label)}", focal.values(key), other.values(key))
    return combine(evidence.directions, "higher"), (
        f"{md(focal.label)} ends at {percent(focal.mean('final_test_acc'))}% test and "
        f"{percent(focal.mean('final_train_acc'))}% train accuracy (seed means). Paired differences "
        f"(focal minus other, mean [95% CI], paired t-test): {'; '.join(evidence.parts)}."
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
    evidence = Evidence()
    for first, second in combinations(group, 2):
        evidence.compare(
            f"{md(first.label)} − {md(second.label)}",
            first.values("convergence_epoch"),
            second.values("convergence_epoch"),
            scale=1.0,
            unit=" epochs",
        )
    differ = any(d in ("higher", "lower") for d in evidence.directions)
    near_25 = all(abs(r.mean("convergence_epoch") - 25) <= AROUND_EPOCH_25 for r in group)
    if differ:
        verdict = "not supported (significant difference)"
    elif CANNOT_TELL in evidence.directions:
        verdict = CANNOT_TELL
    elif near_25:
        verdict = "supported (no significant difference)"
    else:
        verdict = "not supported (not around epoch 25)"
    return verdict, (
        f"Mean convergence epochs: {means}. Paired differences: {'; '.join(evidence.parts)}. "
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
        f"{percent(accuracy)}% (claim: about 40%, we allow ±{percent(NEAR_04)} points). The MAE gradient "
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
    evidence = Evidence()
    for rival in rivals:
        evidence.compare(f"γ={best_in:g} − γ={rival:g}", values[best_in], values[rival])
    listing = ", ".join(f"γ={g:g}: {percent(means[g])}%" for g in sorted(means))
    left_out = f" (seeds {', '.join(map(str, unpaired))} left out: not every γ has them)" if unpaired else ""
    against = "the best outside it" + (", and every γ above 2" if len(rivals) > 1 else "")
    ranks = friedman_p([values[g] for g in sorted(values)])
    rank_text = "" if ranks is None else f" Friedman rank test over all {len(values)} γ: p={ranks:.3g}."
    note = (
        ""
        if any(0.5 < g < 2 for g in accuracy)
        else " No γ strictly between 0.5 and 2 was trained here; a γ sweep tests inside the range."
    )
    return combine(evidence.directions, "higher"), (
        f"Final test accuracy by γ (mean of seeds {', '.join(map(str, seeds))}{left_out}): {listing}. The best "
        f"γ inside [0.5, 2] minus {against}: {'; '.join(evidence.parts)}.{rank_text}{note}"
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


# --- claim 5: class imbalance and label noise ----------------------------------------------------

Measure = Callable[[LossResult], list[float]]  # one number per seed, in seed order


def head_and_tail(class_counts: dict[str, Any]) -> tuple[list[int], list[int]]:
    counts = list(class_counts["train"].values())
    order = sorted(range(len(counts)), key=lambda c: counts[c], reverse=True)
    size = min(HEAD_TAIL_CLASSES, len(counts) // 2)
    return order[:size], order[-size:]


def recall_over(result: LossResult, classes: list[int]) -> list[float]:
    """Each seed's mean recall over these classes (indices), in seed order."""
    return [
        float(np.mean([numbers["per_class_recall"][c] for c in classes]))
        for numbers in result.per_seed.values()
    ]


def final_accuracy(result: LossResult) -> list[float]:
    return result.values("final_test_acc")


def imbalance_measures(class_counts: dict[str, Any]) -> dict[str, Measure]:
    """What a long-tailed run is judged on, by column key: accuracy, recall
    over the head and the tail classes of its training set, and macro-F1."""
    head, tail = head_and_tail(class_counts)
    return {
        "test_acc": final_accuracy,
        "head_recall": lambda result: recall_over(result, head),
        "tail_recall": lambda result: recall_over(result, tail),
        "macro_f1": lambda result: result.values("macro_f1"),
    }


# The measures' names in the reports, by key.
MEASURE_NAMES = {
    "test_acc": "test acc",
    "head_recall": "head recall",
    "tail_recall": "tail recall",
    "macro_f1": "macro-F1",
}


def ce_and_focals(results: list[LossResult]) -> tuple[LossResult | None, list[LossResult]]:
    """The (first) CE result, and every focal one: what claim 5 sets against each other."""
    ce = next((r for r in results if isinstance(r.spec, CeLoss)), None)
    return ce, [r for r in results if isinstance(r.spec, FocalLoss)]


def imbalance_noise(results: list[LossResult], class_counts: dict[str, Any]) -> tuple[str, str]:
    """Claim 5 on one run: each focal loss against CE on the tail classes'
    recall (a long-tailed training set) and on accuracy (noisy labels)."""
    ce, focals = ce_and_focals(results)
    imbalanced = class_counts.get("imbalance_ratio", 1.0) > 1
    noisy = class_counts.get("label_noise", 0.0) > 0
    if not (imbalanced or noisy) or ce is None or not focals:
        counts = list(class_counts["train"].values())
        return "not testable", (
            f"This run's training set has a largest/smallest class ratio of {max(counts) / max(1, min(counts)):.2f} "
            "and clean labels (or lacks CE or a focal loss), so it carries no evidence about class imbalance "
            "or label noise. Set data.imbalance_ratio or data.label_noise (README) to test claim 5."
        )
    evidence = Evidence()
    if imbalanced:
        tail_recall = imbalance_measures(class_counts)["tail_recall"]
        for focal in focals:
            evidence.compare(
                f"tail-class recall, {md(focal.label)} − CE", tail_recall(focal), tail_recall(ce)
            )
    if noisy:
        for focal in focals:
            evidence.compare(
                f"test accuracy under {percent(class_counts['label_noise'])}% label noise, {md(focal.label)} − CE",
                final_accuracy(focal),
                final_accuracy(ce),
            )
    return combine(evidence.directions, "higher"), (
        "Focal should beat CE on the minority classes of a long-tailed set, and CE should lose more to "
        f"noisy labels. Paired differences: {'; '.join(evidence.parts)}. (Sensitivity to noise proper is the drop "
        "from a clean run, which `dvc metrics diff` against the clean commit shows.)"
    )


def half_verdict(cases: dict[str, list[str]]) -> tuple[str, str]:
    """A half of claim 5 from the directions of its cases (a variant and a
    focal loss each): supported when every case is, partly when some are and
    none goes the other way; and each case's own verdict."""
    each = {case: combine(directions, "higher") for case, directions in cases.items()}
    found = set(each.values())
    if not each:
        verdict = "not testable"
    elif found == {"supported (significant)"}:
        verdict = "supported (significant)"
    elif {"supported (significant)", "opposite (significant)"} <= found:
        verdict = "mixed (significant both ways)"
    elif "opposite (significant)" in found:
        verdict = "opposite (significant)"
    elif "supported (significant)" in found:
        verdict = "partly supported"
    elif CANNOT_TELL in found:
        verdict = CANNOT_TELL
    else:
        verdict = "not significant"
    return verdict, "; ".join(f"{case}: {case_verdict}" for case, case_verdict in each.items())


@dataclass(frozen=True)
class ClaimHalf:
    """A half of claim 5 across a study's runs: one table row per run and loss,
    and each case's paired comparisons (a variant and a focal loss, against CE)."""

    table: pd.DataFrame
    cases: dict[str, Evidence]

    @property
    def parts(self) -> list[str]:
        return [part for evidence in self.cases.values() for part in evidence.parts]

    def verdict(self) -> tuple[str, str]:
        """The half's verdict, and each case's (`half_verdict`)."""
        return half_verdict({case: evidence.directions for case, evidence in self.cases.items()})


def _mean_sd(values: list[float]) -> tuple[float, float]:
    summary = summarize(values)
    return summary["mean"], summary["std"]


def imbalance_half(runs: list[VariantRun]) -> ClaimHalf:
    """Per long-tailed run and loss: accuracy, head and tail recall, macro-F1;
    then each focal minus CE, paired by seed, on tail recall and macro-F1 (the
    verdict) and on accuracy."""
    rows = []
    cases: dict[str, Evidence] = {}
    for run in (run for run in runs if run.imbalance_ratio > 1 and run.label_noise == 0):
        measures = imbalance_measures(run.class_counts)
        for result in run.results.values():
            row: dict[str, Any] = {
                "imbalance_ratio": run.imbalance_ratio,
                "loss": result.label,
                "seeds": len(result.seeds),
                "train_images": sum(run.class_counts["train"].values()),
            }
            for key, measure in measures.items():
                row[f"{key}_mean"], row[f"{key}_std"] = _mean_sd(measure(result))
            rows.append(row)
        ce, focals = ce_and_focals(list(run.results.values()))
        if ce is None:
            continue  # variants-report asks params.yaml for a CE loss first
        for focal in focals:
            evidence = cases.setdefault(f"ratio {run.imbalance_ratio:g}, {md(focal.label)}", Evidence())
            for key in ("tail_recall", "macro_f1", "test_acc"):
                evidence.compare(
                    f"ratio {run.imbalance_ratio:g}, {MEASURE_NAMES[key]}, {md(focal.label)} − CE",
                    measures[key](focal),
                    measures[key](ce),
                    counts=key != "test_acc",  # accuracy is told, not judged: the claim is about the tail
                )
    return ClaimHalf(pd.DataFrame(rows), cases)


def noise_half(runs: list[VariantRun], clean: dict[str, LossResult]) -> ClaimHalf:
    """Per noise level and loss: accuracy and its drop from the clean run,
    paired by seed; then CE's drop minus each focal's (positive: CE loses more)."""
    rows = []
    cases: dict[str, Evidence] = {}
    for run in (run for run in runs if run.label_noise > 0 and run.imbalance_ratio == 1):
        drops = {}
        for name, result in run.results.items():
            before, noisy = final_accuracy(clean[name]), final_accuracy(result)
            drops[name] = list(np.subtract(before, noisy))
            drop = paired_comparison(before, noisy)
            noisy_mean, noisy_sd = _mean_sd(noisy)
            rows.append(
                {
                    "label_noise": run.label_noise,
                    "loss": result.label,
                    "seeds": len(noisy),
                    "test_acc_mean": noisy_mean,
                    "test_acc_std": noisy_sd,
                    "clean_acc_mean": float(np.mean(before)),
                    "drop_mean": drop["mean_difference"],
                    "drop_ci95_low": drop["ci95_low"],
                    "drop_ci95_high": drop["ci95_high"],
                    "drop_p": drop["p_value"],
                }
            )
        ce, focals = ce_and_focals(list(run.results.values()))
        if ce is None:
            continue
        for focal in focals:
            evidence = cases[f"{100 * run.label_noise:g}% noise, {md(focal.label)}"] = Evidence()
            evidence.compare(
                f"{100 * run.label_noise:g}% noise, CE's drop − {md(focal.label)}'s",
                drops[ce.name],
                drops[focal.name],
            )
    return ClaimHalf(pd.DataFrame(rows), cases)


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
