"""The seed study's five claims, measured: on one run's results (the report),
claim 4 across a γ sweep's experiments (`gamma_claim`) and claim 5 across a
study's long-tailed and noisy experiments (`imbalance_half`, `noise_half`).

Each claim is judged from paired comparisons over seeds (verdicts.py): a
claim of a difference by the tests of difference, a claim of sameness (claim
2, claim 4's "larger γ is not better") by equivalence against the margins of
params.yaml's `analysis:`, never by the absence of a significant difference.
Each claim's comparisons are one family for Holm's correction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from lossbench.losses.ce import CeLoss
from lossbench.losses.focal import FocalLoss
from lossbench.losses.mae import MaeLoss
from lossbench.md import md
from lossbench.params import AnalysisParams
from lossbench.results import LossResult, VariantRun, lost_seeds, paired, without_chance_runs
from lossbench.stats import friedman_p, holm, paired_comparison, summarize
from lossbench.verdicts import (
    ClaimVerdict,
    Family,
    Judged,
    Margin,
    Verdict,
    all_of,
    comparison_text,
    directional,
    not_above,
    sameness,
)

# Claim 2's "around epoch 25": each loss's mean convergence epoch within this many epochs of 25.
AROUND_EPOCH_25 = 5
# Claim 2's second definition of convergence: the first epoch whose test accuracy has
# made this fraction of its rise from epoch 1 to the final epoch.
RISE_FRACTION = 0.9
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
    verdict: ClaimVerdict
    evidence: str


def percent(fraction: float) -> str:
    """A fraction in percent (or percentage points), one decimal: 0.1234 -> '12.3'."""
    return f"{100 * fraction:.1f}"


def accuracy_margin(analysis: AnalysisParams) -> Margin:
    return Margin(analysis.accuracy_margin)


def ece_margin(analysis: AnalysisParams) -> Margin:
    return Margin(analysis.ece_margin, 100.0, " points of ECE")


def epoch_margin(analysis: AnalysisParams) -> Margin:
    return Margin(analysis.epoch_margin, 1.0, " epochs")


Measure = Callable[[LossResult], list[float]]  # one number per seed, in seed order


def values_of(key: str) -> Measure:
    """The measure that is one of a seed's numbers (evaluation.SEED_METRICS)."""
    return lambda result: result.values(key)


def without_seeds(lost: Sequence[int]) -> str:
    """', without seeds 1, 5': what a comparison names when it left seeds out."""
    if not lost:
        return ""
    return f", without seed{'s' if len(lost) > 1 else ''} {', '.join(map(str, lost))}"


@dataclass
class Evidence:
    """Paired comparisons towards a verdict, one family for Holm's correction:
    `counts` ones count towards the verdict (and the family), the others are told."""

    margin: Margin
    family: Family = field(init=False)

    def __post_init__(self) -> None:
        self.family = Family(self.margin)

    def compare(
        self, what: str, first: Sequence[float], second: Sequence[float], counts: bool = True
    ) -> None:
        """`first` minus `second`, paired by seed."""
        self.family.add(what, first, second, counts)

    def compare_runs(
        self, what: str, first: LossResult, second: LossResult, measure: Measure, counts: bool = True
    ) -> None:
        """`measure` of `first` minus that of `second`, on the seeds both have
        (results.paired); seeds left out where one of them stayed at chance are named."""
        kept_first, kept_second = paired(first, second)
        self.compare(
            what + without_seeds(lost_seeds(first, second)), measure(kept_first), measure(kept_second), counts
        )

    def judged(self, counted_only: bool = True) -> list[Judged]:
        counts = [counts for _, _, counts in self.family.pending]
        return [j for j, c in zip(self.family.judged(), counts, strict=True) if c or not counted_only]

    @property
    def parts(self) -> list[str]:
        return [f"{j.what}: {comparison_text(j)}" for j in self.judged(counted_only=False)]


def find_focal(results: list[LossResult], gamma: float) -> LossResult | None:
    return next(
        (
            r
            for r in results
            if isinstance(r.spec, FocalLoss) and r.spec.gamma == gamma and r.spec.alpha is None
        ),
        None,
    )


