"""`lossbench variants-report`: claim 5 across a study's experiments. CE against
focal on long-tailed training sets (`data.imbalance_ratio`) and with flipped
labels (`data.label_noise`), each loss paired by seed with the same loss's
clean run in another folder (`--clean`, e.g. studies/cifar10-jpeg), which must
follow this study's protocol exactly but for its seeds.

Run it in the study's folder after its experiments ran (or were pulled):
it reads `dvc exp show --json` and each run's committed details, and writes
plots/variants.md, plots/imbalance.csv, plots/noise.csv and plots/variants.png.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from pydantic import ValidationError
from rich.console import Console

from lossbench.claims import STATEMENTS, combine, describe, head_and_tail
from lossbench.errors import MissingInput, ParamsError
from lossbench.experiments import (
    exp_show,
    experiment_records,
    flatten,
    json_at,
    params_of,
    queue_command,
    run_name,
    study_prefix,
)
from lossbench.figures import loss_colours
from lossbench.params import CeLoss, FocalLoss, MachineParams, Params, load_params, loss_label
from lossbench.results import (
    Field,
    checked_class_counts,
    markdown_names,
    md,
    numerics_line,
    numerics_of,
    per_seed_numbers,
    read_json,
)
from lossbench.stats import CANNOT_TELL, direction, paired_comparison, summarize
from lossbench.storage import CLASS_COUNTS_FILE, DETAILS_DIR, PLOTS_DIR, output_set

VARIANTS_REPORT = PLOTS_DIR / "variants.md"
VARIANTS_FIGURE = PLOTS_DIR / "variants.png"
IMBALANCE_TABLE = PLOTS_DIR / "imbalance.csv"
NOISE_TABLE = PLOTS_DIR / "noise.csv"
CLEAN = {"imbalance_ratio": 1.0, "label_noise": 0.0}

# Column names in the report, by the measure's key.
MEASURE_NAMES = {
    "test_acc": "test acc",
    "head_recall": "head recall",
    "tail_recall": "tail recall",
    "macro_f1": "macro-F1",
}

PerSeed = dict[str, dict[str, Any]]  # "seed1" -> that seed's numbers (metrics/details/NAME.json)
SEED_KEYS = ("final_test_acc", "macro_f1", "per_class_recall")  # what this report reads of a seed


@dataclass(frozen=True)
class Variant:
    """One finished run of the study: its data variant and each loss's per-seed numbers."""

    experiment: str
    imbalance_ratio: float
    label_noise: float
    per_seed: dict[str, PerSeed]  # loss name -> its seeds
    class_counts: dict[str, Any]
    numerics: str  # what its first loss was made under (results.numerics_of)


def _protocol(params: Params) -> Params:
    """Params with the data variant and the machine set aside: what must match."""
    return params.model_copy(
        update={"data": params.data.model_copy(update=CLEAN), "machine": MachineParams()}
    )


def _in_seed_order(per_seed: Any, seeds: list[int], where: str, classes: int | None = None) -> PerSeed:
    """A details file's per-seed numbers for exactly `seeds`, in that order
    (pairs by seed), each checked (results.per_seed_numbers)."""
    keys = [f"seed{seed}" for seed in seeds]
    if not isinstance(per_seed, dict) or any(
        not isinstance(per_seed.get(key), dict) or not set(SEED_KEYS) <= set(per_seed[key]) for key in keys
    ):
        raise MissingInput(f"{where}: no per-seed results ({', '.join(SEED_KEYS)}) for seeds {seeds}")
    checked = per_seed_numbers(Field(per_seed, where, "per_seed"), SEED_KEYS, seeds, classes)
    return {f"seed{seed}": numbers for seed, numbers in checked.items()}


@dataclass
class Found:
    """The study's finished runs of one data variant each, and what was left out, by name."""

    runs: list[Variant]
    left_out: list[str]


