"""Stage report: compare the losses, draw the study's figures, and test its claims.

Reads every loss's metrics and history, writes the 2x2 curve figure, a final
accuracy chart, the overlay table for `dvc plots show`, metrics/summary.json
and plots/report.md. Labels come from the live params, so a new gamma renames
the legend.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on CI or servers
import matplotlib.pyplot as plt
import pandas as pd
from rich.console import Console

from lossbench.errors import MissingInput
from lossbench.params import CeLoss, FocalLoss, MaeLoss, Params, loss_label
from lossbench.storage import (
    CLASS_COUNTS_FILE,
    HISTORY_DIR,
    METRICS_DIR,
    PLOTS_DIR,
    write_json,
    write_text,
    write_with,
)
from lossbench.train import CONVERGENCE_TOLERANCE

CURVES_FIGURE = PLOTS_DIR / "curves.png"
ACCURACY_FIGURE = PLOTS_DIR / "final_accuracy.png"
CURVES_TABLE = PLOTS_DIR / "curves.csv"
REPORT_FILE = PLOTS_DIR / "report.md"
SUMMARY_FILE = METRICS_DIR / "summary.json"

# Claim 2 reads "about the same speed, around epoch 25": we call convergence
# epochs "about the same" when they span at most this many epochs, and
# "around epoch 25" when each lies within this many epochs of 25.
SAME_SPEED_SPREAD = 3
AROUND_EPOCH_25 = 5
# Claim 3, "barely changes its loss": the final training loss is within this
# fraction of the first epoch's, and "near 0.4 accuracy" is within 0.1 of it.
BARELY_CHANGES = 0.10
NEAR_04 = 0.10


@dataclass(frozen=True)
class LossResult:
    name: str
    label: str
    spec: Any
    metrics: dict[str, Any]
    history: pd.DataFrame

    @property
    def test_acc(self) -> float:
        return float(self.metrics["final_test_acc"])

    @property
    def train_acc(self) -> float:
        return float(self.metrics["final_train_acc"])


def load_results(params: Params, root: Path) -> list[LossResult]:
    results = []
    for name, spec in params.losses.items():
        metrics_path = root / METRICS_DIR / f"{name}.json"
        history_path = root / HISTORY_DIR / f"{name}.csv"
        for path in (metrics_path, history_path):
            if not path.is_file():
                raise MissingInput(f"{path} is missing: run `dvc repro train@{name}` first")
        results.append(
            LossResult(
                name=name,
                label=loss_label(spec),
                spec=spec,
                metrics=json.loads(metrics_path.read_text()),
                history=pd.read_csv(history_path),
            )
        )
    return results


def sampling_margin(accuracy: float, n: int) -> float:
    """Half-width of the 95% interval of an accuracy measured on n test images."""
    return 1.96 * math.sqrt(accuracy * (1 - accuracy) / n)


def gap_margin(first: LossResult, second: LossResult) -> float:
    """Half-width of the 95% interval of a difference of two test accuracies,
    from test-set sampling alone (treating the two as independent)."""
    n = int(first.metrics["test_samples"])
    return math.hypot(sampling_margin(first.test_acc, n), sampling_margin(second.test_acc, n))


def within_noise(verdict: str, gap: float, margin: float) -> str:
    return f"{verdict}, within test-set noise" if abs(gap) < margin else verdict


def points(value: float) -> str:
    return f"{100 * value:.1f}"


# --- figures -----------------------------------------------------------------


def draw_curves(results: list[LossResult], path: Path) -> None:
    panels = [
        ("train_loss", "Train loss"),
        ("test_loss", "Test loss"),
        ("train_acc", "Train accuracy"),
        ("test_acc", "Test accuracy"),
    ]
    figure, axes = plt.subplots(2, 2, figsize=(11, 8), sharex=True)
    for axis, (column, title) in zip(axes.flat, panels, strict=True):
        for result in results:
            axis.plot(result.history["epoch"], result.history[column], label=result.label)
        axis.set_title(title)
        axis.grid(alpha=0.3)
    for axis in axes[1]:
        axis.set_xlabel("epoch")
    axes[0, 0].legend()
    figure.tight_layout()
    write_with(path, lambda out: figure.savefig(out, dpi=110, format="png"))
    plt.close(figure)


def draw_final_accuracy(results: list[LossResult], path: Path) -> None:
    figure, axis = plt.subplots(figsize=(8, 4.5))
    positions = range(len(results))
    width = 0.38
    train_bars = axis.bar(
        [p - width / 2 for p in positions], [r.train_acc for r in results], width, label="train"
    )
    test_bars = axis.bar(
        [p + width / 2 for p in positions], [r.test_acc for r in results], width, label="test"
    )
    axis.bar_label(train_bars, fmt="%.3f", fontsize=8)
    axis.bar_label(test_bars, fmt="%.3f", fontsize=8)
    axis.set_xticks(list(positions), [r.label for r in results])
    axis.set_ylabel("final accuracy")
    axis.set_ylim(0, 1)
    axis.set_title("Final accuracy per loss")
    axis.legend()
    figure.tight_layout()
    write_with(path, lambda out: figure.savefig(out, dpi=110, format="png"))
    plt.close(figure)


# --- the study's claims ---------------------------------------------------------


def _find_focal(results: list[LossResult], gamma: float) -> LossResult | None:
    return next(
        (
            r
            for r in results
            if isinstance(r.spec, FocalLoss) and r.spec.gamma == gamma and r.spec.alpha is None
        ),
        None,
    )


def claim_best_focal(results: list[LossResult]) -> tuple[str, str]:
    focal = _find_focal(results, 0.5)
    if focal is None:
        return (
            "not testable",
            "This run has no focal loss with γ=0.5 (and no α), so claim 1 cannot be checked.",
        )
    best_test = max(results, key=lambda r: r.test_acc)
    best_train = max(results, key=lambda r: r.train_acc)
    runner_up = max((r for r in results if r is not focal), key=lambda r: r.test_acc, default=None)
    supported = best_test is focal and best_train is focal
    verdict = "supported" if supported else "not supported"
    text = (
        f"{focal.label} ends at {points(focal.test_acc)}% test and {points(focal.train_acc)}% train accuracy. "
        f"Highest test accuracy: {best_test.label} ({points(best_test.test_acc)}%); "
        f"highest train accuracy: {best_train.label} ({points(best_train.train_acc)}%)."
    )
    if runner_up is not None:
        gap = focal.test_acc - runner_up.test_acc
        margin = gap_margin(focal, runner_up)
        verdict = within_noise(verdict, gap, margin)
        text += (
            f" Its test-accuracy lead over the best other loss ({runner_up.label}) is {100 * gap:+.1f} points; "
            f"test-set sampling alone makes such a gap uncertain by ±{points(margin)} points (95%), "
            "before any seed-to-seed variation."
        )
    return verdict, text


def claim_same_speed(results: list[LossResult]) -> tuple[str, str]:
    group = [r for r in results if isinstance(r.spec, CeLoss)]
    group += [f for f in (_find_focal(results, 0.5), _find_focal(results, 2.0)) if f is not None]
    if len(group) < 2:
        return (
            "not testable",
            "Claim 2 needs CE and the focal losses with γ=0.5 and γ=2; this run lacks them.",
        )
    epochs = {r.label: int(r.metrics["convergence_epoch"]) for r in group}
    spread = max(epochs.values()) - min(epochs.values())
    near_25 = all(abs(e - 25) <= AROUND_EPOCH_25 for e in epochs.values())
    verdict = "supported" if spread <= SAME_SPEED_SPREAD and near_25 else "not supported"
    listing = ", ".join(f"{label} at epoch {e}" for label, e in epochs.items())
    return verdict, (
        f"Convergence epochs (first epoch within {points(CONVERGENCE_TOLERANCE)} points of the run's best "
        f"test accuracy): {listing}. Spread {spread} epochs (we call ≤{SAME_SPEED_SPREAD} 'about the same'); "
        f"{'all' if near_25 else 'not all'} within {AROUND_EPOCH_25} epochs of epoch 25."
    )


def claim_mae_flat(results: list[LossResult]) -> tuple[str, str]:
    maes = [r for r in results if isinstance(r.spec, MaeLoss)]
    if not maes:
        return "not testable", "This run has no MAE/L1 loss, so claim 3 cannot be checked."
    mae = maes[0]
    first, last = float(mae.history["train_loss"].iloc[0]), float(mae.history["train_loss"].iloc[-1])
    change = (first - last) / first if first else 0.0
    flat = abs(change) <= BARELY_CHANGES
    near = abs(mae.test_acc - 0.4) <= NEAR_04
    verdict = "supported" if flat and near else ("partly supported" if flat or near else "not supported")
    return verdict, (
        f"{mae.label}: training loss went from {first:.4f} (epoch 1) to {last:.4f} "
        f"({100 * change:.1f}% lower; we call ≤{100 * BARELY_CHANGES:.0f}% 'barely changes'), "
        f"final test accuracy {points(mae.test_acc)}% (claim: about 40%, we allow ±{points(NEAR_04)} points). "
        "The MAE gradient through the softmax vanishes for confidently wrong predictions, which is why it "
        "learns slowly; the 0.4 figure is CIFAR-10's and need not carry over to other data."
    )


def claim_gamma_range(results: list[LossResult]) -> tuple[str, str]:
    # CE is focal with γ=0, so it joins the γ axis.
    by_gamma: dict[float, LossResult] = {}
    for r in results:
        if isinstance(r.spec, CeLoss):
            by_gamma.setdefault(0.0, r)
        elif isinstance(r.spec, FocalLoss) and r.spec.alpha is None:
            by_gamma.setdefault(r.spec.gamma, r)
    if len(by_gamma) < 2:
        return "not testable", "Claim 4 needs at least two values of γ (CE counts as γ=0)."
    gammas = sorted(by_gamma)
    best_gamma = max(gammas, key=lambda g: by_gamma[g].test_acc)
    listing = ", ".join(f"γ={g:g}: {points(by_gamma[g].test_acc)}%" for g in gammas)
    larger_not_better = best_gamma != gammas[-1]
    in_range = 0.5 <= best_gamma <= 2
    verdict = "supported" if larger_not_better and in_range else "not supported"
    # How sure is "best inside [0.5, 2]" (or not)? The gap between the best γ
    # inside that range and the best outside it.
    inside_range = [by_gamma[g] for g in gammas if 0.5 <= g <= 2]
    outside_range = [by_gamma[g] for g in gammas if not 0.5 <= g <= 2]
    if inside_range and outside_range:
        best_in = max(inside_range, key=lambda r: r.test_acc)
        best_out = max(outside_range, key=lambda r: r.test_acc)
        verdict = within_noise(verdict, best_in.test_acc - best_out.test_acc, gap_margin(best_in, best_out))
    inside = [g for g in gammas if 0.5 < g < 2]
    return verdict, (
        f"Final test accuracy by γ: {listing}. Best γ = {best_gamma:g}; the largest γ tried "
        f"({gammas[-1]:g}) is {'not ' if larger_not_better else ''}the best. "
        + (
            ""
            if inside
            else "No γ strictly between 0.5 and 2 was trained, so 'between 0.5 and 2 is best' is only "
            "checked at the ends of that range; add a loss with γ=1 (or run the γ sweep) to test inside it."
        )
    )


def claim_imbalance_noise(class_counts: dict[str, Any]) -> tuple[str, str]:
    train_counts = list(class_counts["train"].values())
    ratio = max(train_counts) / max(1, min(train_counts))
    return "not testable", (
        f"This run's training set has a largest/smallest class ratio of {ratio:.2f} and clean labels, "
        "so it carries no evidence about class imbalance or label noise either way. The study's data "
        "(balanced CIFAR-10) could not show it either."
    )


# --- report ---------------------------------------------------------------------


def results_table(results: list[LossResult], ranking: list[str]) -> pd.DataFrame:
    rows = []
    for r in results:
        m = r.metrics
        rows.append(
            {
                "rank": ranking.index(r.name) + 1,
                "loss": r.label,
                "stage": f"train@{r.name}",
                "final test acc": f"{m['final_test_acc']:.4f}",
                "best test acc (epoch)": f"{m['best_test_acc']:.4f} ({m['best_epoch']})",
                "final train acc": f"{m['final_train_acc']:.4f}",
                "final train loss": f"{m['final_train_loss']:.4f}",
                "final test loss": f"{m['final_test_loss']:.4f}",
                "converged (epoch)": m["convergence_epoch"],
                "wall time (s)": f"{r.history['wall_time_s'].iloc[-1]:.1f}",
            }
        )
    return pd.DataFrame(rows).sort_values("rank")


def report(params: Params, root: Path, console: Console) -> dict[str, Any]:
    results = load_results(params, root)
    counts_path = root / CLASS_COUNTS_FILE
    if not counts_path.is_file():
        raise MissingInput(f"{counts_path} is missing: run `dvc repro prepare` first")
    class_counts = json.loads(counts_path.read_text())
    ranking = [r.name for r in sorted(results, key=lambda r: r.test_acc, reverse=True)]
    n_test = int(results[0].metrics["test_samples"])
    margin = sampling_margin(0.5, n_test)  # the widest there is: p(1 - p) peaks at 0.5

    draw_curves(results, root / CURVES_FIGURE)
    draw_final_accuracy(results, root / ACCURACY_FIGURE)
    overlay = pd.concat([r.history.assign(loss=r.label) for r in results], ignore_index=True)
    write_with(root / CURVES_TABLE, lambda path: overlay.to_csv(path, index=False))

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
            claim_imbalance_noise(class_counts),
        ),
    ]
    summary = {
        "best_loss": ranking[0],
        "rank": {name: ranking.index(name) + 1 for name in params.losses},
        "claims": {str(i): verdict for i, (_, (verdict, _)) in enumerate(claims, 1)},
    }
    write_json(root / SUMMARY_FILE, summary)

    settings = results[0].metrics["settings"]
    table = results_table(results, ranking)
    lines = [
        "# Which loss? Results of this run",
        "",
        f"Dataset **{class_counts['dataset']}**: {int(results[0].metrics['train_samples'])} training and "
        f"{n_test} test images. Protocol: {settings['epochs']} epochs, batch {settings['batch_size']}, "
        f"SGD lr {settings['lr']:g} momentum {settings['momentum']:g}, lr × {settings['lr_decay_factor']:g} "
        f"every {settings['lr_step_epochs']} epochs, seed {settings['seed']}. Ranked by final test accuracy.",
        "",
        table.to_markdown(index=False),
        "",
        f"One run per loss. An accuracy measured on {n_test} test images is uncertain by up to "
        f"±{points(margin)} points (95%) from test-set sampling alone; seed-to-seed variation comes on top "
        "and is not measured by a single run, so small gaps "
        "between losses are not evidence of a real difference.",
        "",
        f"![Loss and accuracy per epoch]({CURVES_FIGURE.name})",
        "",
        f"![Final accuracy per loss]({ACCURACY_FIGURE.name})",
        "",
        "## The study's claims, measured",
        "",
    ]
    for title, (verdict, text) in claims:
        lines += [f"**{title}** — *{verdict}*. {text}", ""]
    write_text(root / REPORT_FILE, "\n".join(lines))

    console.print(f"[bold]report[/]: ranking by final test accuracy: {' > '.join(ranking)}")
    for title, (verdict, _) in claims:
        console.print(f"  claim {title.split('.')[0]}: {verdict}")
    console.print(f"  wrote {REPORT_FILE}, {CURVES_FIGURE}, {ACCURACY_FIGURE}, {SUMMARY_FILE}")
    return summary
