"""Stage report: compare the losses seed by seed, draw the study's figures, test its claims.

Reads every loss's run files (data/runs/NAME; publish@NAME copies them to
metrics/ and plots/ for git). Writes the 2x2 curve figure (seed mean with a min-max band), a final accuracy chart, reliability
diagrams, the overlay table for `dvc plots show`, metrics/summary.json and
plots/report.md. Labels come from the live params, so a new gamma renames the
legend.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on CI or servers
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from rich.console import Console

from lossbench.errors import MissingInput
from lossbench.evaluation import CONVERGENCE_TOLERANCE, PLATEAU_TOLERANCE
from lossbench.params import CeLoss, FocalLoss, LossParams, MaeLoss, Params, loss_label
from lossbench.publish import published_copies
from lossbench.stats import direction, paired_comparison
from lossbench.storage import (
    CLASS_COUNTS_FILE,
    METRICS_DIR,
    PLOTS_DIR,
    RunFiles,
    write_json,
    write_text,
    write_with,
)

CURVES_FIGURE = PLOTS_DIR / "curves.png"
ACCURACY_FIGURE = PLOTS_DIR / "final_accuracy.png"
RELIABILITY_FIGURE = PLOTS_DIR / "reliability.png"
CURVES_TABLE = PLOTS_DIR / "curves.csv"
SIGNIFICANCE_TABLE = PLOTS_DIR / "significance.csv"
REPORT_FILE = PLOTS_DIR / "report.md"
SUMMARY_FILE = METRICS_DIR / "summary.json"

CURVE_COLUMNS = ("train_loss", "test_loss", "train_acc", "test_acc")
# Claim 2's "around epoch 25": each loss's mean convergence epoch within this many epochs of 25.
AROUND_EPOCH_25 = 5
# Claim 3: "barely changes its loss" = the training loss falls by at most this
# fraction from epoch 1 to the end; "near 0.4 accuracy" = within this of 0.4.
BARELY_CHANGES = 0.10
NEAR_04 = 0.10
# Head and tail classes of a long-tailed training set: this many largest and smallest.
HEAD_TAIL_CLASSES = 3


@dataclass(frozen=True)
class LossResult:
    name: str
    label: str
    spec: LossParams
    metrics: dict[str, Any]
    history: pd.DataFrame  # one row per seed and epoch
    calibration: pd.DataFrame  # one row per seed and confidence bin

    def per_seed(self, key: str) -> list[float]:
        return [float(values[key]) for values in self.metrics["per_seed"].values()]

    def mean(self, key: str) -> float:
        return float(self.metrics[key]["mean"])


def load_results(params: Params, root: Path) -> list[LossResult]:
    results = []
    for name, spec in params.losses.items():
        run = RunFiles.of(root, name)
        paths = [run.metrics, run.history, run.calibration, run.confusion]
        for path in paths:
            if not path.is_file():
                raise MissingInput(f"{path} is missing: run `dvc repro train@{name}` first")
        metrics = json.loads(paths[0].read_text())
        if metrics.get("seeds") != params.train.seeds:
            raise MissingInput(
                f"{paths[0]} holds seeds {metrics.get('seeds')}, params.yaml asks for {params.train.seeds}: "
                f"run `dvc repro train@{name}` first"
            )
        results.append(
            LossResult(name, loss_label(spec), spec, metrics, pd.read_csv(paths[1]), pd.read_csv(paths[2]))
        )
    return results


def foreign_files(params: Params, root: Path) -> list[Path]:
    """Files in the folders publish@NAME writes to that no current loss owns:
    left from a loss removed from params.yaml, or put there by hand. Never
    deleted here; the report names them."""
    owned = {target for name in params.losses for target in published_copies(root, name).values()}
    owned.add(root / SUMMARY_FILE)
    folders = {target.parent for target in owned}
    return sorted(
        path for folder in folders if folder.is_dir() for path in folder.iterdir() if path not in owned
    )


def points(value: float) -> str:
    return f"{100 * value:.1f}"


def describe(comparison: dict[str, Any], scale: float = 100.0, unit: str = " points") -> str:
    """'+1.2 points [−0.3, +2.7], p=0.08' for a paired comparison."""
    text = f"{scale * comparison['mean_difference']:+.1f}{unit}"
    if comparison["ci95_low"] is not None:
        text += f" [{scale * comparison['ci95_low']:+.1f}, {scale * comparison['ci95_high']:+.1f}]"
    if comparison["p_value"] is not None:
        text += f", p={comparison['p_value']:.3g}"
    return text


# --- figures -----------------------------------------------------------------------


def seed_mean_curves(result: LossResult) -> pd.DataFrame:
    grouped = result.history.groupby("epoch")
    means = grouped[["lr", *CURVE_COLUMNS]].mean()
    spread = grouped[list(CURVE_COLUMNS)].agg(["min", "max"])
    spread.columns = ["_".join(map(str, pair)) for pair in spread.columns.to_flat_index()]
    return means.join(spread).reset_index()


def draw_curves(results: list[LossResult], curves: dict[str, pd.DataFrame], path: Path, seeds: int) -> None:
    panels = [
        ("train_loss", "Train loss"),
        ("test_loss", "Test loss"),
        ("train_acc", "Train accuracy"),
        ("test_acc", "Test accuracy"),
    ]
    figure, axes = plt.subplots(2, 2, figsize=(11, 8), sharex=True)
    for axis, (column, title) in zip(axes.flat, panels, strict=True):
        for result in results:
            table = curves[result.name]
            (line,) = axis.plot(table["epoch"], table[column], label=result.label)
            if seeds > 1:
                axis.fill_between(
                    table["epoch"],
                    table[f"{column}_min"],
                    table[f"{column}_max"],
                    color=line.get_color(),
                    alpha=0.2,
                )
        axis.set_title(title)
        axis.grid(alpha=0.3)
    for axis in axes[1]:
        axis.set_xlabel("epoch")
    axes[0, 0].legend()
    if seeds > 1:
        figure.suptitle(f"Mean of {seeds} seeds; bands span the lowest to the highest seed")
    figure.tight_layout()
    write_with(path, lambda out: figure.savefig(out, dpi=110, format="png"))
    plt.close(figure)


def _interval(result: LossResult, key: str) -> tuple[float, float]:
    summary = result.metrics[key]
    if summary["ci95_low"] is None:
        return 0.0, 0.0
    return summary["mean"] - summary["ci95_low"], summary["ci95_high"] - summary["mean"]


def draw_final_accuracy(results: list[LossResult], path: Path) -> None:
    figure, axis = plt.subplots(figsize=(8, 4.5))
    positions = np.arange(len(results))
    width = 0.38
    for offset, key, name in (
        (-width / 2, "final_train_acc", "train"),
        (width / 2, "final_test_acc", "test"),
    ):
        errors = np.array([_interval(r, key) for r in results]).T
        bars = axis.bar(
            positions + offset, [r.mean(key) for r in results], width, yerr=errors, capsize=3, label=name
        )
        axis.bar_label(bars, fmt="%.3f", fontsize=8, padding=2)
    axis.set_xticks(list(positions), [r.label for r in results])
    axis.set_ylabel("final accuracy (seed mean, 95% CI)")
    axis.set_ylim(0, 1)
    axis.set_title("Final accuracy per loss")
    axis.legend()
    figure.tight_layout()
    write_with(path, lambda out: figure.savefig(out, dpi=110, format="png"))
    plt.close(figure)


def pooled_reliability(result: LossResult) -> pd.DataFrame:
    """Reliability bins pooled over seeds (count-weighted)."""
    table = result.calibration.dropna(subset=["confidence"])
    weighted = table.assign(
        confidence=table["confidence"] * table["count"], accuracy=table["accuracy"] * table["count"]
    )
    pooled = (
        weighted.groupby(["bin", "lower", "upper"])[["count", "confidence", "accuracy"]].sum().reset_index()
    )
    pooled["confidence"] /= pooled["count"]
    pooled["accuracy"] /= pooled["count"]
    return pooled


def draw_reliability(results: list[LossResult], path: Path) -> None:
    columns = min(4, len(results))
    rows = -(-len(results) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.3 * columns, 3.4 * rows), squeeze=False)
    for axis, result in zip(axes.flat, results, strict=False):
        pooled = pooled_reliability(result)
        axis.bar(
            pooled["lower"],
            pooled["accuracy"],
            width=pooled["upper"] - pooled["lower"],
            align="edge",
            alpha=0.7,
            edgecolor="black",
            linewidth=0.5,
            label="accuracy",
        )
        axis.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
        axis.plot(pooled["confidence"], pooled["accuracy"], "o", color="black", markersize=3)
        axis.set_title(f"{result.label}\nECE {result.mean('ece'):.3f}", fontsize=9)
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1)
        axis.set_xlabel("confidence (top-class probability)")
    for axis in axes.flat[len(results) :]:
        axis.set_axis_off()
    axes[0, 0].set_ylabel("accuracy")
    figure.tight_layout()
    write_with(path, lambda out: figure.savefig(out, dpi=100, format="png"))
    plt.close(figure)


# --- the study's claims -----------------------------------------------------------------

Verdict = tuple[str, str]


def _find_focal(results: list[LossResult], gamma: float) -> LossResult | None:
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
    significantly the other way: opposite; otherwise: not significant."""
    opposite = "lower" if wanted == "higher" else "higher"
    if directions and all(d == wanted for d in directions):
        return "supported (significant)"
    if any(d == opposite for d in directions):
        return "opposite (significant)"
    return "not significant"