def variant_runs(params: Params, root: Path, records: list[dict[str, Any]]) -> Found:
    """The study's runs that follow its protocol and change only the data
    variant, each once, with every loss's results; the others are named."""
    prefix = study_prefix(root)
    found = Found([], [])
    by_variant: dict[tuple[float, float], Variant] = {}
    for record in records:
        name = run_name(record)
        try:
            run_params = Params.model_validate(params_of(record, prefix))
        except ValidationError:
            continue  # not this study's params (an older commit's format)
        variant = (run_params.data.imbalance_ratio, run_params.data.label_noise)
        if variant == tuple(CLEAN.values()):
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
        if (counts.get("imbalance_ratio"), counts.get("label_noise")) != variant:
            found.left_out.append(f"{name} (its results are not of its params: rerun it)")
            continue
        run = Variant(
            experiment=name,
            imbalance_ratio=variant[0],
            label_noise=variant[1],
            per_seed={
                loss: _in_seed_order(
                    Field(value, f"{DETAILS_DIR}/{loss}.json of {name}").child("per_seed").value,
                    params.seeds,
                    f"{DETAILS_DIR}/{loss}.json of {name}",
                    len(counts["train"]),
                )
                for loss, value in details.items()
            },
            class_counts=counts,
            numerics=numerics_of((next(iter(details.values())) or {}).get("settings")),
        )
        earlier = by_variant.setdefault(variant, run)
        if earlier is not run and earlier.per_seed != run.per_seed:
            raise MissingInput(
                f"runs {earlier.experiment} and {name} both ran imbalance {variant[0]:g}, noise {variant[1]:g} "
                "with different results (other code?); remove one (`dvc exp remove`) or leave out --all-commits"
            )
    found.runs = sorted(by_variant.values(), key=lambda run: (run.imbalance_ratio, run.label_noise))
    return found


def clean_runs(params: Params, clean_root: Path) -> dict[str, PerSeed]:
    """Each loss's clean per-seed numbers from clean_root, which must run this
    study's protocol on clean data, with this study's loss names and seeds among its own."""
    if not (clean_root / "params.yaml").is_file():
        raise ParamsError(f"--clean {clean_root}: no params.yaml there; give the clean study's folder")
    clean = load_params(clean_root / "params.yaml")
    seeds_here = params.seeds
    same_seeds = clean.model_copy(update={"train": clean.train.model_copy(update={"seeds": seeds_here})})
    here, there = (flatten(_protocol(p).model_dump(mode="json")) for p in (params, same_seeds))
    differ = sorted(
        key for key in here if key.startswith(("data.", "train.")) and here[key] != there.get(key)
    )
    if differ:
        raise ParamsError(
            f"--clean {clean_root}: {', '.join(differ)} {'differs' if len(differ) == 1 else 'differ'} from this "
            "study's; the clean run must follow the same protocol (only its seeds may differ)"
        )
    if (clean.data.imbalance_ratio, clean.data.label_noise) != tuple(CLEAN.values()):
        raise ParamsError(f"--clean {clean_root}: its data.imbalance_ratio or data.label_noise is set")
    missing_seeds = sorted(set(seeds_here) - set(clean.seeds))
    if missing_seeds:
        raise ParamsError(f"--clean {clean_root}: has no run for seed(s) {missing_seeds}")
    runs = {}
    for name, spec in params.losses.items():
        if clean.losses.get(name) != spec:
            raise ParamsError(f"--clean {clean_root}: losses.{name} is not this study's {loss_label(spec)}")
        path = clean_root / DETAILS_DIR / f"{name}.json"
        if not path.is_file():
            raise MissingInput(f"{path} is missing: run that study first")
        details = Field(read_json(path), str(path))
        classes = details.get("classes")
        runs[name] = _in_seed_order(
            details.child("per_seed").value,
            seeds_here,
            str(path),
            None if classes is None else len(classes.items()),
        )
        # The results must be of the params beside them, not left from an older run.
        recorded = details.get("settings")
        settings = {} if recorded is None or recorded.value is None else recorded.mapping()
        expected = params.train.model_dump(exclude={"device"}) | spec.model_dump()  # device: auto resolves
        stale = sorted(key for key in settings if key in expected and settings[key] != expected[key])
        if stale:
            raise MissingInput(
                f"{path}: its results were trained with other {', '.join(stale)} than its params.yaml says; "
                "rerun that study"
            )
    return runs


def _values(per_seed: PerSeed, measure: Callable[[dict[str, Any]], float]) -> list[float]:
    """One number per seed, in the study's seed order (every PerSeed is kept in it)."""
    return [measure(numbers) for numbers in per_seed.values()]


