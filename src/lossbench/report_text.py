"""plots/report.md's text, made from the findings (findings.Findings) and the
tables (report_tables): a sentence is made from a verdict, never read back."""

from __future__ import annotations

from typing import Any

from lossbench import temperature
from lossbench.claims import RISE_FRACTION, Claim, accuracy_margin, ece_margin, head_and_tail, percent
from lossbench.evaluation import CHANCE_MARGIN, CONVERGENCE_TOLERANCE, PLATEAU_TOLERANCE
from lossbench.findings import Findings
from lossbench.md import md
from lossbench.params import Params
from lossbench.report_tables import (
    calibration_table,
    head_and_tail_table,
    recall_table,
    results_table,
    significance_markdown,
)
from lossbench.results import LossResult
from lossbench.stats import SIGNIFICANCE
from lossbench.storage import PLOTS_DIR
from lossbench.verdicts import wilcoxon_note

# The figures report.md shows, beside it in plots/.
CURVES_FIGURE = PLOTS_DIR / "curves.png"
ACCURACY_FIGURE = PLOTS_DIR / "final_accuracy.png"
RELIABILITY_FIGURE = PLOTS_DIR / "reliability.png"


def _claim_lines(claims: list[Claim], without: list[Claim] | None) -> list[str]:
    lines = []
    for claim, other in zip(claims, without or claims, strict=True):
        text = f"**{claim.number}. {claim.statement}** — *{claim.verdict.value}*. {claim.evidence}"
        if without is not None:
            text += f" *Without runs at chance: {other.verdict.value}.* {other.evidence}"
        lines += [text, ""]
    return lines


def _runs_at_chance(at_chance: dict[str, dict[int, str]]) -> str:
    """'ce seed 1; gce seeds 1, 2, 7'."""
    return "; ".join(
        f"{name} seed{'s' if len(runs) > 1 else ''} {', '.join(map(str, runs))}"
        for name, runs in at_chance.items()
    )


def _data_variants(class_counts: dict[str, Any]) -> list[str]:
    variants = []
    if class_counts.get("imbalance_ratio", 1.0) > 1:
        variants.append(f"long-tailed training set (imbalance ratio {class_counts['imbalance_ratio']:g})")
    if class_counts.get("label_noise", 0.0) > 0:
        variants.append(f"{percent(class_counts['label_noise'])}% of training labels flipped")
    return variants


def _chance_text(at_chance: dict[str, dict[int, str]]) -> str:
    if not at_chance:
        return "No run stayed at chance."
    return (
        "Runs at chance (test accuracy never more than "
        f"{percent(CHANCE_MARGIN)} points above chance, or back there at the end): "
        + "; ".join(
            f"{name} seed {seed} ({why})" for name, runs in at_chance.items() for seed, why in runs.items()
        )
        + ". They stay in every table; the significance table and the claims are also given without them."
    )


def report_text(
    params: Params, results: list[LossResult], class_counts: dict[str, Any], findings: Findings
) -> str:
    """plots/report.md."""
    return "\n".join(
        [
            *_intro_lines(params, results, class_counts, findings),
            *_significance_lines(params, findings),
            *_recall_lines(results, class_counts),
            *_calibration_lines(params, results),
            *_scaling_lines(params, findings),
            *_claims_section(params, findings),
        ]
    )