def claim_best_focal(results: list[LossResult]) -> Verdict:
    focal = _find_focal(results, 0.5)
    others = [r for r in results if r is not focal]
    if focal is None or not others:
        return (
            "not testable",
            "This run has no focal loss with γ=0.5 (and no α), or nothing to compare it with.",
        )
    directions, parts = [], []
    for key, what in (("final_test_acc", "test"), ("final_train_acc", "train")):
        for other in others:
            comparison = paired_comparison(focal.per_seed(key), other.per_seed(key))
            directions.append(direction(comparison))
            parts.append(f"{what} vs {other.label}: {describe(comparison)}")
    return combine(directions, "higher"), (
        f"{focal.label} ends at {points(focal.mean('final_test_acc'))}% test and "
        f"{points(focal.mean('final_train_acc'))}% train accuracy (seed means). Paired differences "
        f"(focal minus other, mean [95% CI], paired t-test): {'; '.join(parts)}."
    )


def claim_same_speed(results: list[LossResult]) -> Verdict:
    group = [r for r in results if isinstance(r.spec, CeLoss)]
    group += [f for f in (_find_focal(results, 0.5), _find_focal(results, 2.0)) if f is not None]
    if len(group) < 2:
        return (
            "not testable",
            "Claim 2 needs CE and the focal losses with γ=0.5 and γ=2; this run lacks them.",
        )
    means = ", ".join(f"{r.label} {r.mean('convergence_epoch'):.1f}" for r in group)
    parts, directions = [], []
    for first, second in combinations(group, 2):
        comparison = paired_comparison(
            first.per_seed("convergence_epoch"), second.per_seed("convergence_epoch")
        )
        directions.append(direction(comparison))
        parts.append(f"{first.label} − {second.label}: {describe(comparison, 1.0, ' epochs')}")
    differ = any(d != "no significant difference" for d in directions)
    near_25 = all(abs(r.mean("convergence_epoch") - 25) <= AROUND_EPOCH_25 for r in group)
    if differ:
        verdict = "not supported (significant difference)"
    elif near_25:
        verdict = "supported (no significant difference)"
    else:
        verdict = "not supported (not around epoch 25)"
    return verdict, (
        f"Mean convergence epochs: {means}. Paired differences: {'; '.join(parts)}. "
        f"{'All' if near_25 else 'Not all'} means lie within {AROUND_EPOCH_25} epochs of epoch 25. "
        "No significant difference is not proof of equal speed, only an absence of evidence against it."
    )