def best_focal(
    results: list[LossResult], class_counts: dict[str, Any], analysis: AnalysisParams
) -> tuple[ClaimVerdict, str]:
    focal = find_focal(results, 0.5)
    others = [r for r in results if r is not focal]
    if focal is None or not others:
        return (
            ClaimVerdict.NOT_TESTABLE,
            "This run has no focal loss with γ=0.5 (and no α), or nothing to compare it with.",
        )
    evidence = Evidence(accuracy_margin(analysis))
    for key, what in (("final_test_acc", "test"), ("final_train_acc", "train")):
        for other in others:
            evidence.compare_runs(f"{what} vs {md(other.label)}", focal, other, values_of(key))
    return directional(evidence.judged(), "higher"), (
        f"{md(focal.label)} ends at {percent(focal.mean('final_test_acc'))}% test and "
        f"{percent(focal.mean('final_train_acc'))}% train accuracy (seed means). Paired differences "
        f"(focal minus other, mean [95% CI], paired t-test, Holm over these {len(evidence.judged())}): "
        f"{'; '.join(evidence.parts)}. Supported only if every one is higher at p < 0.05."
    )


def rise_epochs(result: LossResult, fraction: float = RISE_FRACTION) -> list[float]:
    """Per seed, in seed order: the first epoch whose test accuracy has made
    `fraction` of its rise from epoch 1 to the final epoch (epoch 1 if it never rose)."""
    epochs = []
    for seed in result.seeds:
        curve = result.history[result.history["seed"] == seed].sort_values("epoch")
        accuracy, numbers = curve["test_acc"].to_numpy(), curve["epoch"].to_numpy()
        target = accuracy[0] + fraction * (accuracy[-1] - accuracy[0])
        epochs.append(float(numbers[int(np.argmax(accuracy >= target))]))
    return epochs


def _speed_by(
    group: list[LossResult], measure: Callable[[LossResult], list[float]], margin: Margin
) -> tuple[ClaimVerdict, Evidence]:
    evidence = Evidence(margin)
    for first, second in combinations(group, 2):
        evidence.compare_runs(f"{md(first.label)} − {md(second.label)}", first, second, measure)
    return sameness(evidence.judged()), evidence


def same_speed(
    results: list[LossResult], class_counts: dict[str, Any], analysis: AnalysisParams
) -> tuple[ClaimVerdict, str]:
    group = [r for r in results if isinstance(r.spec, CeLoss)]
    group += [f for f in (find_focal(results, 0.5), find_focal(results, 2.0)) if f is not None]
    if len(group) < 2:
        return (
            ClaimVerdict.NOT_TESTABLE,
            "Claim 2 needs CE and the focal losses with γ=0.5 and γ=2; this run lacks them.",
        )
    margin = epoch_margin(analysis)
    definitions: list[tuple[str, Callable[[LossResult], list[float]]]] = [
        ("within 0.5 points of the best (the protocol's)", lambda r: r.values("convergence_epoch"))
    ]
    if all(not r.history.empty for r in group):
        definitions.append((f"{100 * RISE_FRACTION:.0f}% of the rise from epoch 1 to the end", rise_epochs))
    verdicts, texts = [], []
    for name, measure in definitions:
        verdict, evidence = _speed_by(group, measure, margin)
        means = ", ".join(f"{md(r.label)} {np.mean(measure(r)):.1f}" for r in group)
        verdicts.append(verdict)
        texts.append(
            f"Converged = first epoch {name}: mean epochs {means}; pairs (Holm over {len(evidence.judged())}): "
            f"{'; '.join(evidence.parts)} — {verdict.value}."
        )
    protocol_means = [r.mean("convergence_epoch") for r in group]
    near_25 = all(abs(mean - 25) <= AROUND_EPOCH_25 for mean in protocol_means)
    disagree = (
        " The two definitions disagree." if len(verdicts) == 2 and verdicts[0] is not verdicts[1] else ""
    )
    verdict = all_of([*verdicts, ClaimVerdict.SUPPORTED if near_25 else ClaimVerdict.CONTRADICTED])
    return verdict, (
        f"Same speed means every pair equivalent within {margin.written()} (TOST, 90% CI inside the margin) "
        f"by each definition. {' '.join(texts)}{disagree} {'All' if near_25 else 'Not all'} protocol means lie "
        f"within {AROUND_EPOCH_25} epochs of epoch 25."
    )


