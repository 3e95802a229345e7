"""`lossbench variants-report`: claim 5 across a study's experiments. CE against
focal on long-tailed training sets (`data.imbalance_ratio`) and with flipped
labels (`data.label_noise`), each loss paired by seed with the same loss's
clean run in another folder (`--clean`, e.g. studies/cifar10-jpeg), which must
follow this study's protocol exactly but for its seeds.

Run it in the study's folder after its experiments ran (or were pulled):
it reads `dvc exp show --json` and each run's committed details, and writes
plots/variants.md, plots/imbalance.csv, plots/noise.csv, plots/memorization.csv
and plots/variants.png.
This module finds the runs and writes the report; claims.py measures the claim
(`imbalance_half`, `noise_half`) and figures.py draws it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import ValidationError
from rich.console import Console

from lossbench import claims, figures, temperature
from lossbench.errors import DamagedInput, MissingInput, ParamsError
from lossbench.experiments import (
    exp_show,
    experiment_records,
    flatten,
    json_at,
    params_at,
    params_of,
    queue_command,
    run_name,
    study_prefix,
)
from lossbench.losses.ce import CeLoss
from lossbench.losses.focal import FocalLoss
from lossbench.params import MachineParams, Params, load_params, loss_label
from lossbench.results import (
    CLEAN_DATA,
    Field,
    LossResult,
    VariantRun,
    changed_settings,
    checked_class_counts,
    markdown_names,
    md,
    numerics_line,
    numerics_of,
    plus_minus,
    read_json,
    settings_now,
    with_unique_labels,
)
from lossbench.runfiles import CALIBRATION_DIR, parsed_calibration
from lossbench.storage import CLASS_COUNTS_FILE, DETAILS_DIR, PLOTS_DIR, output_set
from lossbench.verdicts import wilcoxon_note

VARIANTS_REPORT = PLOTS_DIR / "variants.md"
VARIANTS_FIGURE = PLOTS_DIR / "variants.png"
IMBALANCE_TABLE = PLOTS_DIR / "imbalance.csv"
NOISE_TABLE = PLOTS_DIR / "noise.csv"
MEMORIZATION_TABLE = PLOTS_DIR / "memorization.csv"
# Recorded by train for each seed with flipped labels (inference.flipped_label_fit).
FLIPPED_KEYS = {
    "flipped_train_acc_noisy": "fits the flipped label",
    "flipped_train_acc_true": "the true label",
}
SEED_KEYS = ("final_test_acc", "macro_f1", "per_class_recall")  # what this report reads of a seed


def _protocol(params: Params) -> Params:
    """Params with the data variant and the machine set aside: what must match."""
    return params.model_copy(
        update={"data": params.data.model_copy(update=CLEAN_DATA), "machine": MachineParams()}
    )


@dataclass
class VariantRuns:
    """The study's finished runs of one data variant each, and the runs left out, each with why."""

    runs: list[VariantRun] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)


def variant_runs(params: Params, root: Path, records: list[dict[str, Any]]) -> VariantRuns:
    """The study's runs that follow its protocol and change only the data
    variant, each once, with every loss's results; the others are named."""
    prefix = study_prefix(root)
    found = VariantRuns()
    by_variant: dict[tuple[float, float], VariantRun] = {}
    for record in records:
        name = run_name(record)
        try:
            run_params = Params.model_validate(params_of(record, prefix))
        except ValidationError:
            continue  # not this study's params (an older commit's format)
        variant = (run_params.data.imbalance_ratio, run_params.data.label_noise)
        if variant == tuple(CLEAN_DATA.values()):
            continue
        if _protocol(run_params) != _protocol(params):
            found.left_out.append(f"{name} (another protocol)")
            continue
        if variant[0] > 1 and variant[1] > 0:
            found.left_out.append(f"{name} (long-tailed and noisy at once)")
            continue
        details = {loss: json_at(root, record, f"{DETAILS_DIR}/{loss}.json") for loss in params.losses}
        counts = json_at(root, record, str(CLASS_COUNTS_FILE))
        if counts is None or any(value is None for value in details.values()):
            continue  # no results (a commit where it was not run)
        counts = checked_class_counts(counts, f"{CLASS_COUNTS_FILE} of run {name}")
        results = {
            loss: LossResult.from_details(
                Field(value, f"{DETAILS_DIR}/{loss}.json of {name}"), params.seeds, SEED_KEYS
            )
            for loss, value in details.items()
        }
        results = dict(zip(results, with_unique_labels(list(results.values())), strict=True))
        stale = any(
            changed_settings(result, settings_now(run_params, loss)) for loss, result in results.items()
        )
        if stale or (counts.get("imbalance_ratio"), counts.get("label_noise")) != variant:
            found.left_out.append(f"{name} (its results are not of its params: rerun it)")
            continue
        run = VariantRun(name, variant[0], variant[1], results, counts)
        earlier = by_variant.setdefault(variant, run)
        if earlier is not run and any(
            earlier.results[loss].per_seed != result.per_seed for loss, result in results.items()
        ):
            raise MissingInput(
                f"runs {earlier.experiment} and {name} both ran imbalance {variant[0]:g}, noise {variant[1]:g} "
                "with different results (other code?); remove one (`dvc exp remove`) or check --all-commits and --rev"
            )
    found.runs = sorted(by_variant.values(), key=lambda run: (run.imbalance_ratio, run.label_noise))
    return found


