"""The report's tables of numbers: the results, every pair of losses on
accuracy and on ECE, per-class and head/tail recall, and the per-epoch overlay
that `dvc plots show` draws."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd

from lossbench import figures
from lossbench.claims import RISE_FRACTION, recall_over, rise_epochs
from lossbench.md import markdown_names, md, plus_minus
from lossbench.results import LossResult, lost_seeds, paired
from lossbench.stats import summarize
from lossbench.verdicts import Margin, pairwise_table


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
    """Every pair of losses on final test accuracy, each on the seeds both have
    (results.paired): one family for Holm's correction. Where results left
    seeds out (runs at chance), each pair's seeds (n) and the seeds it lost."""
    pairs = [paired(first, second) for first, second in combinations(results, 2)]
    table = pairwise_table(
        [
            (first.label, second.label, first.values("final_test_acc"), second.values("final_test_acc"))
            for first, second in pairs
        ],
        margin,
    )
    if pairs and any(result.left_out for result in results):  # one loss has no pair, no columns
        table.insert(2, "n", [len(first.seeds) for first, _ in pairs])
        lost = [", ".join(map(str, lost_seeds(first, second))) or "–" for first, second in pairs]
        table.insert(3, "left out (at chance)", lost)
    return table


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