def _intro_lines(
    params: Params, results: list[LossResult], class_counts: dict[str, Any], findings: Findings
) -> list[str]:
    """The data, the protocol, the numerics, the results table, the runs at chance, the figures."""
    seeds = params.seeds
    settings = results[0].run["settings"]
    n_train, n_test = int(results[0].run["train_samples"]), int(results[0].run["test_samples"])
    variants = _data_variants(class_counts)
    return [
        "# Which loss? Results of this run",
        "",
        f"Dataset **{md(class_counts['dataset'])}**{' — ' + ', '.join(variants) if variants else ''}: "
        f"{n_train} training and {n_test} test images. Protocol: {settings['epochs']} epochs, batch "
        f"{settings['batch_size']}, SGD lr {settings['lr']:g} momentum {settings['momentum']:g}, lr × "
        f"{settings['lr_decay_factor']:g} every {settings['lr_step_epochs']} epochs. Every loss trained with "
        f"seeds {', '.join(map(str, seeds))} (the same initial weights, batch order and augmentation per seed). "
        "Ranked by mean final test accuracy; cells are mean ± std [95% CI of the mean].",
        "",
        md(findings.numerics.text()),
        "",
        results_table(results, findings.ranking).to_markdown(index=False),
        "",
        _chance_text(findings.at_chance),
        "",
        f"![Loss and accuracy per epoch]({CURVES_FIGURE.name})",
        "",
        f"![Final test accuracy per seed]({ACCURACY_FIGURE.name})",
        "",
    ]


def _significance_lines(params: Params, findings: Findings) -> list[str]:
    """Every pair of losses on final test accuracy, with and without the runs at chance."""
    margin = accuracy_margin(params.analysis)
    seeds = params.seeds
    lines = [
        "## Which differences are real?",
        "",
        "Every pair of losses on final test accuracy, seed by seed: mean difference (first minus second) in "
        "percentage points and its 95% t interval; the paired t-test's p-value, raw and Holm-adjusted over "
        "the table's pairs (one family); the Wilcoxon signed-rank and exact sign-flip tests; TOST's p-value "
        f"for equivalence within {margin.written()} (`analysis.accuracy_margin` in params.yaml). Verdict: "
        f"*different* when the Holm-adjusted p < {SIGNIFICANCE}; *equivalent* when TOST's p < {SIGNIFICANCE} "
        "(the 90% CI inside the margin); *inconclusive* otherwise: then the 95% CI is what bounds the true "
        f"difference. {wilcoxon_note(len(seeds))} The detectable difference (80% power, from the observed "
        "spread) is a planning number for how many seeds a question needs (`lossbench plan`), not a bound.",
        "",
        significance_markdown(findings.significance),
        "",
    ]
    if findings.significance_without is not None and len(findings.significance_without):  # one loss: no pair
        fewest = min((n for n in findings.significance_without["n"] if n >= 2), default=len(seeds))
        floor = f" For the pairs with fewest seeds: {wilcoxon_note(fewest)}" if fewest < len(seeds) else ""
        lines += [
            "Without the runs at chance (listed above): each pair on the seeds where neither of its two runs "
            "stayed at chance, `n` of them; `left out (at chance)` names the seeds the pair lost. Holm over the "
            f"table's pairs as above.{floor}",
            "",
            significance_markdown(findings.significance_without),
            "",
        ]
    return lines


def _recall_lines(results: list[LossResult], class_counts: dict[str, Any]) -> list[str]:
    """Per-class recall, and with a long tail, head against tail."""
    classes = list(class_counts["train"])
    lines = [
        "## Per-class recall (seed mean)",
        "",
        recall_table(results, classes).to_markdown(index=False),
        "",
    ]
    if class_counts.get("imbalance_ratio", 1.0) > 1:
        head, tail = head_and_tail(class_counts)
        lines += [
            f"Head classes ({', '.join(md(classes[c]) for c in head)}) have the most training images, tail "
            f"classes ({', '.join(md(classes[c]) for c in tail)}) the fewest; the test set is balanced.",
            "",
            head_and_tail_table(results, head, tail).to_markdown(index=False),
            "",
        ]
    return lines


def _calibration_lines(params: Params, results: list[LossResult]) -> list[str]:
    """ECE and NLL as trained: the reliability diagrams and every pair of losses on ECE."""
    return [
        "## Calibration",
        "",
        "ECE: 15 equal-width bins of the top-class probability; the share of test images in each bin times "
        "|accuracy − mean confidence|, summed. NLL: mean −log p(true class). Reliability diagrams pool all seeds.",
        "",
        f"![Reliability diagrams]({RELIABILITY_FIGURE.name})",
        "",
        "Every pair of losses on ECE, in points of ECE (0.01 = 1 point), read as the table above, with "
        f"equivalence within {ece_margin(params.analysis).written()} (`analysis.ece_margin`):",
        "",
        significance_markdown(calibration_table(results, ece_margin(params.analysis))),
        "",
    ]


