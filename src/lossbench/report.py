"""Stage report: compare the losses seed by seed, draw the study's figures, test its claims.

Reads what publish@NAME wrote for every loss (results.load_results) and
writes plots/report.md with its tables and verdicts, the figures (figures.py),
the overlay table for `dvc plots show`, the significance table and
metrics/details/summary.json. Runs that stayed at chance are named, and every
verdict is also given without them. Labels say what each run was trained with
(its recorded settings); a run params.yaml has changed since is named.

`report` goes down the layers once: read (`read_results`), find (`find`: the
ranking, the tables of numbers, the claims), write the text and draw the
figures, then write every file as one set: a failure leaves every previous
file as it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.markup import escape

from lossbench import figures, temperature
from lossbench.claims import (
    RISE_FRACTION,
    Claim,
    accuracy_margin,
    ece_margin,
    head_and_tail,
    measure_claims,
    percent,
    recall_over,
    rise_epochs,
)
from lossbench.errors import MissingInput, shown
from lossbench.evaluation import CHANCE_MARGIN, CONVERGENCE_TOLERANCE, PLATEAU_TOLERANCE
from lossbench.params import Params
from lossbench.publish import published_files
from lossbench.results import (
    LossResult,
    load_results,
    markdown_names,
    md,
    numerics_line,
    numerics_of,
    plus_minus,
    read_class_counts,
    trained_otherwise,
    without_chance_runs,
)
from lossbench.stats import SIGNIFICANCE, summarize
from lossbench.storage import CLASS_COUNTS_FILE, METRICS_DIR, PLOTS_DIR, PublishedFiles, output_set
from lossbench.verdicts import Margin, pairwise_table, wilcoxon_note

CURVES_FIGURE = PLOTS_DIR / "curves.png"
ACCURACY_FIGURE = PLOTS_DIR / "final_accuracy.png"
RELIABILITY_FIGURE = PLOTS_DIR / "reliability.png"
CURVES_TABLE = PLOTS_DIR / "curves.csv"
SIGNIFICANCE_TABLE = PLOTS_DIR / "significance.csv"
REPORT_FILE = PLOTS_DIR / "report.md"
SUMMARY_FILE = METRICS_DIR / "summary.json"


def foreign_files(params: Params, root: Path) -> list[Path]:
    """Files in the folders publish@NAME writes to that no current loss owns:
    left from a loss removed from params.yaml, or put there by hand. Never
    deleted here; the report names them."""
    owned = {path for name in params.losses for path in published_files(root, name)} | {root / SUMMARY_FILE}
    folders = {path.parent for path in owned}
    return sorted(
        path
        for folder in folders
        if folder.is_dir()
        for path in folder.iterdir()
        if path.is_file() and path not in owned
    )


def _cell(result: LossResult, key: str, digits: int = 4) -> str:
    """'mean ± sd [95% CI]' of a number over the result's seeds."""
    summary = summarize(result.values(key))
    text = plus_minus(summary["mean"], summary["std"], digits)
    if summary["ci95_low"] is not None:
        text += f" [{summary['ci95_low']:.{digits}f}, {summary['ci95_high']:.{digits}f}]"
    return text


def results_table(results: list[LossResult], ranking: list[str]) -> pd.DataFrame:
    rows = []
    for r in results:
        rows.append(
            {
                "rank": ranking.index(r.name) + 1,
                "loss": md(r.label),
                "stages": md(f"train@{r.name}-*"),
                "final test acc": _cell(r, "final_test_acc"),
                "per seed": ", ".join(f"{value:.3f}" for value in r.values("final_test_acc")),
                "best test acc": f"{r.mean('best_test_acc'):.4f}",
                "final train acc": f"{r.mean('final_train_acc'):.3f}",
                "macro-F1": f"{r.mean('macro_f1'):.3f}",
                "ECE": f"{r.mean('ece'):.3f}",
                "NLL": f"{r.mean('nll'):.3f}",
                "converged (epoch)": f"{r.mean('convergence_epoch'):.1f}",
                f"{100 * RISE_FRACTION:.0f}% of rise (epoch)": f"{np.mean(rise_epochs(r)):.1f}",
            }
        )
    return pd.DataFrame(rows).sort_values("rank")


def significance_table(results: list[LossResult], margin: Margin) -> pd.DataFrame:
    """Every pair of losses on final test accuracy: one family for Holm's correction."""
    return pairwise_table(
        [
            (first.label, second.label, first.values("final_test_acc"), second.values("final_test_acc"))
            for first, second in combinations(results, 2)
        ],
        margin,
    )


def calibration_table(results: list[LossResult], margin: Margin) -> pd.DataFrame:
    """Every pair of losses on ECE: one family for Holm's correction."""
    return pairwise_table(
        [
            (first.label, second.label, first.values("ece"), second.values("ece"))
            for first, second in combinations(results, 2)
        ],
        margin,
    )


def significance_markdown(table: pd.DataFrame) -> str:
    """The significance table for report.md: its loss labels escaped."""
    return markdown_names(table, ["first", "second", "verdict"]).to_markdown(index=False)


