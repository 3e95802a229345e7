"""`lossbench variants-report`: claim 5 across a study's experiments. CE against
focal on long-tailed training sets (`data.imbalance_ratio`) and with flipped
labels (`data.label_noise`), each loss paired by seed with the same loss's
clean run in another folder (`--clean`, e.g. studies/cifar10-jpeg), which must
follow this study's protocol exactly but for its seeds.

Run it in the study's folder after its experiments ran (or were pulled):
it reads the runs `dvc exp show --json` lists, from git and the workspace
(experiments.exp_show), and each run's committed details, and writes
plots/variants.md, plots/imbalance.csv, plots/noise.csv, plots/memorization.csv
and plots/variants.png.
This module finds the runs and writes the report; claims.py measures the claim
(`imbalance_half`, `noise_half`) and figures.py draws it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from rich.console import Console

from lossbench import claims, figures
from lossbench.errors import MissingInput, ParamsError
from lossbench.experiments import (
    exp_show,
    experiment_records,
    params_at,
    queue_command,
)
from lossbench.losses.ce import CeLoss
from lossbench.losses.focal import FocalLoss
from lossbench.md import md
from lossbench.params import Params
from lossbench.results import LossResult, VariantRun
from lossbench.run_numerics import RunNumerics, numerics_of
from lossbench.storage import PLOTS_DIR, output_set
from lossbench.variant_runs import VariantRuns, clean_runs, variant_runs
from lossbench.variants_text import (
    calibration_cases,
    calibration_section,
    half_section,
    imbalance_markdown,
    memorization_section,
    memorization_table,
    noise_markdown,
)
from lossbench.verdicts import wilcoxon_note

VARIANTS_REPORT = PLOTS_DIR / "variants.md"
VARIANTS_FIGURE = PLOTS_DIR / "variants.png"
IMBALANCE_TABLE = PLOTS_DIR / "imbalance.csv"
NOISE_TABLE = PLOTS_DIR / "noise.csv"
MEMORIZATION_TABLE = PLOTS_DIR / "memorization.csv"


def _check_losses(params: Params) -> None:
    ce = [name for name, spec in params.losses.items() if isinstance(spec, CeLoss)]
    if len(ce) != 1 or not any(isinstance(spec, FocalLoss) for spec in params.losses.values()):
        raise ParamsError("losses: variants-report needs exactly one ce loss and at least one focal loss")


def _figure_panels(runs: list[VariantRun]) -> list[figures.VariantPanel]:
    """Tail recall and macro-F1 against the imbalance ratio (the tail of the most
    long-tailed run), accuracy against label noise; none without a long-tailed run."""
    long_tailed = [run for run in runs if run.imbalance_ratio > 1 and run.label_noise == 0]
    if not long_tailed:
        return []
    measures = claims.imbalance_measures(long_tailed[-1].class_counts)
    tail = len(claims.head_and_tail(long_tailed[-1].class_counts)[1])
    return [
        ("imbalance_ratio", measures["tail_recall"], f"tail-class recall ({tail} smallest classes)"),
        ("imbalance_ratio", measures["macro_f1"], "macro-F1"),
        ("label_noise", claims.final_accuracy, "test accuracy"),
    ]


@dataclass(frozen=True)
class Compared:
    """What variants-report compares: the study's params (those of `--rev`'s
    commit, if given), its variant runs, the clean runs, and every run's record."""

    params: Params
    found: VariantRuns
    clean: dict[str, LossResult]
    records: list[dict[str, Any]]


def _compared(params: Params, clean_root: Path, root: Path, all_commits: bool, rev: str | None) -> Compared:
    shown = exp_show(root, all_commits, rev)
    if rev is not None:  # that commit's study: the workspace may have moved on
        params = params_at(root, shown, rev)
    clean = clean_runs(params, clean_root)
    records = experiment_records(shown)
    found = variant_runs(params, root, records)
    if not found.runs:
        raise MissingInput(
            "no finished run of this study changes only data.imbalance_ratio or data.label_noise"
            + (f" (left out: {', '.join(found.left_out)})" if found.left_out else "")
            + "; "
            + queue_command(params, root, "data.imbalance_ratio=10,100")
            + ", then wait for `dvc queue status` to show them done"
        )
    _check_losses(params)
    return Compared(params, found, clean, records)


def _numerics(compared: Compared) -> RunNumerics:
    first = next(iter(compared.params.losses))
    return RunNumerics.of(
        {run.experiment: numerics_of(run.results[first].run["settings"]) for run in compared.found.runs}
        | {"the clean runs": numerics_of(compared.clean[first].run["settings"])}
    )