def mae_flat(
    results: list[LossResult], class_counts: dict[str, Any], analysis: AnalysisParams
) -> tuple[ClaimVerdict, str]:
    mae = next((r for r in results if isinstance(r.spec, MaeLoss)), None)
    if mae is None:
        return ClaimVerdict.NOT_TESTABLE, "This run has no MAE/L1 loss, so claim 3 cannot be checked."
    by_seed = mae.history.sort_values("epoch").groupby("seed")["train_loss"]
    change = float(((by_seed.first() - by_seed.last()) / by_seed.first()).mean())
    accuracy = mae.mean("final_test_acc")
    flat, near = abs(change) <= BARELY_CHANGES, abs(accuracy - 0.4) <= NEAR_04
    verdict = all_of([ClaimVerdict.SUPPORTED if ok else ClaimVerdict.CONTRADICTED for ok in (flat, near)])
    return verdict, (
        f"{md(mae.label)}: the training loss fell by {100 * change:.1f}% from epoch 1 to the end on average "
        f"(we call ≤{100 * BARELY_CHANGES:.0f}% 'barely changes'); final test accuracy "
        f"{percent(accuracy)}% (claim: about 40%, we allow ±{percent(NEAR_04)} points). The MAE gradient "
        "through the softmax vanishes for confidently wrong predictions, which is why it learns slowly."
    )


def _gamma_halves(
    values: dict[float, dict[int, float]],
    lost: dict[float, Sequence[int]],
    best_in: float,
    best_out: float,
    margin: Margin,
) -> tuple[ClaimVerdict, ClaimVerdict, list[str]]:
    """Claim 4's halves: the best γ inside [0.5, 2] above the best outside it
    (a difference), and no γ above 2 better than it by the margin or more
    (non-superiority: TOST's one-sided half, for every such γ; any γ above 2
    significantly better after Holm contradicts it). Each comparison pairs the
    seeds both its γ have and names those either lost (`lost`, by γ)."""

    def compare(evidence: Evidence, first: float, second: float) -> None:
        seeds = [seed for seed in values[first] if seed in values[second]]
        evidence.compare(
            f"γ={first:g} − γ={second:g}{without_seeds(sorted({*lost.get(first, ()), *lost.get(second, ())}))}",
            [values[first][seed] for seed in seeds],
            [values[second][seed] for seed in seeds],
        )

    first = Evidence(margin)
    compare(first, best_in, best_out)
    first_verdict = directional(first.judged(), "higher")
    larger = [g for g in sorted(values) if g > 2 and g > best_in]
    second = Evidence(margin)
    for gamma in larger:
        compare(second, best_in, gamma)
    judged = second.judged()
    if not judged:
        second_verdict = ClaimVerdict.NOT_TESTABLE
    elif any(j.went("lower") for j in judged):
        second_verdict = ClaimVerdict.CONTRADICTED
    elif all(j.verdict is not Verdict.NOT_TESTABLE and not_above(j) for j in judged):
        second_verdict = ClaimVerdict.SUPPORTED
    else:
        second_verdict = ClaimVerdict.INCONCLUSIVE
    texts = [
        f"First half, the best γ inside [0.5, 2] minus the best outside it: {'; '.join(first.parts)} — "
        f"{first_verdict.value}.",
        "Second half, larger γ is not better: no γ above 2 may beat the best inside by "
        f"{margin.scale * margin.size:.1f}{margin.unit} or more (non-superiority, TOST's one-sided half: the 90% "
        f"CI of the difference has its low end above −{margin.scale * margin.size:.1f}), and none may be "
        "higher after Holm: "
        + ("no γ above 2 was trained" if not judged else "; ".join(second.parts))
        + f" — {second_verdict.value}.",
    ]
    return first_verdict, second_verdict, texts