def claim_mae_flat(results: list[LossResult]) -> Verdict:
    mae = next((r for r in results if isinstance(r.spec, MaeLoss)), None)
    if mae is None:
        return "not testable", "This run has no MAE/L1 loss, so claim 3 cannot be checked."
    by_seed = mae.history.sort_values("epoch").groupby("seed")["train_loss"]
    change = float(((by_seed.first() - by_seed.last()) / by_seed.first()).mean())
    accuracy = mae.mean("final_test_acc")
    flat, near = abs(change) <= BARELY_CHANGES, abs(accuracy - 0.4) <= NEAR_04
    verdict = "supported" if flat and near else ("partly supported" if flat or near else "not supported")
    return verdict, (
        f"{mae.label}: the training loss fell by {100 * change:.1f}% from epoch 1 to the end on average "
        f"(we call ≤{100 * BARELY_CHANGES:.0f}% 'barely changes'); final test accuracy "
        f"{points(accuracy)}% (claim: about 40%, we allow ±{points(NEAR_04)} points). The MAE gradient "
        "through the softmax vanishes for confidently wrong predictions, which is why it learns slowly; "
        "the 0.4 figure is CIFAR-10's and need not carry over to other data."
    )


def claim_gamma_range(results: list[LossResult]) -> Verdict:
    by_gamma: dict[float, LossResult] = {}  # CE is focal with γ=0
    for r in results:
        if isinstance(r.spec, CeLoss):
            by_gamma.setdefault(0.0, r)
        elif isinstance(r.spec, FocalLoss) and r.spec.alpha is None:
            by_gamma.setdefault(r.spec.gamma, r)
    inside = [g for g in by_gamma if 0.5 <= g <= 2]
    outside = [g for g in by_gamma if not 0.5 <= g <= 2]
    if not inside or not outside:
        return "not testable", "Claim 4 needs a γ inside [0.5, 2] and one outside it (CE counts as γ=0)."
    listing = ", ".join(f"γ={g:g}: {points(by_gamma[g].mean('final_test_acc'))}%" for g in sorted(by_gamma))
    best_in = max((by_gamma[g] for g in inside), key=lambda r: r.mean("final_test_acc"))
    best_out = max((by_gamma[g] for g in outside), key=lambda r: r.mean("final_test_acc"))
    comparison = paired_comparison(best_in.per_seed("final_test_acc"), best_out.per_seed("final_test_acc"))
    note = (
        ""
        if any(0.5 < g < 2 for g in by_gamma)
        else " No γ strictly between 0.5 and 2 was trained here; the γ sweep (README) tests inside the range."
    )
    return combine([direction(comparison)], "higher"), (
        f"Final test accuracy by γ (seed means): {listing}. Best inside [0.5, 2] ({best_in.label}) minus "
        f"best outside ({best_out.label}): {describe(comparison)}.{note}"
    )