def clean_runs(params: Params, clean_root: Path) -> dict[str, LossResult]:
    """Each loss's clean results on this study's seeds, from clean_root, which must run
    this study's protocol on clean data, with this study's loss names and seeds among its own."""
    if not (clean_root / "params.yaml").is_file():
        raise ParamsError(f"--clean {clean_root}: no params.yaml there; give the clean study's folder")
    clean = load_params(clean_root / "params.yaml")
    here, there = (flatten(_protocol(p).model_dump(mode="json")) for p in (params, clean))
    differ = sorted(
        key for key in here if key.startswith(("data.", "train.")) and here[key] != there.get(key)
    )
    if differ:
        raise ParamsError(
            f"--clean {clean_root}: {', '.join(differ)} {'differs' if len(differ) == 1 else 'differ'} from this "
            "study's; the clean run must follow the same protocol (only its seeds may differ)"
        )
    if (clean.data.imbalance_ratio, clean.data.label_noise) != tuple(CLEAN_DATA.values()):
        raise ParamsError(f"--clean {clean_root}: its data.imbalance_ratio or data.label_noise is set")
    missing_seeds = sorted(set(params.seeds) - set(clean.seeds))
    if missing_seeds:
        raise ParamsError(f"--clean {clean_root}: has no run for seed(s) {missing_seeds}")
    runs = {}
    for name, spec in params.losses.items():
        if clean.losses.get(name) != spec:
            raise ParamsError(f"--clean {clean_root}: losses.{name} is not this study's {loss_label(spec)}")
        path = clean_root / DETAILS_DIR / f"{name}.json"
        if not path.is_file():
            raise MissingInput(f"{path} is missing: run that study first")
        runs[name] = LossResult.from_details(Field(read_json(path), str(path)), params.seeds, SEED_KEYS)
        # The results must be of the params beside them, not left from an older run.
        stale = sorted(key for key, _, _ in changed_settings(runs[name], settings_now(clean, name)))
        if stale:
            raise MissingInput(
                f"{path}: its results were trained with other {', '.join(stale)} than its params.yaml says; "
                "rerun that study"
            )
    return dict(zip(runs, with_unique_labels(list(runs.values())), strict=True))


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


def _plus_minus_cells(table: pd.DataFrame, measure: str) -> list[str]:
    """'mean ± sd' cells of a measure's _mean and _std columns."""
    return [
        plus_minus(mean, sd)
        for mean, sd in zip(table[f"{measure}_mean"], table[f"{measure}_std"], strict=True)
    ]


def _imbalance_markdown(table: pd.DataFrame) -> str:
    shown = markdown_names(table[["imbalance_ratio", "loss", "seeds", "train_images"]], ["loss"])
    for measure, name in claims.MEASURE_NAMES.items():
        shown[name] = _plus_minus_cells(table, measure)
    return shown.to_markdown(index=False)


def _noise_markdown(table: pd.DataFrame) -> str:
    shown = markdown_names(table[["label_noise", "loss", "seeds"]], ["loss"])
    shown["clean test acc"] = [f"{value:.4f}" for value in table["clean_acc_mean"]]
    shown["test acc"] = _plus_minus_cells(table, "test_acc")
    shown["drop (points) [95% CI]"] = [
        f"{100 * mean:+.1f}" + ("" if pd.isna(low) else f" [{100 * low:+.1f}, {100 * high:+.1f}]")
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


def _memorization_section(table: pd.DataFrame) -> list[str]:
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
        cases += [
            temperature.ece_case(
                f"{variant}, {md(focal.label)} − CE",
                calibration[focal.name],
                calibration[ce.name],
                params.seeds,
            )
            for focal in focals
        ]
    return cases, without


def _calibration_section(params: Params, cases: list[temperature.EceCase], without: list[str]) -> list[str]:
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
            f"No calibration files in {', '.join(md(name) for name in without)}: rerun "
            "`dvc exp run` for them (training comes back from the run-cache).\n"
        )
    return lines