def gamma_claim(
    accuracy: dict[float, dict[int, float]], margin: Margin, lost: dict[float, Sequence[int]] | None = None
) -> tuple[ClaimVerdict, str]:
    """Claim 4 from final test accuracy by γ and seed (CE counts as γ=0): the
    best γ inside [0.5, 2] against the best outside it (first half) and
    against every γ above 2 (second half), paired on the seeds every γ has;
    Friedman's rank test asks whether γ matters at all. Given the seeds each γ
    lost to runs at chance (`lost`), each γ is instead the mean of its own
    seeds, each comparison pairs the seeds both its γ have, and Friedman's
    test ranks the seeds none of them lost."""
    lost = {gamma: seeds for gamma, seeds in (lost or {}).items() if seeds}
    inside = [g for g in accuracy if 0.5 <= g <= 2]
    outside = [g for g in accuracy if not 0.5 <= g <= 2]
    if not inside or not outside:
        return ClaimVerdict.NOT_TESTABLE, "Claim 4 needs a γ inside [0.5, 2] and one outside it."
    seeds = sorted(set.intersection(*(set(by_seed) for by_seed in accuracy.values())))
    if lost:
        values = accuracy
        lost_text = ", ".join(f"γ={g:g}{without_seeds(lost[g])}" for g in sorted(lost))
        described = f"each γ's mean over its own seeds that left chance; {lost_text}"
    else:
        unpaired = sorted(set().union(*accuracy.values()) - set(seeds))
        if len(seeds) < 2:
            return ClaimVerdict.NOT_TESTABLE, "Claim 4 needs at least two seeds that every γ was trained on."
        values = {g: {seed: accuracy[g][seed] for seed in seeds} for g in accuracy}
        left_out = (
            f" (seeds {', '.join(map(str, unpaired))} left out: not every γ has them)" if unpaired else ""
        )
        described = f"mean of seeds {', '.join(map(str, seeds))}{left_out}"
    means = {g: float(np.mean(list(v.values()))) for g, v in values.items()}
    best_in = max(inside, key=means.__getitem__)
    best_out = max(outside, key=means.__getitem__)
    first, second, texts = _gamma_halves(values, lost, best_in, best_out, margin)
    listing = ", ".join(f"γ={g:g}: {percent(means[g])}%" for g in sorted(means))
    ranks = friedman_p([[values[g][seed] for seed in seeds] for g in sorted(values)])
    on_seeds = f" on seeds {', '.join(map(str, seeds))}, which none lost" if lost else ""
    rank_text = (
        "" if ranks is None else f" Friedman rank test over all {len(values)} γ{on_seeds}: p={ranks:.3g}."
    )
    note = (
        ""
        if any(0.5 < g < 2 for g in accuracy)
        else " No γ strictly between 0.5 and 2 was trained here; a γ sweep tests inside the range."
    )
    verdict = all_of([first] if second is ClaimVerdict.NOT_TESTABLE else [first, second])
    return verdict, (f"Final test accuracy by γ ({described}): {listing}. {' '.join(texts)}{rank_text}{note}")


def gamma_range(
    results: list[LossResult], class_counts: dict[str, Any], analysis: AnalysisParams
) -> tuple[ClaimVerdict, str]:
    accuracy: dict[float, dict[int, float]] = {}  # CE is focal with γ=0
    lost: dict[float, Sequence[int]] = {}
    for r in results:
        if isinstance(r.spec, CeLoss):
            gamma = 0.0
        elif isinstance(r.spec, FocalLoss) and r.spec.alpha is None:
            gamma = r.spec.gamma
        else:
            continue
        if gamma not in accuracy:
            accuracy[gamma] = dict(zip(r.seeds, r.values("final_test_acc"), strict=True))
            lost[gamma] = r.left_out
    verdict, evidence = gamma_claim(accuracy, accuracy_margin(analysis), lost)
    return verdict, evidence + " (CE counts as γ=0.)"


# --- claim 5: class imbalance and label noise ----------------------------------------------------


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