def _claims_section(params: Params, findings: Findings) -> list[str]:
    """The definitions the claims are judged by, and each claim's verdict."""
    return [
        "## The study's claims, measured",
        "",
        f"Definitions: a run *converges* at the first epoch whose test accuracy is within "
        f"{percent(CONVERGENCE_TOLERANCE)} points of its best; its loss *plateaus* at the first epoch after which "
        f"the training loss never falls more than {100 * PLATEAU_TOLERANCE:.0f}% below that epoch's value "
        f"(the protocol's definitions); by a second definition a run converges at the first epoch whose test "
        f"accuracy has made {100 * RISE_FRACTION:.0f}% of its rise from epoch 1 to the last epoch ('% of rise' "
        "in the table): claim 2 is judged by both. Each comparison is *different*, "
        "*equivalent within ±margin* or *inconclusive*, and each claim *supported*, *contradicted*, *partly "
        "supported*, *mixed*, *inconclusive* or *not testable*: a claim of a difference by the tests of "
        "difference (Holm within the claim's comparisons where any one of them would decide), a claim of "
        "sameness by equivalence, never by the absence of a significant difference.",
        "",
        *_without_lines(params, findings),
        *_claim_lines(findings.claims, findings.claims_without),
    ]


def _without_lines(params: Params, findings: Findings) -> list[str]:
    """How the claims are judged again without the runs at chance, where some run stayed there."""
    if findings.claims_without is None:
        return []
    gone = [name for name, runs in findings.at_chance.items() if len(runs) == len(params.seeds)]
    gone_text = f" Left out of them: {md(', '.join(gone))}, at chance on every seed." if gone else ""
    return [
        f"Each claim is also judged without the runs at chance ({md(_runs_at_chance(findings.at_chance))}): "
        "each comparison leaves out the seeds on which one of its two runs stayed at chance (and names them), "
        "each loss's mean is over its own seeds that left chance, and a test over several losses at once "
        f"(Friedman's) ranks the seeds on which none of them stayed at chance.{gone_text}",
        "",
    ]


def _scaling_lines(params: Params, findings: Findings) -> list[str]:
    margin = ece_margin(params.analysis)
    return [
        "## Calibration after temperature scaling",
        "",
        "Temperature scaling divides a network's logits by one number T fitted by NLL on held-out images "
        "(T > 1 softens an over-confident network, T < 1 sharpens an under-confident one). No retraining: "
        "each seed's finished network is scaled by stage calibrate, which fits T on one class-stratified "
        "half of the test set and scores the other half with it, then swaps the halves "
        "(`calibration.split_seed`); each number is the mean over the two scored halves and the seeds. "
        "AdaECE: the same as ECE over 15 bins of equal image counts; class-wise ECE: each class's probability "
        "binned against whether the image is of that class, averaged over classes. In brackets, each ECE's "
        "floor: what a perfectly calibrated network with these confidences scores on as many images "
        "(labels drawn from its own probabilities); an ECE near its floor is noise.",
        "",
        temperature.measures_table(findings.scaled).to_markdown(index=False, disable_numparse=True),
        "",
        temperature.others_table(findings.scaled).to_markdown(index=False, disable_numparse=True),
        "",
        "**Does a loss's calibration differ from cross-entropy's once both are scaled?** Each loss minus CE "
        f"on ECE, paired by seed, in points of ECE, Holm over the losses on each side, equivalence within "
        f"{margin.written()} (`analysis.ece_margin`):",
        "",
        *temperature.answer_lines(findings.scaling),
        "",
    ]