def _accuracy(numbers: dict[str, Any]) -> float:
    return float(numbers["final_test_acc"])


def _macro_f1(numbers: dict[str, Any]) -> float:
    return float(numbers["macro_f1"])


def _recall_of(classes: list[int]) -> Callable[[dict[str, Any]], float]:
    return lambda numbers: float(np.mean([numbers["per_class_recall"][c] for c in classes]))


def _mean_sd(values: list[float]) -> tuple[float, float]:
    summary = summarize(values)
    return summary["mean"], summary["std"]


def _roles(params: Params) -> tuple[str, list[str]]:
    ce = [name for name, spec in params.losses.items() if isinstance(spec, CeLoss)]
    focals = [name for name, spec in params.losses.items() if isinstance(spec, FocalLoss)]
    if len(ce) != 1 or not focals:
        raise ParamsError("losses: variants-report needs exactly one ce loss and at least one focal loss")
    return ce[0], focals


Cases = dict[str, list[str]]  # "ratio 100, Focal (γ=2)" -> the directions of its comparisons


def half_verdict(cases: Cases) -> tuple[str, str]:
    """A half of claim 5 from its cases (a variant and a focal loss each):
    supported when every case is, partly when some are and none goes the
    other way; and each case's own verdict."""
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


def imbalance_part(params: Params, runs: list[Variant]) -> tuple[pd.DataFrame, list[str], Cases, list[int]]:
    """Per ratio and loss: accuracy, head and tail recall, macro-F1; then each
    focal minus CE, paired by seed, on tail recall and macro-F1 (the verdict)
    and on accuracy."""
    ce, focals = _roles(params)
    rows, parts = [], []
    cases: Cases = {}
    tail: list[int] = []
    for run in (run for run in runs if run.imbalance_ratio > 1 and run.label_noise == 0):
        head, tail = head_and_tail(run.class_counts)
        measures = {
            "test_acc": _accuracy,
            "head_recall": _recall_of(head),
            "tail_recall": _recall_of(tail),
            "macro_f1": _macro_f1,
        }
        for name in params.losses:
            row: dict[str, Any] = {
                "imbalance_ratio": run.imbalance_ratio,
                "loss": loss_label(params.losses[name]),
                "seeds": len(run.per_seed[name]),
                "train_images": sum(run.class_counts["train"].values()),
            }
            for key, measure in measures.items():
                row[f"{key}_mean"], row[f"{key}_std"] = _mean_sd(_values(run.per_seed[name], measure))
            rows.append(row)
        for focal in focals:
            directions = cases.setdefault(
                f"ratio {run.imbalance_ratio:g}, {loss_label(params.losses[focal])}", []
            )
            for key in ("tail_recall", "macro_f1", "test_acc"):
                comparison = paired_comparison(
                    _values(run.per_seed[focal], measures[key]), _values(run.per_seed[ce], measures[key])
                )
                if key != "test_acc":
                    directions.append(direction(comparison))
                parts.append(
                    f"ratio {run.imbalance_ratio:g}, {MEASURE_NAMES[key]}, "
                    f"{loss_label(params.losses[focal])} − CE: {describe(comparison)}"
                )
    return pd.DataFrame(rows), parts, cases, tail


