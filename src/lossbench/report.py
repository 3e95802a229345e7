"""Stage report: compare the losses seed by seed, draw the study's figures, test its claims.

Reads every loss's run (data/runs/NAME) and writes plots/report.md with its
tables and verdicts, the figures (figures.py), the overlay table for `dvc
plots show`, the significance table and metrics/details/summary.json. Runs
that stayed at chance are named, and every verdict is also given without
them. Labels say what each run was trained with (its recorded settings); a
run params.yaml has changed since is named. Everything is computed and drawn
first, then written as one set: a failure leaves every previous file as it was.
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from rich.console import Console
from rich.markup import escape

from lossbench import figures
from lossbench.claims import Claim, head_and_tail, measure_claims, points
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
    read_class_counts,
    trained_otherwise,
    without_chance_runs,
)
from lossbench.stats import CANNOT_TELL, NO_DIFFERENCE, SIGNIFICANCE, direction, paired_comparison, summarize
from lossbench.storage import CLASS_COUNTS_FILE, METRICS_DIR, PLOTS_DIR, PublishedFiles, output_set

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
    summary = summarize(result.values(key))
    text = f"{summary['mean']:.{digits}f} ± {summary['std']:.{digits}f}"
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
                "stage": md(f"train@{r.name}"),
                "final test acc": _cell(r, "final_test_acc"),
                "per seed": ", ".join(f"{value:.3f}" for value in r.values("final_test_acc")),
                "best test acc": f"{r.mean('best_test_acc'):.4f}",
                "final train acc": f"{r.mean('final_train_acc'):.3f}",
                "macro-F1": f"{r.mean('macro_f1'):.3f}",
                "ECE": f"{r.mean('ece'):.3f}",
                "NLL": f"{r.mean('nll'):.3f}",
                "converged (epoch)": f"{r.mean('convergence_epoch'):.1f}",
                "wall time per seed (s)": f"{r.history.groupby('seed')['wall_time_s'].last().mean():.1f}",
            }
        )
    return pd.DataFrame(rows).sort_values("rank")


def _rounded(value: float | None, scale: float = 100.0, digits: int = 2) -> float | None:
    return None if value is None else round(scale * value, digits)


def significance_table(results: list[LossResult]) -> pd.DataFrame:
    rows = []
    for first, second in combinations(results, 2):
        comparison = paired_comparison(first.values("final_test_acc"), second.values("final_test_acc"))
        verdict = direction(comparison)
        rows.append(
            {
                "first": first.label,
                "second": second.label,
                "mean difference (points)": _rounded(comparison["mean_difference"]),
                "95% CI low": _rounded(comparison["ci95_low"]),
                "95% CI high": _rounded(comparison["ci95_high"]),
                "p (paired t)": _rounded(comparison["p_value"], 1.0, 4),
                "p (Wilcoxon)": _rounded(comparison["wilcoxon_p"], 1.0, 4),
                "detectable (points)": _rounded(comparison["detectable"], 100.0, 1),
                "verdict": verdict if verdict in (NO_DIFFERENCE, CANNOT_TELL) else f"{first.label} {verdict}",
            }
        )
    return pd.DataFrame(rows)


def significance_markdown(table: pd.DataFrame) -> str:
    """The significance table for report.md: its loss labels escaped."""
    return markdown_names(table, ["first", "second", "verdict"]).to_markdown(index=False)


def recall_table(results: list[LossResult], classes: list[str]) -> pd.DataFrame:
    """For report.md: class names and labels escaped."""
    return pd.DataFrame(
        [
            {"loss": md(r.label)}
            | {
                md(c): f"{np.mean([n['per_class_recall'][i] for n in r.per_seed.values()]):.3f}"
                for i, c in enumerate(classes)
            }
            for r in results
        ]
    )


def overlay_table(results: list[LossResult]) -> pd.DataFrame:
    """One row per loss and epoch (seed means): what `dvc plots show` overlays.
    Each loss is drawn in its colour (figures.loss_colours: by its name, which a
    γ edit does not change, as in the PNGs) and named by its label in the legend."""
    return pd.concat(
        [
            figures.seed_mean_curves(r)[["epoch", "lr", *figures.CURVE_COLUMNS]].assign(
                loss=r.name, label=r.label, color=colour
            )
            for r, colour in zip(results, figures.result_colours(results), strict=True)
        ],
        ignore_index=True,
    )


def _claim_lines(claims: list[Claim], without: list[Claim] | None, dropped: list[int]) -> list[str]:
    lines = []
    for claim, other in zip(claims, without or claims, strict=True):
        text = f"**{claim.number}. {claim.statement}** — *{claim.verdict}*. {claim.evidence}"
        if without is not None:
            text += f" *Without seeds {', '.join(map(str, dropped))} (runs at chance): {other.verdict}.* {other.evidence}"
        lines += [text, ""]
    return lines


def report(params: Params, root: Path, console: Console) -> dict[str, Any]:
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
    numerics = numerics_line({r.name: numerics_of(r.run["settings"]) for r in results})
    if not numerics.startswith("Numerics:"):
        console.print(f"  note: {numerics}", markup=False, highlight=False)
    seeds = params.seeds
    ranking = [r.name for r in sorted(results, key=lambda r: r.mean("final_test_acc"), reverse=True)]
    at_chance = {r.name: r.at_chance() for r in results if r.at_chance()}
    cleaned, dropped = without_chance_runs(results)

    overlay = overlay_table(results)
    significance = significance_table(results)

    claims = measure_claims(results, class_counts)
    without = measure_claims(cleaned, class_counts) if dropped and len(dropped) < len(seeds) - 1 else None
    summary = {
        "best_loss": ranking[0],
        "rank": {name: ranking.index(name) + 1 for name in params.losses},
        "runs_at_chance": {
            name: {str(seed): why for seed, why in runs.items()} for name, runs in at_chance.items()
        },
        "claims": {str(claim.number): claim.verdict for claim in claims},
        "claims_without_runs_at_chance": None
        if without is None
        else {str(c.number): c.verdict for c in without},
    }

    settings = results[0].run["settings"]
    n_train, n_test = int(results[0].run["train_samples"]), int(results[0].run["test_samples"])
    variants = []
    if class_counts.get("imbalance_ratio", 1.0) > 1:
        variants.append(f"long-tailed training set (imbalance ratio {class_counts['imbalance_ratio']:g})")
    if class_counts.get("label_noise", 0.0) > 0:
        variants.append(f"{points(class_counts['label_noise'])}% of training labels flipped")
    chance_text = (
        "No run stayed at chance."
        if not at_chance
        else "Runs at chance (test accuracy never more than "
        f"{points(CHANCE_MARGIN)} points above chance, or back there at the end): "
        + "; ".join(
            f"{name} seed {seed} ({why})" for name, runs in at_chance.items() for seed, why in runs.items()
        )
        + ". They stay in every table; the significance table and the claims are also given without them."
    )
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
        md(numerics),
        "",
        results_table(results, ranking).to_markdown(index=False),
        "",
        chance_text,
        "",
        f"![Loss and accuracy per epoch]({CURVES_FIGURE.name})",
        "",
        f"![Final test accuracy per seed]({ACCURACY_FIGURE.name})",
        "",
        "## Which differences are real?",
        "",
        "Every pair of losses on final test accuracy, seed by seed: mean difference (first minus second) in "
        "percentage points, its 95% t interval, the paired t-test and the Wilcoxon signed-rank test, and the "
        f"smallest difference these {len(seeds)} seeds detect with 80% power at α = {SIGNIFICANCE} (paired t, "
        "from the observed spread of the differences): a 'no significant difference' rules out gaps larger than "
        f"that, not smaller ones. With n seeds the Wilcoxon test cannot go below p = 2/2ⁿ "
        f"({2 / 2 ** len(seeds):.3g} here).",
        "",
        significance_markdown(significance),
        "",
    ]
    if without is not None:
        lines += [
            f"Without seeds {', '.join(map(str, dropped))} (a run at chance in some loss):",
            "",
            significance_markdown(significance_table(cleaned)),
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

        def recall_over(result: LossResult, members: list[int]) -> float:
            return float(
                np.mean([[n["per_class_recall"][c] for c in members] for n in result.per_seed.values()])
            )

        rows = [
            {
                "loss": r.label,
                "head recall": f"{recall_over(r, head):.3f}",
                "tail recall": f"{recall_over(r, tail):.3f}",
            }
            for r in results
        ]
        lines += [
            f"Head classes ({', '.join(md(classes[c]) for c in head)}) have the most training images, tail "
            f"classes ({', '.join(md(classes[c]) for c in tail)}) the fewest; the test set is balanced.",
            "",
            pd.DataFrame(rows).to_markdown(index=False),
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
        "## The study's claims, measured",
        "",
        f"Definitions: a run *converges* at the first epoch whose test accuracy is within "
        f"{points(CONVERGENCE_TOLERANCE)} points of its best; its loss *plateaus* at the first epoch after which "
        f"the training loss never falls more than {100 * PLATEAU_TOLERANCE:.0f}% below that epoch's value. "
        "Verdicts: *supported (significant)* — every comparison goes the claimed way at p < 0.05 (paired t); "
        "*opposite (significant)* — at least one goes the other way at p < 0.05; *not significant* — neither, "
        "with the difference these seeds could have detected ('could detect ±x').",
        "",
        *_claim_lines(claims, without, dropped),
    ]
    drawn = [
        (figures.draw_curves(results, chance=1 / len(classes)), CURVES_FIGURE, figures.DPI),
        (figures.draw_final_accuracy(results, chance=1 / len(classes)), ACCURACY_FIGURE, figures.DPI),
        (figures.draw_reliability(results), RELIABILITY_FIGURE, figures.RELIABILITY_DPI),
    ]
    # Every number, text and figure is made before the first file is written, and the
    # files are written as one set: a failure (a full disk) leaves all the previous ones.
    try:
        with output_set() as files:
            for figure, path, dpi in drawn:
                figures.save_figure(files, figure, root / path, dpi)
            files.write_with(root / CURVES_TABLE, lambda path: overlay.to_csv(path, index=False))
            files.write_with(root / SIGNIFICANCE_TABLE, lambda path: significance.to_csv(path, index=False))
            files.write_json(root / SUMMARY_FILE, summary)
            files.write_text(root / REPORT_FILE, "\n".join(lines))
    finally:
        for figure, _, _ in drawn:
            plt.close(figure)

    for path in foreign_files(params, root):
        console.print(
            f"  note: {escape(shown(path.relative_to(root)))} is not written by this pipeline (no such loss in "
            "params.yaml); left as it is"
        )
    console.print(f"[bold]report[/]: ranking by mean final test accuracy: {' > '.join(ranking)}")
    if at_chance:
        console.print(f"  runs at chance: {summary['runs_at_chance']}")
    for claim in claims:
        console.print(f"  claim {claim.number}: {claim.verdict}")
    console.print(
        f"  wrote {REPORT_FILE}, {CURVES_FIGURE}, {ACCURACY_FIGURE}, {RELIABILITY_FIGURE}, {SUMMARY_FILE}"
    )
    return summary