def _half_section(
    half: claims.ClaimHalf, heading: str, markdown: Callable[[pd.DataFrame], str], verdict_line: str
) -> list[str]:
    verdict, by_case = half.verdict()
    return [
        heading,
        markdown(half.table) if len(half.table) else "No run.",
        "\n" + "\n".join(f"- {part}" for part in half.parts) + "\n",
        f"**{verdict_line}: {verdict.value}.** By case: {by_case}.\n",
    ]


def variants_report(
    params: Params,
    clean_root: Path,
    root: Path,
    console: Console,
    all_commits: bool = False,
    rev: str | None = None,
) -> None:
    shown = exp_show(root, all_commits, rev)
    if rev is not None:  # that commit's study: the workspace may have moved on
        params = params_at(root, shown, rev)
    clean = clean_runs(params, clean_root)
    records = experiment_records(shown)
    found = variant_runs(params, root, records)
    runs = found.runs
    if not runs:
        raise MissingInput(
            "no finished run of this study changes only data.imbalance_ratio or data.label_noise"
            + (f" (left out: {', '.join(found.left_out)})" if found.left_out else "")
            + "; "
            + queue_command(params, root, "data.imbalance_ratio=10,100")
            + ", then wait for `dvc queue status` to show them done"
        )
    _check_losses(params)
    first = next(iter(params.losses))
    numerics = numerics_line(
        {run.experiment: numerics_of(run.results[first].run["settings"]) for run in runs}
        | {"the clean runs": numerics_of(clean[first].run["settings"])}
    )
    if not numerics.startswith("Numerics:"):
        console.print(f"note: {numerics}", markup=False, highlight=False)

    imbalance = claims.imbalance_half(runs, params.analysis)
    noise = claims.noise_half(runs, clean, params.analysis)
    memorization = memorization_table(runs)
    panels = _figure_panels(runs)

    figure = figures.draw_variants(runs, clean, panels) if panels else None
    # The clean study's folder as seen from this one's: the report is committed, an absolute path is not.
    clean_folder = os.path.relpath(os.path.abspath(clean_root), os.path.abspath(root))
    sections = [
        f"# Claim 5: {claims.STATEMENTS[4][0]}\n",
        f"Runs: {', '.join(f'{md(r.experiment)} (imbalance {r.imbalance_ratio:g}, noise {r.label_noise:g})' for r in runs)}; "
        f"clean runs from {md(clean_folder)} (same protocol), seeds {', '.join(map(str, params.seeds))}, paired by "
        "seed. Differences: mean [95% CI], paired t-test p (Holm-adjusted over the half's comparisons, the "
        "half's family; Wilcoxon p), and the verdict: *different*, *equivalent within "
        f"{claims.accuracy_margin(params.analysis).written()}* (TOST) or *inconclusive* (then the 95% CI bounds "
        f"the difference). {wilcoxon_note(len(params.seeds))}"
        + (f" Left out: {', '.join(md(run) for run in found.left_out)}." if found.left_out else "")
        + f" {md(numerics)}\n",
        *(["![tail recall, macro-F1 and accuracy against the variants](variants.png)\n"] if panels else []),
        *_half_section(
            imbalance,
            "## Class imbalance (CIFAR-10-LT profile; balanced test set)\n",
            _imbalance_markdown,
            "First half, focal helps with class imbalance (tail recall and macro-F1, focal − CE)",
        ),
        *_half_section(
            noise,
            "## Label noise (a fraction of training labels flipped to a random other class)\n",
            _noise_markdown,
            "Second half, CE is more sensitive to label noise (CE's drop from clean − each other loss's)",
        ),
        *_memorization_section(memorization),
        *_calibration_section(params, *calibration_cases(params, root, records, runs)),
    ]
    # Every number, text and figure is made before the first file is written; the files are one set.
    with figures.closing(*([figure] if figure else [])), output_set() as files:
        files.write_with(
            root / IMBALANCE_TABLE, lambda path: imbalance.table.round(4).to_csv(path, index=False)
        )
        files.write_with(root / NOISE_TABLE, lambda path: noise.table.round(4).to_csv(path, index=False))
        if len(memorization):
            files.write_with(
                root / MEMORIZATION_TABLE, lambda path: memorization.round(4).to_csv(path, index=False)
            )
        if figure is not None:
            figures.save_figure(files, figure, root / VARIANTS_FIGURE)
        files.write_text(root / VARIANTS_REPORT, "\n".join(sections))
    console.print("\n".join(sections), markup=False, highlight=False)
    console.print(
        f"[bold]variants-report[/]: claim 5 imbalance half {imbalance.verdict()[0].value}, noise half "
        f"{noise.verdict()[0].value}; wrote {VARIANTS_REPORT}, {IMBALANCE_TABLE}, {NOISE_TABLE}"
        + (f", {MEMORIZATION_TABLE}" if len(memorization) else "")
        + (f" and {VARIANTS_FIGURE}" if panels else "")
    )