def recall_table(results: list[LossResult], classes: list[str]) -> pd.DataFrame:
    """For report.md: class names and labels escaped."""
    return pd.DataFrame(
        [
            {"loss": md(r.label)}
            | {md(c): f"{np.mean(recall_over(r, [i])):.3f}" for i, c in enumerate(classes)}
            for r in results
        ]
    )


def overlay_table(results: list[LossResult]) -> pd.DataFrame:
    """One row per loss and epoch (seed means): what `dvc plots show` overlays.
    Each loss is drawn in its colour (figures.loss_colours: by its name, which a
    γ edit does not change, as in the PNGs) and named by its label in the legend."""
    return pd.concat(
        [
            figures.seed_mean_curves(r)[
                ["epoch", "lr", *figures.CURVE_COLUMNS, *figures.SPREAD_COLUMNS]
            ].assign(loss=r.name, label=r.label, color=colour)
            for r, colour in zip(results, figures.result_colours(results), strict=True)
        ],
        ignore_index=True,
    )


def head_and_tail_table(results: list[LossResult], head: list[int], tail: list[int]) -> pd.DataFrame:
    """Seed-mean recall over the head and over the tail classes, for report.md."""
    return pd.DataFrame(
        [
            {
                "loss": md(r.label),
                "head recall": f"{np.mean(recall_over(r, head)):.3f}",
                "tail recall": f"{np.mean(recall_over(r, tail)):.3f}",
            }
            for r in results
        ]
    )


@dataclass(frozen=True)
class Findings:
    """What the report finds in the results, before a word of it is written."""

    ranking: list[str]  # loss names, best mean final test accuracy first
    at_chance: dict[str, dict[int, str]]  # loss -> its seeds at chance, and how
    dropped: list[int]  # the seeds on which some loss stayed at chance
    significance: pd.DataFrame
    claims: list[Claim]
    # The same without the dropped seeds, where enough seeds are left to pair.
    significance_without: pd.DataFrame | None
    claims_without: list[Claim] | None
    numerics: str  # what the runs were made under, in a sentence
    scaled: list[temperature.Scaled]  # each loss's calibration before and after temperature scaling
    scaling: temperature.ScalingAnswer  # each loss against CE on ECE, before and after scaling


def find(
    params: Params, results: list[LossResult], class_counts: dict[str, Any], scaled: list[temperature.Scaled]
) -> Findings:
    """Rank the losses, compare them pairwise and measure the claims, with and without runs at chance."""
    ranking = [r.name for r in sorted(results, key=lambda r: r.mean("final_test_acc"), reverse=True)]
    cleaned, dropped = without_chance_runs(results)
    judged_without = bool(dropped) and len(dropped) < len(params.seeds) - 1
    margin = accuracy_margin(params.analysis)
    return Findings(
        ranking=ranking,
        at_chance={r.name: r.at_chance() for r in results if r.at_chance()},
        dropped=dropped,
        significance=significance_table(results, margin),
        claims=measure_claims(results, class_counts, params.analysis),
        significance_without=significance_table(cleaned, margin) if judged_without else None,
        claims_without=measure_claims(cleaned, class_counts, params.analysis) if judged_without else None,
        numerics=numerics_line({r.name: numerics_of(r.run["settings"]) for r in results}),
        scaled=scaled,
        scaling=temperature.answer(scaled, ece_margin(params.analysis)),
    )


def summary_of(params: Params, findings: Findings) -> dict[str, Any]:
    """metrics/details/summary.json: the ranking, the runs at chance and the claims' verdicts."""
    without = findings.claims_without
    return {
        "best_loss": findings.ranking[0],
        "rank": {name: findings.ranking.index(name) + 1 for name in params.losses},
        "runs_at_chance": {
            name: {str(seed): why for seed, why in runs.items()} for name, runs in findings.at_chance.items()
        },
        "margins": params.analysis.model_dump(),
        "claims": {str(claim.number): claim.verdict.value for claim in findings.claims},
        "claims_without_runs_at_chance": None
        if without is None
        else {str(c.number): c.verdict.value for c in without},
        "calibration": temperature.summary_of(findings.scaling, findings.scaled),
    }