def imbalance_noise(
    results: list[LossResult], class_counts: dict[str, Any], analysis: AnalysisParams
) -> tuple[ClaimVerdict, str]:
    """Claim 5 on one run: each focal loss against CE on the tail classes'
    recall (a long-tailed training set) and on accuracy (noisy labels)."""
    ce, focals = ce_and_focals(results)
    imbalanced = class_counts.get("imbalance_ratio", 1.0) > 1
    noisy = class_counts.get("label_noise", 0.0) > 0
    if not (imbalanced or noisy) or ce is None or not focals:
        counts = list(class_counts["train"].values())
        return ClaimVerdict.NOT_TESTABLE, (
            f"This run's training set has a largest/smallest class ratio of {max(counts) / max(1, min(counts)):.2f} "
            "and clean labels (or lacks CE or a focal loss), so it carries no evidence about class imbalance "
            "or label noise. Set data.imbalance_ratio or data.label_noise (README) to test claim 5."
        )
    evidence = Evidence(accuracy_margin(analysis))
    if imbalanced:
        tail_recall = imbalance_measures(class_counts)["tail_recall"]
        for focal in focals:
            evidence.compare_runs(f"tail-class recall, {md(focal.label)} − CE", focal, ce, tail_recall)
    if noisy:
        for focal in focals:
            evidence.compare_runs(
                f"test accuracy under {percent(class_counts['label_noise'])}% label noise, {md(focal.label)} − CE",
                focal,
                ce,
                final_accuracy,
            )
    return directional(evidence.judged(), "higher"), (
        "Focal should beat CE on the minority classes of a long-tailed set, and CE should lose more to "
        f"noisy labels. Paired differences (Holm over {len(evidence.judged())}): {'; '.join(evidence.parts)}. (Sensitivity to noise proper is the drop "
        "from a clean run, which `dvc metrics diff` against the clean commit shows.)"
    )


def case_verdict(judged: Sequence[Judged]) -> ClaimVerdict:
    """One case of a half of claim 5 (a variant and a focal loss): every one of
    its comparisons different and higher, on Holm-adjusted p-values of the
    whole half (some case supporting it is a union): supported; any lower: contradicted."""
    if not judged or all(j.verdict is Verdict.NOT_TESTABLE for j in judged):
        return ClaimVerdict.NOT_TESTABLE
    if all(j.went("higher") for j in judged):
        return ClaimVerdict.SUPPORTED
    if any(j.went("lower") for j in judged):
        return ClaimVerdict.CONTRADICTED
    return ClaimVerdict.INCONCLUSIVE


@dataclass
class ClaimHalf:
    """A half of claim 5 across a study's runs: one table row per run and loss,
    and the paired comparisons of each case (a variant and a focal loss,
    against CE), all of them one family for Holm's correction."""

    table: pd.DataFrame
    evidence: Evidence
    case_of: list[str] = field(default_factory=list)  # each comparison's case, in order

    def compare(
        self, case: str, what: str, first: Sequence[float], second: Sequence[float], counts: bool = True
    ) -> None:
        self.evidence.compare(what, first, second, counts)
        self.case_of.append(case)

    def compare_runs(
        self,
        case: str,
        what: str,
        first: LossResult,
        second: LossResult,
        measure: Measure,
        counts: bool = True,
    ) -> None:
        """`measure` of `first` minus `second`, on the seeds where neither stayed at chance."""
        kept_first, kept_second = without_chance_runs([first, second])
        self.evidence.compare_runs(what, kept_first, kept_second, measure, counts)
        self.case_of.append(case)

    @property
    def parts(self) -> list[str]:
        return self.evidence.parts

    def cases(self) -> dict[str, ClaimVerdict]:
        counted = [counts for _, _, counts in self.evidence.family.pending]
        judged: dict[str, list[Judged]] = {}
        for case, j, counts in zip(self.case_of, self.evidence.family.judged(), counted, strict=True):
            judged.setdefault(case, [])
            if counts:
                judged[case].append(j)
        return {case: case_verdict(found) for case, found in judged.items()}

    def verdict(self) -> tuple[ClaimVerdict, str]:
        """The half's verdict (supported when every case is, partly when some are
        and none goes the other way), and each case's in words."""
        each = self.cases()
        verdict = all_of(list(each.values())) if each else ClaimVerdict.NOT_TESTABLE
        return verdict, "; ".join(f"{case}: {found.value}" for case, found in each.items())


def _mean_sd(values: list[float]) -> tuple[float, float]:
    summary = summarize(values)
    return summary["mean"], summary["std"]


def imbalance_half(runs: list[VariantRun], analysis: AnalysisParams) -> ClaimHalf:
    """Per long-tailed run and loss: accuracy, head and tail recall, macro-F1;
    then each focal minus CE, paired by seed, on tail recall and macro-F1 (the
    verdict) and on accuracy."""
    rows = []
    half = ClaimHalf(pd.DataFrame(), Evidence(accuracy_margin(analysis)))
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
            case = f"ratio {run.imbalance_ratio:g}, {md(focal.label)}"
            for key in ("tail_recall", "macro_f1", "test_acc"):
                half.compare_runs(
                    case,
                    f"ratio {run.imbalance_ratio:g}, {MEASURE_NAMES[key]}, {md(focal.label)} − CE",
                    focal,
                    ce,
                    measures[key],
                    counts=key != "test_acc",  # accuracy is told, not judged: the claim is about the tail
                )
    half.table = pd.DataFrame(rows)
    return half