def _opening(compared: Compared, clean_root: Path, root: Path, numerics: RunNumerics) -> str:
    """The claim, the runs compared and how they are judged."""
    params, runs, left_out = compared.params, compared.found.runs, compared.found.left_out
    # The clean study's folder as seen from this one's: the report is committed, an absolute path is not.
    clean_folder = os.path.relpath(os.path.abspath(clean_root), os.path.abspath(root))
    return (
        f"Runs: {', '.join(f'{md(r.experiment)} (imbalance {r.imbalance_ratio:g}, noise {r.label_noise:g})' for r in runs)}; "
        f"clean runs from {md(clean_folder)} (same protocol), seeds {', '.join(map(str, params.seeds))}, paired by "
        "seed. Differences: mean [95% CI], paired t-test p (Holm-adjusted over the half's comparisons, the "
        "half's family; Wilcoxon p), and the verdict: *different*, *equivalent within "
        f"{claims.accuracy_margin(params.analysis).written()}* (TOST) or *inconclusive* (then the 95% CI bounds "
        f"the difference). {wilcoxon_note(len(params.seeds))}"
        + (f" Left out: {', '.join(md(run) for run in left_out)}." if left_out else "")
        + _chance_text(compared)
        + f" {md(numerics.text())}\n"
    )


def _chance_text(compared: Compared) -> str:
    """The runs at chance, clean or variant: a network that never learned says nothing about
    imbalance or noise, so each comparison leaves out the seeds where one of its runs is one."""
    stuck = []
    for where, results in [("the clean runs", compared.clean.values())] + [
        (run.experiment, run.results.values()) for run in compared.found.runs
    ]:
        runs = [
            f"{md(r.name)} seed{'s' if len(r.at_chance()) > 1 else ''} {', '.join(map(str, sorted(r.at_chance())))}"
            for r in results
            if r.at_chance()
        ]
        if runs:
            stuck.append(f"{md(where)}: {', '.join(runs)}")
    if not stuck:
        return ""
    return (
        f" Runs at chance ({'; '.join(stuck)}) never learned, so they say nothing about imbalance or noise: "
        "each comparison leaves out the seeds where one of its runs stayed at chance, and names them."
    )


def _write(
    root: Path, text: str, tables: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame], figure: Figure | None
) -> None:
    """plots/variants.md, its tables and its figure, as one set of files."""
    imbalance, noise, memorization = tables
    # Every number, text and figure is made before the first file is written; the files are one set.
    with figures.closing(*([figure] if figure else [])), output_set() as files:
        files.write_with(root / IMBALANCE_TABLE, lambda path: imbalance.round(4).to_csv(path, index=False))
        files.write_with(root / NOISE_TABLE, lambda path: noise.round(4).to_csv(path, index=False))
        if len(memorization):
            files.write_with(
                root / MEMORIZATION_TABLE, lambda path: memorization.round(4).to_csv(path, index=False)
            )
        if figure is not None:
            figures.save_figure(files, figure, root / VARIANTS_FIGURE)
        files.write_text(root / VARIANTS_REPORT, text)


def variants_report(
    params: Params,
    clean_root: Path,
    root: Path,
    console: Console,
    all_commits: bool = False,
    rev: str | None = None,
) -> None:
    compared = _compared(params, clean_root, root, all_commits, rev)
    params, runs = compared.params, compared.found.runs
    numerics = _numerics(compared)
    if not numerics.consistent:
        console.print(f"note: {numerics.text()}", markup=False, highlight=False)

    imbalance = claims.imbalance_half(runs, params.analysis)
    noise = claims.noise_half(runs, compared.clean, params.analysis)
    memorization = memorization_table(runs)
    panels = _figure_panels(runs)
    figure = figures.draw_variants(runs, compared.clean, panels) if panels else None
    sections = [
        f"# Claim 5: {claims.STATEMENTS[4][0]}\n",
        _opening(compared, clean_root, root, numerics),
        *(["![tail recall, macro-F1 and accuracy against the variants](variants.png)\n"] if panels else []),
        *half_section(
            imbalance,
            "## Class imbalance (CIFAR-10-LT profile; balanced test set)\n",
            imbalance_markdown,
            "First half, focal helps with class imbalance (tail recall and macro-F1, focal − CE)",
        ),
        *half_section(
            noise,
            "## Label noise (a fraction of training labels flipped to a random other class)\n",
            noise_markdown,
            "Second half, CE is more sensitive to label noise (CE's drop from clean − each other loss's)",
        ),
        *memorization_section(memorization),
        *calibration_section(params, *calibration_cases(params, root, compared.records, runs)),
    ]
    _write(root, "\n".join(sections), (imbalance.table, noise.table, memorization), figure)
    console.print("\n".join(sections), markup=False, highlight=False)
    console.print(
        f"[bold]variants-report[/]: claim 5 imbalance half {imbalance.verdict()[0].value}, noise half "
        f"{noise.verdict()[0].value}; wrote {VARIANTS_REPORT}, {IMBALANCE_TABLE}, {NOISE_TABLE}"
        + (f", {MEMORIZATION_TABLE}" if len(memorization) else "")
        + (f" and {VARIANTS_FIGURE}" if panels else "")
    )