def _claim_lines(claims: list[Claim], without: list[Claim] | None, dropped: list[int]) -> list[str]:
    lines = []
    for claim, other in zip(claims, without or claims, strict=True):
        text = f"**{claim.number}. {claim.statement}** — *{claim.verdict.value}*. {claim.evidence}"
        if without is not None:
            text += (
                f" *Without seeds {', '.join(map(str, dropped))} (runs at chance): {other.verdict.value}.* "
                f"{other.evidence}"
            )
        lines += [text, ""]
    return lines


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
    seeds = params.seeds
    classes = list(class_counts["train"])
    settings = results[0].run["settings"]
    n_train, n_test = int(results[0].run["train_samples"]), int(results[0].run["test_samples"])
    variants = _data_variants(class_counts)
    margin = accuracy_margin(params.analysis)
    lines = [
        "# Which loss? Results of this run",
        "",
        f"Dataset **{md(class_counts['dataset'])}**{' — ' + ', '.join(variants) if variants else ''}: "
        f"{n_train} training and {n_test} test images. Protocol: {settings['epochs']} epochs, batch "
        f"{settings['batch_size']}, SGD lr {settings['lr']:g} momentum {settings['momentum']:g}, lr × "
        f"{settings['lr_decay_factor']:g} every {settings['lr_step_epochs']} epochs. Every loss trained with "
        f"seeds {', '.join(map(str, seeds))} (the same initial weights, batch order and augmentation per seed). "
        "Ranked by mean final test accuracy; cells are mean ± std [95% CI of the mean].",
        "",
        md(findings.numerics),
        "",
        results_table(results, findings.ranking).to_markdown(index=False),
        "",
        _chance_text(findings.at_chance),
        "",
        f"![Loss and accuracy per epoch]({CURVES_FIGURE.name})",
        "",
        f"![Final test accuracy per seed]({ACCURACY_FIGURE.name})",
        "",
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
    if findings.significance_without is not None:
        lines += [
            f"Without seeds {', '.join(map(str, findings.dropped))} (a run at chance in some loss):",
            "",
            significance_markdown(findings.significance_without),
            "",
        ]
    lines += [
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
    lines += [
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
        *_scaling_lines(params, findings),
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
        *_claim_lines(findings.claims, findings.claims_without, findings.dropped),
    ]
    return "\n".join(lines)


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


def read_results(params: Params, root: Path, console: Console) -> tuple[list[LossResult], dict[str, Any]]:
    """Every loss's published results and the class counts, checked against each
    other; a run trained otherwise than params.yaml now says is named."""
    results = load_results(params, root)
    class_counts = read_class_counts(root / CLASS_COUNTS_FILE)
    classes = list(class_counts["train"])
    for r in results:
        if r.run["classes"] != classes:
            raise MissingInput(
                f"{PublishedFiles.of(root, r.name).details} was trained on other classes than {CLASS_COUNTS_FILE} "
                "lists: run `dvc repro`"
            )
    for r in results:
        note = trained_otherwise(params, r)
        if note is not None:
            console.print(f"  {note}", markup=False, highlight=False)
    return results, class_counts


def report(params: Params, root: Path, console: Console) -> dict[str, Any]:
    results, class_counts = read_results(params, root, console)
    findings = find(params, results, class_counts, temperature.load_scaled(results, root))
    if not findings.numerics.startswith("Numerics:"):
        console.print(f"  note: {findings.numerics}", markup=False, highlight=False)
    summary = summary_of(params, findings)
    overlay = overlay_table(results)
    text = report_text(params, results, class_counts, findings)

    chance = 1 / len(class_counts["train"])
    drawn = [
        (figures.draw_curves(results, chance, figures.data_variant(params.data)), CURVES_FIGURE, figures.DPI),
        (figures.draw_final_accuracy(results, chance), ACCURACY_FIGURE, figures.DPI),
        (figures.draw_reliability(findings.scaled), RELIABILITY_FIGURE, figures.RELIABILITY_DPI),
    ]
    # Every number, text and figure is made before the first file is written, and the
    # files are written as one set: a failure (a full disk) leaves all the previous ones.
    with figures.closing(*(figure for figure, _, _ in drawn)), output_set() as files:
        for figure, path, dpi in drawn:
            figures.save_figure(files, figure, root / path, dpi)
        files.write_with(root / CURVES_TABLE, lambda path: overlay.to_csv(path, index=False))
        files.write_with(
            root / SIGNIFICANCE_TABLE, lambda path: findings.significance.to_csv(path, index=False)
        )
        files.write_json(root / SUMMARY_FILE, summary)
        files.write_text(root / REPORT_FILE, text)

    for path in foreign_files(params, root):
        console.print(
            f"  note: {escape(shown(path.relative_to(root)))} is not written by this pipeline (no such loss in "
            "params.yaml); left as it is"
        )
    console.print(f"[bold]report[/]: ranking by mean final test accuracy: {' > '.join(findings.ranking)}")
    if findings.at_chance:
        runs = (
            f"{name} seed {seed} ({why})"
            for name, seeds in findings.at_chance.items()
            for seed, why in seeds.items()
        )
        console.print(f"  runs at chance: {'; '.join(runs)}", markup=False, highlight=False)
    for claim in findings.claims:
        console.print(f"  claim {claim.number}: {claim.verdict.value}")
    after = findings.scaling.verdicts("after")
    if after:
        console.print(
            "  ECE against CE after temperature scaling: "
            + ", ".join(f"{name} {verdict.value}" for name, verdict in after.items()),
            markup=False,
            highlight=False,
        )
    console.print(
        f"  wrote {REPORT_FILE}, {CURVES_FIGURE}, {ACCURACY_FIGURE}, {RELIABILITY_FIGURE}, {SUMMARY_FILE}"
    )
    return summary