def noise_part(
    params: Params, runs: list[Variant], clean: dict[str, PerSeed]
) -> tuple[pd.DataFrame, list[str], Cases]:
    """Per noise level and loss: accuracy and its drop from the clean run,
    paired by seed; then CE's drop minus each focal's (positive: CE loses more)."""
    ce, focals = _roles(params)
    rows, parts = [], []
    cases: Cases = {}
    for run in (run for run in runs if run.label_noise > 0 and run.imbalance_ratio == 1):
        drops = {}
        for name in params.losses:
            before, noisy = _values(clean[name], _accuracy), _values(run.per_seed[name], _accuracy)
            drops[name] = list(np.subtract(before, noisy))
            drop = paired_comparison(before, noisy)
            noisy_mean, noisy_sd = _mean_sd(noisy)
            rows.append(
                {
                    "label_noise": run.label_noise,
                    "loss": loss_label(params.losses[name]),
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
        for focal in focals:
            comparison = paired_comparison(drops[ce], drops[focal])
            cases[f"{100 * run.label_noise:g}% noise, {loss_label(params.losses[focal])}"] = [
                direction(comparison)
            ]
            parts.append(
                f"{100 * run.label_noise:g}% noise, CE's drop − {loss_label(params.losses[focal])}'s: "
                f"{describe(comparison)}"
            )
    return pd.DataFrame(rows), parts, cases


def _along(
    runs: list[Variant], clean: dict[str, PerSeed], name: str, variable: str
) -> list[tuple[float, PerSeed]]:
    """(value, that run's seeds) for the clean run and each run that changes only `variable`."""
    other = "label_noise" if variable == "imbalance_ratio" else "imbalance_ratio"
    return [(CLEAN[variable], clean[name])] + [
        (getattr(run, variable), run.per_seed[name])
        for run in runs
        if getattr(run, other) == CLEAN[other] and getattr(run, variable) != CLEAN[variable]
    ]


def draw_variants(params: Params, runs: list[Variant], clean: dict[str, PerSeed], tail: list[int]) -> Figure:
    """Tail-class recall and macro-F1 against the imbalance ratio, accuracy
    against label noise: every seed's point and each loss's seed mean."""
    figure, axes = plt.subplots(1, 3, figsize=(14, 4))
    panels = [
        (axes[0], "imbalance_ratio", _recall_of(tail), f"tail-class recall ({len(tail)} smallest classes)"),
        (axes[1], "imbalance_ratio", _macro_f1, "macro-F1"),
        (axes[2], "label_noise", _accuracy, "test accuracy"),
    ]
    colours = loss_colours(params.losses)
    for axis, variable, measure, title in panels:
        for name in params.losses:
            points = [(x, _values(per_seed, measure)) for x, per_seed in _along(runs, clean, name, variable)]
            for x, values in points:
                axis.scatter([x] * len(values), values, s=10, color=colours[name], alpha=0.5)
            axis.plot(
                [x for x, _ in points],
                [np.mean(values) for _, values in points],
                "o-",
                color=colours[name],
                label=loss_label(params.losses[name]),
            )
        if variable == "imbalance_ratio":
            axis.set_xscale("log")
            ticks = sorted({x for name in params.losses for x, _ in _along(runs, clean, name, variable)})
            axis.set_xticks(ticks, [f"{x:g}" for x in ticks])
            axis.minorticks_off()
            axis.set_xlabel("imbalance ratio of the training set (1 = clean)")
        else:
            axis.set_xlabel("fraction of training labels flipped (0 = clean)")
        axis.set_title(title)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    return figure


def _plus_minus(table: pd.DataFrame, measure: str) -> list[str]:
    """'mean ± sd' cells of a measure's _mean and _std columns."""
    return [
        f"{mean:.4f} ± {sd:.4f}"
        for mean, sd in zip(table[f"{measure}_mean"], table[f"{measure}_std"], strict=True)
    ]


def _imbalance_markdown(table: pd.DataFrame) -> str:
    shown = markdown_names(table[["imbalance_ratio", "loss", "seeds", "train_images"]], ["loss"])
    for measure, name in MEASURE_NAMES.items():
        shown[name] = _plus_minus(table, measure)
    return shown.to_markdown(index=False)


def _noise_markdown(table: pd.DataFrame) -> str:
    shown = markdown_names(table[["label_noise", "loss", "seeds"]], ["loss"])
    shown["clean test acc"] = [f"{value:.4f}" for value in table["clean_acc_mean"]]
    shown["test acc"] = _plus_minus(table, "test_acc")
    shown["drop (points) [95% CI]"] = [
        f"{100 * mean:+.1f}" + ("" if pd.isna(low) else f" [{100 * low:+.1f}, {100 * high:+.1f}]")
        for mean, low, high in zip(
            table["drop_mean"], table["drop_ci95_low"], table["drop_ci95_high"], strict=True
        )
    ]
    shown["p (paired t)"] = ["–" if pd.isna(p) else f"{p:.3g}" for p in table["drop_p"]]
    return shown.to_markdown(index=False)


def variants_report(
    params: Params, clean_root: Path, root: Path, console: Console, all_commits: bool = False
) -> None:
    clean = clean_runs(params, clean_root)
    found = variant_runs(params, root, experiment_records(exp_show(root, all_commits)))
    runs = found.runs
    if not runs:
        raise MissingInput(
            "no finished run of this study changes only data.imbalance_ratio or data.label_noise"
            + (f" (left out: {', '.join(found.left_out)})" if found.left_out else "")
            + "; "
            + queue_command(params, root, "data.imbalance_ratio=10,100")
            + ", then wait for `dvc queue status` to show them done"
        )
    imbalance, imbalance_parts, imbalance_cases, tail = imbalance_part(params, runs)
    noise, noise_parts, noise_cases = noise_part(params, runs, clean)
    imbalance_verdict, imbalance_each = half_verdict(imbalance_cases)
    noise_verdict, noise_each = half_verdict(noise_cases)
    seeds = ", ".join(map(str, params.seeds))
    first_clean = read_json(clean_root / DETAILS_DIR / f"{next(iter(params.losses))}.json")
    numerics = numerics_line(
        {run.experiment: run.numerics for run in runs}
        | {"the clean runs": numerics_of(first_clean.get("settings"))}
    )
    if not numerics.startswith("Numerics:"):
        console.print(f"note: {numerics}", markup=False, highlight=False)
    # The clean study's folder as seen from this one's: the report is committed, an absolute path is not.
    clean_folder = os.path.relpath(os.path.abspath(clean_root), os.path.abspath(root))
    sections = [
        f"# Claim 5: {STATEMENTS[4][0]}\n",
        f"Runs: {', '.join(f'{md(r.experiment)} (imbalance {r.imbalance_ratio:g}, noise {r.label_noise:g})' for r in runs)}; "
        f"clean runs from {md(clean_folder)} (same protocol), seeds {seeds}, paired by seed. Differences: mean "
        "[95% CI], paired t-test p (Wilcoxon p; the smallest difference these seeds could detect when not significant)."
        + (f" Left out: {', '.join(md(run) for run in found.left_out)}." if found.left_out else "")
        + f" {md(numerics)}\n",
        *(["![tail recall, macro-F1 and accuracy against the variants](variants.png)\n"] if tail else []),
        "## Class imbalance (CIFAR-10-LT profile; balanced test set)\n",
        _imbalance_markdown(imbalance) if len(imbalance) else "No run.",
        "\n" + "\n".join(f"- {part}" for part in imbalance_parts) + "\n",
        f"**First half, focal helps with class imbalance (tail recall and macro-F1, focal − CE): {imbalance_verdict}.** "
        f"By case: {imbalance_each}.\n",
        "## Label noise (a fraction of training labels flipped to a random other class)\n",
        _noise_markdown(noise) if len(noise) else "No run.",
        "\n" + "\n".join(f"- {part}" for part in noise_parts) + "\n",
        f"**Second half, CE is more sensitive to label noise (CE's drop from clean − focal's): {noise_verdict}.** "
        f"By case: {noise_each}.\n",
    ]
    # Every number, text and figure is made before the first file is written; the files are one set.
    figure = draw_variants(params, runs, clean, tail) if tail else None
    try:
        with output_set() as files:
            files.write_with(
                root / IMBALANCE_TABLE, lambda path: imbalance.round(4).to_csv(path, index=False)
            )
            files.write_with(root / NOISE_TABLE, lambda path: noise.round(4).to_csv(path, index=False))
            if figure is not None:
                files.write_with(
                    root / VARIANTS_FIGURE, lambda out: figure.savefig(out, dpi=110, format="png")
                )
            files.write_text(root / VARIANTS_REPORT, "\n".join(sections))
    finally:
        if figure is not None:
            plt.close(figure)
    console.print("\n".join(sections), markup=False, highlight=False)
    console.print(
        f"[bold]variants-report[/]: claim 5 imbalance half {imbalance_verdict}, noise half {noise_verdict}; wrote "
        f"{VARIANTS_REPORT}, {IMBALANCE_TABLE}, {NOISE_TABLE}" + (f" and {VARIANTS_FIGURE}" if tail else "")
    )
