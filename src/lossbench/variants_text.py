"""plots/variants.md's sections: each half of claim 5 with its table, the
memorization gauge and the calibration after temperature scaling."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from lossbench import claims, temperature
from lossbench.errors import DamagedInput
from lossbench.experiments import json_at, run_name
from lossbench.md import markdown_names, md, plus_minus
from lossbench.params import Params
from lossbench.results import VariantRun
from lossbench.runfiles import CALIBRATION_DIR, parsed_calibration
from lossbench.storage import DETAILS_DIR

# Recorded by train for each seed with flipped labels (inference.flipped_label_fit).
FLIPPED_KEYS = {
    "flipped_train_acc_noisy": "fits the flipped label",
    "flipped_train_acc_true": "the true label",
}


def _plus_minus_cells(table: pd.DataFrame, measure: str) -> list[str]:
    """'mean ± sd' cells of a measure's _mean and _std columns."""
    return [
        plus_minus(mean, sd)
        for mean, sd in zip(table[f"{measure}_mean"], table[f"{measure}_std"], strict=True)
    ]


def imbalance_markdown(table: pd.DataFrame) -> str:
    shown = markdown_names(table[["imbalance_ratio", "loss", "seeds", "train_images"]], ["loss"])
    for measure, name in claims.MEASURE_NAMES.items():
        shown[name] = _plus_minus_cells(table, measure)
    return shown.to_markdown(index=False)


def noise_markdown(table: pd.DataFrame) -> str:
    shown = markdown_names(table[["label_noise", "loss", "seeds"]], ["loss"])
    shown["left out (at chance)"] = table["left_out"]
    # A loss whose every seed is left out (a run at chance on each) has nothing to show but that.
    paired = table["seeds"] > 0
    shown["clean test acc"] = [
        f"{value:.4f}" if ok else "–" for value, ok in zip(table["clean_acc_mean"], paired, strict=True)
    ]
    shown["test acc"] = [
        cell if ok else "–" for cell, ok in zip(_plus_minus_cells(table, "test_acc"), paired, strict=True)
    ]
    shown["drop (points) [95% CI]"] = [
        "–"
        if pd.isna(mean)
        else f"{100 * mean:+.1f}" + ("" if pd.isna(low) else f" [{100 * low:+.1f}, {100 * high:+.1f}]")
        for mean, low, high in zip(
            table["drop_mean"], table["drop_ci95_low"], table["drop_ci95_high"], strict=True
        )
    ]
    shown["p (paired t)"] = ["–" if pd.isna(p) else f"{p:.3g}" for p in table["drop_p"]]
    shown["p (Holm)"] = ["–" if pd.isna(p) else f"{p:.3g}" for p in table["drop_p_holm"]]
    return shown.to_markdown(index=False)


def memorization_table(runs: list[VariantRun]) -> pd.DataFrame:
    """Per noise level and loss, seed mean and sd of the finished networks' accuracy on
    the flipped training images against their flipped and their true labels: how far
    each loss memorised the noise. Runs trained before the gauge was recorded are left out."""
    rows = []
    for run in (run for run in runs if run.label_noise > 0 and run.imbalance_ratio == 1):
        for name, result in run.results.items():
            seeds = result.per_seed
            if not all(key in numbers for numbers in seeds.values() for key in FLIPPED_KEYS):
                continue
            row: dict[str, object] = {
                "label_noise": run.label_noise,
                "loss": result.label,
                "seeds": len(seeds),
            }
            for key in FLIPPED_KEYS:
                values = [numbers[key] for numbers in seeds.values()]
                if not all(
                    isinstance(v, float | int) and not isinstance(v, bool) and math.isfinite(v)
                    for v in values
                ):
                    raise DamagedInput(
                        f"{DETAILS_DIR}/{name}.json of {run.experiment}: per_seed {key} is not a number in every seed"
                    )
                row[f"{key}_mean"] = float(pd.Series(values).mean())
                row[f"{key}_std"] = float(pd.Series(values).std(ddof=1)) if len(values) > 1 else float("nan")
            rows.append(row)
    return pd.DataFrame(rows)


def memorization_section(table: pd.DataFrame) -> list[str]:
    if not len(table):
        return []
    shown = markdown_names(table[["label_noise", "loss", "seeds"]], ["loss"])
    for key, name in FLIPPED_KEYS.items():
        shown[name] = _plus_minus_cells(table, key)
    return [
        "### Memorization: the flipped training labels\n",
        "Of the training images whose label was flipped, the share the finished network (unaugmented "
        "images) classes as the flipped label it was trained on, and as the true label; seed mean ± sd. "
        "A loss that fits the flipped labels learnt the noise.\n",
        shown.to_markdown(index=False),
        "",
    ]


def calibration_cases(
    params: Params, root: Path, records: list[dict[str, Any]], runs: list[VariantRun]
) -> tuple[list[temperature.EceCase], list[str]]:
    """Per variant run, each focal loss − CE on ECE before and after temperature
    scaling (calibrate's files of that run); and the runs without those files."""
    by_name = {run_name(record): record for record in records}
    cases, without = [], []
    for run in runs:
        record = by_name[run.experiment.split(" = ")[0]]
        found = {
            name: json_at(root, record, f"{CALIBRATION_DIR.as_posix()}/{name}.json") for name in run.results
        }
        if any(value is None for value in found.values()):
            without.append(run.experiment)
            continue
        calibration = {
            name: parsed_calibration(
                value, f"{CALIBRATION_DIR.as_posix()}/{name}.json of run {run.experiment}"
            )
            for name, value in found.items()
        }
        ce, focals = claims.ce_and_focals(list(run.results.values()))
        if ce is None:
            continue  # variants-report asks params.yaml for a CE loss first
        variant = (
            f"ratio {run.imbalance_ratio:g}"
            if run.imbalance_ratio > 1
            else f"{100 * run.label_noise:g}% noise"
        )
        for focal in focals:
            what, seeds = temperature.calibrated_pair(f"{variant}, {md(focal.label)} − CE", focal, ce)
            cases.append(temperature.ece_case(what, calibration[focal.name], calibration[ce.name], seeds))
    return cases, without


def calibration_section(params: Params, cases: list[temperature.EceCase], without: list[str]) -> list[str]:
    margin = claims.ece_margin(params.analysis)
    lines = [
        "## Calibration after temperature scaling\n",
        "Does focal loss's calibration advantage on a long tail (or its cost elsewhere) survive the cheapest "
        "fix? Each focal loss minus CE on ECE, paired by seed, in points of ECE, before and after temperature "
        "scaling (T fitted on one half of the test set, scored on the other, both ways: stage calibrate); "
        f"Holm over the cases on each side, equivalence within {margin.written()}.\n",
    ]
    if cases:
        lines += [*temperature.judge_ece(cases, margin).lines(), ""]
    if without:
        lines.append(
            f"No calibration files in {', '.join(md(name) for name in without)}: rerun them "
            "(`dvc exp run`, or `dvc repro` for the study's commit; training comes back from the run-cache).\n"
        )
    return lines


def half_section(
    half: claims.ClaimHalf, heading: str, markdown: Callable[[pd.DataFrame], str], verdict_line: str
) -> list[str]:
    verdict, by_case = half.verdict()
    return [
        heading,
        markdown(half.table) if len(half.table) else "No run.",
        "\n" + "\n".join(f"- {part}" for part in half.parts) + "\n",
        f"**{verdict_line}: {verdict.value}.** By case: {by_case}.\n",
    ]