def head_and_tail(class_counts: dict[str, Any]) -> tuple[list[int], list[int]]:
    counts = list(class_counts["train"].values())
    order = sorted(range(len(counts)), key=lambda c: counts[c], reverse=True)
    size = min(HEAD_TAIL_CLASSES, len(counts) // 2)
    return order[:size], order[-size:]


def claim_imbalance_noise(results: list[LossResult], class_counts: dict[str, Any]) -> Verdict:
    ce = next((r for r in results if isinstance(r.spec, CeLoss)), None)
    focals = [r for r in results if isinstance(r.spec, FocalLoss)]
    imbalanced = class_counts.get("imbalance_ratio", 1.0) > 1
    noisy = class_counts.get("label_noise", 0.0) > 0
    if not (imbalanced or noisy) or ce is None or not focals:
        counts = list(class_counts["train"].values())
        return "not testable", (
            f"This run's training set has a largest/smallest class ratio of {max(counts) / max(1, min(counts)):.2f} "
            "and clean labels (or lacks CE or a focal loss), so it carries no evidence about class imbalance "
            "or label noise. Set data.imbalance_ratio or data.label_noise (README) to test claim 5."
        )
    directions, parts = [], []
    if imbalanced:
        _, tail = head_and_tail(class_counts)

        def tail_recall(result: LossResult) -> list[float]:
            return [
                float(np.mean([s["per_class_recall"][c] for c in tail]))
                for s in result.metrics["per_seed"].values()
            ]

        for focal in focals:
            comparison = paired_comparison(tail_recall(focal), tail_recall(ce))
            directions.append(direction(comparison))
            parts.append(f"tail-class recall, {focal.label} − CE: {describe(comparison)}")
    if noisy:
        for focal in focals:
            comparison = paired_comparison(focal.per_seed("final_test_acc"), ce.per_seed("final_test_acc"))
            directions.append(direction(comparison))
            parts.append(
                f"test accuracy under {points(class_counts['label_noise'])}% label noise, {focal.label} − CE: {describe(comparison)}"
            )
    return combine(directions, "higher"), (
        "Focal should beat CE on the minority classes of a long-tailed set, and CE should lose more to "
        f"noisy labels. Paired differences: {'; '.join(parts)}. (Sensitivity to noise proper is the drop "
        "from a clean run, which `dvc metrics diff` against the clean commit shows.)"
    )


# --- report -------------------------------------------------------------------------------


def _cell(result: LossResult, key: str, digits: int = 4) -> str:
    summary = result.metrics[key]
    text = f"{summary['mean']:.{digits}f} ± {summary['std']:.{digits}f}"
    if summary["ci95_low"] is not None:
        text += f" [{summary['ci95_low']:.{digits}f}, {summary['ci95_high']:.{digits}f}]"
    return text


def results_table(results: list[LossResult], ranking: list[str]) -> pd.DataFrame:
    rows = []
    for r in results:
        final_wall = r.history.groupby("seed")["wall_time_s"].last().mean()
        rows.append(
            {
                "rank": ranking.index(r.name) + 1,
                "loss": r.label,
                "stage": f"train@{r.name}",
                "final test acc": _cell(r, "final_test_acc"),
                "final train acc": _cell(r, "final_train_acc", 3),
                "macro-F1": f"{r.mean('macro_f1'):.3f}",
                "ECE": f"{r.mean('ece'):.3f}",
                "NLL": f"{r.mean('nll'):.3f}",
                "Brier": f"{r.mean('brier'):.3f}",
                "converged (epoch)": f"{r.mean('convergence_epoch'):.1f}",
                "plateau (epoch)": f"{r.mean('plateau_epoch'):.1f}",
                "wall time per seed (s)": f"{final_wall:.1f}",
            }
        )
    return pd.DataFrame(rows).sort_values("rank")


def significance_table(results: list[LossResult]) -> pd.DataFrame:
    rows = []
    for first, second in combinations(results, 2):
        comparison = paired_comparison(first.per_seed("final_test_acc"), second.per_seed("final_test_acc"))
        verdict = direction(comparison)
        rows.append(
            {
                "first": first.label,
                "second": second.label,
                "mean difference (points)": round(100 * comparison["mean_difference"], 2),
                "95% CI low": None
                if comparison["ci95_low"] is None
                else round(100 * comparison["ci95_low"], 2),
                "95% CI high": None
                if comparison["ci95_high"] is None
                else round(100 * comparison["ci95_high"], 2),
                "p (paired t)": None if comparison["p_value"] is None else round(comparison["p_value"], 4),
                "verdict": f"{first.label} {verdict}" if verdict != "no significant difference" else verdict,
            }
        )
    return pd.DataFrame(rows)


def recall_table(results: list[LossResult], classes: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"loss": r.label} | {c: f"{r.metrics['per_class_recall'][c]:.3f}" for c in classes} for r in results]
    )


