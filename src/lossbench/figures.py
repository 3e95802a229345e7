"""The report's figures: the study's 2x2 curves, final accuracy per seed, and
reliability diagrams. Each loss keeps one colour in all of them.

Each function draws and returns its figure; the report writes them with its
other files as one set (`save_figure`), then closes them."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on CI or servers
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lossbench.results import LossResult
from lossbench.storage import OutputSet

CURVE_COLUMNS = ("train_loss", "test_loss", "train_acc", "test_acc")
COLOURS = [plt.get_cmap("tab10")(i) for i in range(10)]
DPI = 110
RELIABILITY_DPI = 100


def save_figure(files: OutputSet, figure: Figure, path: Path, dpi: int = DPI) -> None:
    """Write a figure as a PNG into an output set, and close it."""
    files.write_with(path, lambda out: figure.savefig(out, dpi=dpi, format="png"))
    plt.close(figure)


def seed_mean_curves(result: LossResult) -> pd.DataFrame:
    """Per epoch: the seed mean of each curve, and its lowest and highest seed."""
    grouped = result.history.groupby("epoch")
    means = grouped[["lr", *CURVE_COLUMNS]].mean()
    spread = grouped[list(CURVE_COLUMNS)].agg(["min", "max"])
    spread.columns = ["_".join(map(str, pair)) for pair in spread.columns.to_flat_index()]
    return means.join(spread).reset_index()


def draw_curves(results: list[LossResult]) -> Figure:
    """Train/test loss (log scale: MAE's ~0.1 and CE's ~2 on one axis) and accuracy per epoch."""
    panels = [
        ("train_loss", "Train loss (log scale)"),
        ("test_loss", "Test loss (log scale)"),
        ("train_acc", "Train accuracy"),
        ("test_acc", "Test accuracy"),
    ]
    seeds = len(results[0].seeds)
    figure, axes = plt.subplots(2, 2, figsize=(11, 8), sharex=True)
    for axis, (column, title) in zip(axes.flat, panels, strict=True):
        for colour, result in zip(COLOURS, results, strict=False):
            table = seed_mean_curves(result)
            axis.plot(table["epoch"], table[column], color=colour, label=result.label)
            if seeds > 1:
                axis.fill_between(
                    table["epoch"], table[f"{column}_min"], table[f"{column}_max"], color=colour, alpha=0.15
                )
        if column.endswith("loss"):
            axis.set_yscale("log")
        else:
            axis.set_ylim(0, 1)
        axis.set_title(title)
        axis.grid(alpha=0.3, which="both")
    for axis in axes[1]:
        axis.set_xlabel("epoch")
        axis.xaxis.get_major_locator().set_params(integer=True)
    axes[1, 1].legend(loc="lower right")
    if seeds > 1:
        figure.suptitle(f"Mean of {seeds} seeds; bands span the lowest to the highest seed")
    figure.tight_layout()
    return figure


def draw_final_accuracy(results: list[LossResult], chance: float) -> Figure:
    """Every seed's final test accuracy as a point, the seed mean as a bar across."""
    figure, axis = plt.subplots(figsize=(8, 4.5))
    rng = np.random.default_rng(0)  # horizontal jitter only, so equal values stay visible
    for position, (colour, result) in enumerate(zip(COLOURS, results, strict=False)):
        accuracy = np.array(result.values("final_test_acc"))
        stuck = np.array([seed in result.at_chance() for seed in result.seeds])
        x = position + rng.uniform(-0.12, 0.12, len(accuracy))
        axis.scatter(x[~stuck], accuracy[~stuck], color=colour, s=28, zorder=3)
        axis.scatter(x[stuck], accuracy[stuck], color=colour, marker="x", s=40, zorder=3)
        axis.hlines(accuracy.mean(), position - 0.3, position + 0.3, color="black", linewidth=2, zorder=4)
        axis.annotate(f"{accuracy.mean():.3f}", (position + 0.32, accuracy.mean()), va="center", fontsize=8)
    axis.axhline(chance, color="grey", linestyle=":", linewidth=1)
    axis.annotate("chance", (len(results) - 0.5, chance), va="bottom", ha="right", fontsize=8, color="grey")
    axis.set_xticks(range(len(results)), [r.label for r in results])
    axis.set_xlim(-0.6, len(results) - 0.3)
    axis.set_ylim(0, 1)
    axis.set_ylabel("final test accuracy")
    axis.set_title(
        f"Final test accuracy: one point per seed ({len(results[0].seeds)}), bar = mean; x = run at chance"
    )
    axis.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    return figure


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


def draw_reliability(results: list[LossResult]) -> Figure:
    columns = min(4, len(results))
    rows = -(-len(results) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.3 * columns, 3.4 * rows), squeeze=False)
    for axis, colour, result in zip(axes.flat, COLOURS, results, strict=False):
        pooled = pooled_reliability(result)
        axis.bar(
            pooled["lower"],
            pooled["accuracy"],
            width=pooled["upper"] - pooled["lower"],
            align="edge",
            alpha=0.7,
            color=colour,
            edgecolor="black",
            linewidth=0.5,
        )
        axis.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
        axis.plot(pooled["confidence"], pooled["accuracy"], "o", color="black", markersize=3)
        axis.set_title(f"{result.label}\nECE {result.mean('ece'):.3f}", fontsize=9)
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1)
        axis.set_xlabel("confidence (top-class probability)")
    for axis in axes.flat[len(results) :]:
        axis.set_axis_off()
    axes[0, 0].set_ylabel("accuracy in the bin")
    axes[0, 0].legend(loc="upper left", fontsize=7)
    figure.tight_layout()
    return figure