def params_seeds(run: VariantRun) -> list[int]:
    """Every seed the run trained (its first loss's)."""
    return next(iter(run.results.values())).seeds


def noise_half(runs: list[VariantRun], clean: dict[str, LossResult], analysis: AnalysisParams) -> ClaimHalf:
    """Per noise level and loss: accuracy and its drop from the clean run,
    paired by seed; then CE's drop minus each other loss's (positive: CE loses more)."""
    rows = []
    half = ClaimHalf(pd.DataFrame(), Evidence(accuracy_margin(analysis)))
    for run in (run for run in runs if run.label_noise > 0 and run.imbalance_ratio == 1):
        drops: dict[str, dict[int, float]] = {}  # by loss, by seed
        for name, result in run.results.items():
            # A run at chance, clean or noisy, never learned: its "drop" says nothing about noise.
            clean_kept, noisy_kept = paired(*without_chance_runs([clean[name], result]))
            before, noisy = final_accuracy(clean_kept), final_accuracy(noisy_kept)
            drops[name] = dict(zip(clean_kept.seeds, np.subtract(before, noisy).tolist(), strict=True))
            drop = paired_comparison(before, noisy)
            noisy_mean, noisy_sd = _mean_sd(noisy)
            rows.append(
                {
                    "label_noise": run.label_noise,
                    "loss": result.label,
                    "seeds": len(noisy),
                    "left_out": ", ".join(map(str, lost_seeds(clean_kept, noisy_kept))) or "–",
                    "test_acc_mean": noisy_mean,
                    "test_acc_std": noisy_sd,
                    "clean_acc_mean": float(np.mean(before)) if before else float("nan"),
                    "drop_mean": drop["mean_difference"],
                    "drop_ci95_low": drop["ci95_low"],
                    "drop_ci95_high": drop["ci95_high"],
                    "drop_p": drop["p_value"],
                }
            )
        ce, _ = ce_and_focals(list(run.results.values()))
        if ce is None:
            continue
        # Against every other loss: focal, and the noise-robust losses the literature
        # tests this with (MAE, GCE, SCE) where the study trains them.
        for other in (result for result in run.results.values() if result is not ce):
            seeds = [seed for seed in drops[ce.name] if seed in drops[other.name]]
            lost = [seed for seed in params_seeds(run) if seed not in seeds]
            half.compare(
                f"{100 * run.label_noise:g}% noise, {md(other.label)}",
                f"{100 * run.label_noise:g}% noise, CE's drop − {md(other.label)}'s{without_seeds(lost)}",
                [drops[ce.name][seed] for seed in seeds],
                [drops[other.name][seed] for seed in seeds],
            )
    half.table = pd.DataFrame(rows)
    if rows:  # every drop in the table is one family
        half.table["drop_p_holm"] = holm(list(half.table["drop_p"]))
    return half


Measurement = Callable[[list[LossResult], dict[str, Any], AnalysisParams], tuple[ClaimVerdict, str]]
STATEMENTS: list[tuple[str, Measurement]] = [
    ("Focal γ=0.5 reaches the highest train and test accuracy.", best_focal),
    ("CE, Focal γ=0.5 and Focal γ=2 converge at about the same speed, around epoch 25.", same_speed),
    ("L1 barely changes its loss and stays near 0.4 accuracy.", mae_flat),
    ("A γ between 0.5 and 2 is best; larger γ is not better.", gamma_range),
    ("Focal loss helps with class imbalance; CE is sensitive to label noise.", imbalance_noise),
]


def measure_claims(
    results: list[LossResult], class_counts: dict[str, Any], analysis: AnalysisParams
) -> list[Claim]:
    """The five claims' verdicts on these results."""
    return [
        Claim(number, statement, *measure(results, class_counts, analysis))
        for number, (statement, measure) in enumerate(STATEMENTS, 1)
    ]