def report(params: Params, root: Path, console: Console) -> dict[str, Any]:
    results = load_results(params, root)
    counts_path = root / CLASS_COUNTS_FILE
    if not counts_path.is_file():
        raise MissingInput(f"{counts_path} is missing: run `dvc repro prepare` first")
    class_counts = json.loads(counts_path.read_text())
    classes = list(class_counts["train"])
    seeds = params.train.seeds
    ranking = [r.name for r in sorted(results, key=lambda r: r.mean("final_test_acc"), reverse=True)]

    curves = {r.name: seed_mean_curves(r) for r in results}
    draw_curves(results, curves, root / CURVES_FIGURE, len(seeds))
    draw_final_accuracy(results, root / ACCURACY_FIGURE)
    draw_reliability(results, root / RELIABILITY_FIGURE)
    overlay = pd.concat(
        [curves[r.name][["epoch", "lr", *CURVE_COLUMNS]].assign(loss=r.label) for r in results],
        ignore_index=True,
    )
    write_with(root / CURVES_TABLE, lambda path: overlay.to_csv(path, index=False))
    significance = significance_table(results)
    write_with(root / SIGNIFICANCE_TABLE, lambda path: significance.to_csv(path, index=False))

    claims = [
        ("1. Focal γ=0.5 reaches the highest train and test accuracy.", claim_best_focal(results)),
        (
            "2. CE, Focal γ=0.5 and Focal γ=2 converge at about the same speed, around epoch 25.",
            claim_same_speed(results),
        ),
        ("3. L1 barely changes its loss and stays near 0.4 accuracy.", claim_mae_flat(results)),
        ("4. A γ between 0.5 and 2 is best; larger γ is not better.", claim_gamma_range(results)),
        (
            "5. Focal loss helps with class imbalance; CE is sensitive to label noise.",
            claim_imbalance_noise(results, class_counts),
        ),
    ]
    summary = {
        "best_loss": ranking[0],
        "rank": {name: ranking.index(name) + 1 for name in params.losses},
        "claims": {str(i): verdict for i, (_, (verdict, _)) in enumerate(claims, 1)},
    }
    write_json(root / SUMMARY_FILE, summary)

    settings = results[0].metrics["settings"]
    n_train, n_test = int(results[0].metrics["train_samples"]), int(results[0].metrics["test_samples"])
    variants = []
    if class_counts.get("imbalance_ratio", 1.0) > 1:
        variants.append(f"long-tailed training set (imbalance ratio {class_counts['imbalance_ratio']:g})")
    if class_counts.get("label_noise", 0.0) > 0:
        variants.append(f"{points(class_counts['label_noise'])}% of training labels flipped")
    lines = [
        "# Which loss? Results of this run",
        "",
        f"Dataset **{class_counts['dataset']}**{' — ' + ', '.join(variants) if variants else ''}: "
        f"{n_train} training and {n_test} test images. Protocol: {settings['epochs']} epochs, batch "
        f"{settings['batch_size']}, SGD lr {settings['lr']:g} momentum {settings['momentum']:g}, lr × "
        f"{settings['lr_decay_factor']:g} every {settings['lr_step_epochs']} epochs. Every loss trained with "
        f"seeds {', '.join(map(str, seeds))} (the same initial weights, batch order and augmentation per seed). "
        "Ranked by mean final test accuracy; cells are mean ± std [95% CI of the mean].",
        "",
        results_table(results, ranking).to_markdown(index=False),
        "",
        f"![Loss and accuracy per epoch]({CURVES_FIGURE.name})",
        "",
        f"![Final accuracy per loss]({ACCURACY_FIGURE.name})",
        "",
        "## Which differences are real?",
        "",
        "Every pair of losses on final test accuracy, seed by seed: mean difference (first minus second) in "
        "percentage points, its 95% t interval, and the paired t-test. "
        + (
            "With one seed no test is possible."
            if len(seeds) < 2
            else f"With {len(seeds)} seeds only large, consistent gaps reach p < 0.05."
        ),
        "",
        significance.to_markdown(index=False),
        "",
        "## Per-class recall (seed mean)",
        "",
        recall_table(results, classes).to_markdown(index=False),
        "",
    ]
    if class_counts.get("imbalance_ratio", 1.0) > 1:
        head, tail = head_and_tail(class_counts)
        rows = [
            {
                "loss": r.label,
                "head recall": f"{np.mean([r.metrics['per_class_recall'][classes[c]] for c in head]):.3f}",
                "tail recall": f"{np.mean([r.metrics['per_class_recall'][classes[c]] for c in tail]):.3f}",
            }
            for r in results
        ]
        lines += [
            f"Head classes ({', '.join(classes[c] for c in head)}) have the most training images, tail classes "
            f"({', '.join(classes[c] for c in tail)}) the fewest; the test set is balanced.",
            "",
            pd.DataFrame(rows).to_markdown(index=False),
            "",
        ]
    lines += [
        "## Calibration",
        "",
        "ECE: 15 equal-width bins of the top-class probability; the share of test images in each bin times "
        "|accuracy − mean confidence|, summed. NLL: mean −log p(true class). Brier: mean squared distance "
        "between the probability vector and the one-hot label. Reliability diagrams pool all seeds.",
        "",
        f"![Reliability diagrams]({RELIABILITY_FIGURE.name})",
        "",
        "## The study's claims, measured",
        "",
        f"Definitions: a run *converges* at the first epoch whose test accuracy is within "
        f"{points(CONVERGENCE_TOLERANCE)} points of its best; its loss *plateaus* at the first epoch after which "
        f"the training loss never falls more than {100 * PLATEAU_TOLERANCE:.0f}% below that epoch's value. "
        "Verdicts: *supported (significant)* — every comparison goes the claimed way at p < 0.05; "
        "*opposite (significant)* — at least one goes the other way at p < 0.05; *not significant* — neither.",
        "",
    ]
    for title, (verdict, text) in claims:
        lines += [f"**{title}** — *{verdict}*. {text}", ""]
    write_text(root / REPORT_FILE, "\n".join(lines))

    for path in foreign_files(params, root):
        console.print(
            f"  note: {path.relative_to(root)} is not written by this pipeline (no such loss in params.yaml); "
            "left as it is"
        )
    console.print(f"[bold]report[/]: ranking by mean final test accuracy: {' > '.join(ranking)}")
    for title, (verdict, _) in claims:
        console.print(f"  claim {title.split('.')[0]}: {verdict}")
    console.print(
        f"  wrote {REPORT_FILE}, {CURVES_FIGURE}, {ACCURACY_FIGURE}, {RELIABILITY_FIGURE}, {SUMMARY_FILE}"
    )
    return summary
