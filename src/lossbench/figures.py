"""Every figure: the report's 2x2 curves, final accuracy per seed and
reliability diagrams, the γ sweep's and the variants' figures; and the colour
of each loss, by its name, in every figure and plot (`colour_of`, `loss_colours`).

Each function draws and returns its figure from numbers already computed; a
report writes it with its other files as one set (`save_figure`)."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on CI or servers
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter

from lossbench.params import DataParams
from lossbench.results import CLEAN_DATA, LossResult, VariantRun, without_chance_runs
from lossbench.storage import OutputSet
from lossbench.temperature import Scaled

CURVE_COLUMNS = ("train_loss", "test_loss", "train_acc", "test_acc")
# Each curve's lowest and highest seed: the bands in curves.png and in `dvc plots show`.
SPREAD_COLUMNS = tuple(f"{column}_{end}" for column in CURVE_COLUMNS for end in ("min", "max"))
DPI = 110
RELIABILITY_DPI = 100

# --- one colour per loss, by its name ------------------------------------------------------------
# Matplotlib's tab10 without its grey (grey marks chance and single seeds). The
# default losses keep fixed colours (CE blue, the focal losses warm, MAE green);
# any other name takes one of the rest by a hash of the name, so a loss keeps its
# colour whatever else is in params.yaml, in the PNGs and in `dvc plots show`
# (the report writes it into plots/curves.csv, which the Vega templates read).
FIXED_COLOURS = {"ce": "#1f77b4", "focal_low": "#ff7f0e", "focal_high": "#d62728", "mae": "#2ca02c"}
OTHER_COLOURS = ("#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf")
CHANCE_STYLE = {"color": "grey", "linestyle": "--", "linewidth": 1}


def colour_of(name: str) -> str:
    """A loss's colour (hex), from its name alone: the same in every run, figure and plot."""
    if name in FIXED_COLOURS:
        return FIXED_COLOURS[name]
    return OTHER_COLOURS[zlib.crc32(name.encode("utf-8")) % len(OTHER_COLOURS)]


def loss_colours(names: Iterable[str]) -> dict[str, str]:
    """Each loss's colour among these: its `colour_of`, unless an earlier name
    (the fixed ones first, then in the order given) already has that colour;
    then the first colour none of them has, the default losses' last. Past
    nine losses, names share colours."""
    names = list(dict.fromkeys(names))
    ordered = [name for name in names if name in FIXED_COLOURS] + [n for n in names if n not in FIXED_COLOURS]
    chosen: dict[str, str] = {}
    for name in ordered:
        colour = colour_of(name)
        if colour in chosen.values():
            free = [c for c in (*OTHER_COLOURS, *FIXED_COLOURS.values()) if c not in chosen.values()]
            colour = free[0] if free else colour
        chosen[name] = colour
    return {name: chosen[name] for name in names}


def result_colours(results: list[LossResult]) -> list[str]:
    """The colour of each result, in their order (`loss_colours` of their names)."""
    colours = loss_colours(r.name for r in results)
    return [colours[r.name] for r in results]


class PlainLogFormatter(LogFormatter):
    """Log-axis tick labels as plain decimals (0.2, 1, 2), not 2×10⁰ or 2e-01;
    which ticks get a label is LogFormatter's choice."""

    def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:
        return f"{x:g}"


def plain_log_ticks(axis: Axes) -> None:
    """A log-scale y axis labelled in plain decimals."""
    axis.yaxis.set_major_formatter(PlainLogFormatter())
    axis.yaxis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False))


def accuracy_limits(axis: Axes, values: Iterable[float], chance: float) -> None:
    """Fit an accuracy axis to the data and to chance (drawn dashed), within 0-1."""
    found = [float(v) for v in values if np.isfinite(v)]
    low, high = min([*found, chance]), max([*found, chance])
    margin = max(0.02, 0.06 * (high - low))
    axis.set_ylim(max(0.0, low - margin), min(1.0, high + margin))
    axis.axhline(chance, zorder=1, **CHANCE_STYLE)  # type: ignore[arg-type]


def save_figure(files: OutputSet, figure: Figure, path: Path, dpi: int = DPI) -> None:
    """Write a figure as a PNG into an output set."""
    files.write_with(path, lambda out: figure.savefig(out, dpi=dpi, format="png"))


@contextmanager
def closing(*drawn: Figure) -> Iterator[None]:
    """Close these figures when the block ends, written or failed: pyplot keeps every open one."""
    try:
        yield
    finally:
        for figure in drawn:
            plt.close(figure)


def seed_mean_curves(result: LossResult) -> pd.DataFrame:
    """Per epoch: the seed mean of each curve, and its lowest and highest seed."""
    grouped = result.history.groupby("epoch")
    means = grouped[["lr", *CURVE_COLUMNS]].mean()
    spread = grouped[list(CURVE_COLUMNS)].agg(["min", "max"])
    spread.columns = ["_".join(map(str, pair)) for pair in spread.columns.to_flat_index()]
    return means.join(spread).reset_index()


def data_variant(data: DataParams) -> str:
    """The training set's variant in words ('' for the clean one): a figure says which it shows."""
    parts = []
    if data.imbalance_ratio != CLEAN_DATA["imbalance_ratio"]:
        parts.append(f"long-tailed training set (imbalance ratio {data.imbalance_ratio:g})")
    if data.label_noise != CLEAN_DATA["label_noise"]:
        parts.append(f"{data.label_noise:.0%} of training labels flipped")
    return ", ".join(parts)


def draw_curves(results: list[LossResult], chance: float, variant: str = "") -> Figure:
    """Train/test loss (log scale: MAE's ~0.1 and CE's ~2 on one axis) and accuracy
    per epoch; accuracy axes fit the data, with chance (1 / classes) dashed. `variant`
    (data_variant) names the training set, where it is not the clean one."""
    panels = [
        ("train_loss", "Train loss (log scale)"),
        ("test_loss", "Test loss (log scale)"),
        ("train_acc", "Train accuracy"),
        ("test_acc", "Test accuracy"),
    ]
    seeds = len(results[0].seeds)
    figure, axes = plt.subplots(2, 2, figsize=(11, 8), sharex=True)
    tables = [seed_mean_curves(result) for result in results]
    colours = result_colours(results)
    for axis, (column, title) in zip(axes.flat, panels, strict=True):
        for colour, result, table in zip(colours, results, tables, strict=True):
            axis.plot(table["epoch"], table[column], color=colour, label=result.label)
            if seeds > 1:
                axis.fill_between(
                    table["epoch"], table[f"{column}_min"], table[f"{column}_max"], color=colour, alpha=0.15
                )
        if column.endswith("loss"):
            axis.set_yscale("log")
            plain_log_ticks(axis)
        else:
            shown = [table[f"{column}_{end}"] for table in tables for end in ("min", "max")]
            accuracy_limits(axis, np.concatenate(shown), chance)
        axis.set_title(title)
        axis.grid(alpha=0.3, which="both")
    for axis in axes[1]:
        axis.set_xlabel("epoch")
        axis.xaxis.get_major_locator().set_params(integer=True)
    axes[1, 1].plot([], [], label=f"chance (1/{round(1 / chance)})", **CHANCE_STYLE)
    handles, labels = axes[1, 1].get_legend_handles_labels()
    # One legend for the four panels, below them: inside one it would cover curves.
    figure.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), frameon=False)
    title = f"Mean of {seeds} seeds; bands span the lowest to the highest seed" if seeds > 1 else ""
    if variant:
        title = f"{variant[0].upper()}{variant[1:]}" + (f"\n{title}" if title else "")
    if title:
        figure.suptitle(title)
    rows_of_legend = -(-len(labels) // 5)
    figure.tight_layout(rect=(0, 0.045 * rows_of_legend, 1, 1))
    return figure


def draw_final_accuracy(results: list[LossResult], chance: float) -> Figure:
    """Every seed's final test accuracy as a point, the seed mean as a bar across."""
    figure, axis = plt.subplots(figsize=(8, 4.5))
    rng = np.random.default_rng(0)  # horizontal jitter only, so equal values stay visible
    for position, (colour, result) in enumerate(zip(result_colours(results), results, strict=True)):
        accuracy = np.array(result.values("final_test_acc"))
        stuck = np.array([seed in result.at_chance() for seed in result.seeds])
        x = position + rng.uniform(-0.12, 0.12, len(accuracy))
        axis.scatter(x[~stuck], accuracy[~stuck], color=colour, s=28, zorder=3)
        axis.scatter(x[stuck], accuracy[stuck], color=colour, marker="x", s=40, zorder=3)
        axis.hlines(accuracy.mean(), position - 0.3, position + 0.3, color="black", linewidth=2, zorder=4)
        axis.annotate(f"{accuracy.mean():.3f}", (position + 0.32, accuracy.mean()), va="center", fontsize=8)
    accuracy_limits(axis, [v for r in results for v in r.values("final_test_acc")], chance)
    axis.annotate("chance", (len(results) - 0.5, chance), va="bottom", ha="right", fontsize=8, color="grey")
    axis.set_xticks(range(len(results)), [r.label for r in results])
    axis.set_xlim(-0.6, len(results) - 0.3)
    axis.set_ylabel("final test accuracy")
    axis.set_title(
        f"Final test accuracy: one point per seed ({len(results[0].seeds)}), bar = mean; x = run at chance"
    )
    axis.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    return figure


def pooled_reliability(bins: pd.DataFrame) -> pd.DataFrame:
    """Reliability bins (one row per seed and bin) pooled over seeds, count-weighted."""
    table = bins.dropna(subset=["confidence"])
    weighted = table.assign(
        confidence=table["confidence"] * table["count"], accuracy=table["accuracy"] * table["count"]
    )
    pooled = (
        weighted.groupby(["bin", "lower", "upper"])[["count", "confidence", "accuracy"]].sum().reset_index()
    )
    pooled["confidence"] /= pooled["count"]
    pooled["accuracy"] /= pooled["count"]
    return pooled


def _reliability_panel(axis: Axes, counts: Axes, pooled: pd.DataFrame, colour: str, title: str) -> None:
    """Accuracy per confidence bin against the diagonal, and under it the share of images per bin."""
    widths = pooled["upper"] - pooled["lower"]
    axis.bar(
        pooled["lower"],
        pooled["accuracy"],
        width=widths,
        align="edge",
        alpha=0.7,
        color=colour,
        edgecolor="black",
        linewidth=0.5,
    )
    axis.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    axis.plot(pooled["confidence"], pooled["accuracy"], "o", color="black", markersize=3)
    axis.set_title(title, fontsize=9)
    axis.set(xlim=(0, 1), ylim=(0, 1))
    axis.tick_params(labelbottom=False)
    share = pooled["count"] / pooled["count"].sum()
    counts.bar(
        pooled["lower"], share, width=widths, align="edge", color="grey", edgecolor="black", linewidth=0.5
    )
    counts.set(xlim=(0, 1), ylim=(0, 1))
    counts.set_yticks([0, 0.5, 1])
    counts.tick_params(labelsize=7)


# draw_reliability's margins and gaps, in inches: the axis label and tick labels at the
# left and under each group; between columns, tick labels; above each side, a two-line title.
RELIABILITY_SPACE = {
    "left": 0.6,
    "right": 0.15,
    "top": 0.5,
    "bottom": 0.55,
    "columns": 0.45,
    "groups": 0.85,
    "title": 0.55,
    "strip": 0.18,
}


def draw_reliability(scaled: list[Scaled]) -> Figure:
    """Per loss, the reliability diagram before temperature scaling and after it
    (every image scaled by the T fitted on the other half), its seeds pooled
    without its runs at chance (unless every one is), each over a strip of the
    share of images in each bin."""
    columns = min(4, len(scaled))
    groups = -(-len(scaled) // columns)
    width, height = 3.3 * columns, 6.8 * groups
    figure = plt.figure(figsize=(width, height))
    # A fixed layout, in inches (RELIABILITY_SPACE): matplotlib's constrained layout
    # measured every label again (4 losses: 0.84 CPU s to draw and save, now 0.50).
    space = RELIABILITY_SPACE
    column_width = (width - space["left"] - space["right"] - (columns - 1) * space["columns"]) / columns
    group_height = (height - space["top"] - space["bottom"] - (groups - 1) * space["groups"]) / groups
    side_height = (group_height - space["title"]) / 2
    grid = figure.add_gridspec(
        groups,
        columns,
        left=space["left"] / width,
        right=1 - space["right"] / width,
        top=1 - space["top"] / height,
        bottom=space["bottom"] / height,
        wspace=space["columns"] / column_width,
        hspace=space["groups"] / group_height,
    )
    colours = result_colours([s.result for s in scaled])
    for number, (every, colour) in enumerate(zip(scaled, colours, strict=True)):
        sides = grid[number // columns, number % columns].subgridspec(
            2, 1, hspace=space["title"] / side_height
        )
        column = number % columns
        s = every.learned()  # runs at chance left out, as the comparisons leave them out
        stuck = len(every.result.at_chance())
        label = s.result.label
        if stuck:
            label += f", {stuck} at chance left out" if s is not every else ", every run at chance"
        for place, side, bins in ((0, "before", s.result.calibration), (1, "after", s.reliability)):
            strips = sides[place].subgridspec(
                2, 1, height_ratios=[3, 1], hspace=space["strip"] / ((side_height - space["strip"]) / 2)
            )
            axis = figure.add_subplot(strips[0])
            counts = figure.add_subplot(strips[1], sharex=axis)
            temperature = f", T {np.median(s.temperatures()):.2f}" if side == "after" else ""
            title = f"{label}\n{side} scaling: ECE {s.mean(side, 'ece'):.3f}{temperature}"
            _reliability_panel(axis, counts, pooled_reliability(bins), colour, title)
            if column == 0:
                axis.set_ylabel("accuracy in the bin")
                counts.set_ylabel("share", fontsize=7)
            if number == 0 and side == "before":
                axis.legend(loc="upper left", fontsize=7)
            if side == "after":
                counts.set_xlabel("confidence (top-class probability)")
            else:
                counts.tick_params(labelbottom=False)
    return figure


def draw_sweep(points: pd.DataFrame, loss: str) -> Figure:
    """Final test accuracy and ECE against γ: every seed's point (`points`, one row per
    γ and seed) and the seed mean. A run at chance is marked and left out of the mean,
    as the verdicts leave it out: it never learned, and its 10% would pull the mean of
    its γ down as if γ had cost accuracy."""
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    stuck = points[points["at_chance"]]
    learned = points[~points["at_chance"]]
    mean_label = "seed mean, runs at chance left out" if len(stuck) else "seed mean"
    for axis, column, title in (
        (axes[0], "final_test_acc", "final test accuracy"),
        (axes[1], "ece", "ECE (15 bins)"),
    ):
        axis.scatter(learned["gamma"], learned[column], s=12, color="grey", label="one seed", zorder=2)
        if len(stuck):
            axis.scatter(
                stuck["gamma"],
                stuck[column],
                s=30,
                marker="x",
                color="tab:red",
                label="a run at chance",
                zorder=2,
            )
        means = learned.groupby("gamma")[column].mean()
        axis.plot(means.index, means.to_numpy(), "o-", color="black", label=mean_label, zorder=3)
        axis.axvspan(0.5, 2.0, color="green", alpha=0.07, label="the study's 0.5 ≤ γ ≤ 2")
        axis.set_xlabel(f"γ of losses.{loss}")
        axis.set_title(title)
        axis.grid(alpha=0.3)
    scaled = learned.dropna(subset=["ece_scaled"])
    if len(scaled):
        axes[1].scatter(scaled["gamma"], scaled["ece_scaled"], s=12, color="tab:blue", alpha=0.5, zorder=2)
        means = scaled.groupby("gamma")["ece_scaled"].mean()
        axes[1].plot(
            means.index,
            means.to_numpy(),
            "s--",
            color="tab:blue",
            zorder=3,
            label="after temperature scaling",
        )
    axes[1].legend(fontsize=8)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    return figure


# One panel of the variants' figure: the data variable along x, the measure (one
# number per seed) and the title.
VariantPanel = tuple[str, Callable[[LossResult], list[float]], str]


def _clean_and_runs_along(
    runs: list[VariantRun], clean: dict[str, LossResult], name: str, variable: str
) -> list[tuple[float, LossResult]]:
    """(value, loss `name`'s result) for the clean run and each run that changes only `variable`."""
    other = "label_noise" if variable == "imbalance_ratio" else "imbalance_ratio"
    return [(CLEAN_DATA[variable], clean[name])] + [
        (getattr(run, variable), run.results[name])
        for run in runs
        if getattr(run, other) == CLEAN_DATA[other] and getattr(run, variable) != CLEAN_DATA[variable]
    ]


def draw_variants(runs: list[VariantRun], clean: dict[str, LossResult], panels: list[VariantPanel]) -> Figure:
    """Each panel's measure against its data variable, from the clean run on:
    every seed's point and each loss's seed mean. A run at chance is a red cross,
    left out of its mean as the comparisons leave it out (a loss with every run
    at chance there has no mean there): its 10% would read as the variant's effect."""
    figure, axes = plt.subplots(1, len(panels), figsize=(14, 4))
    colours = loss_colours(clean)
    any_stuck = any(found.at_chance() for run in runs for found in run.results.values()) or any(
        result.at_chance() for result in clean.values()
    )
    for axis, (variable, measure, title) in zip(axes, panels, strict=True):
        for name, result in clean.items():
            means = []
            for x, found in _clean_and_runs_along(runs, clean, name, variable):
                (kept,) = without_chance_runs([found])
                learned = measure(kept) if kept.seeds else []
                axis.scatter([x] * len(learned), learned, s=10, color=colours[name], alpha=0.5)
                if kept.left_out:
                    stuck = measure(found.only(list(kept.left_out)))
                    axis.scatter([x] * len(stuck), stuck, s=24, marker="x", color="tab:red")
                if learned:
                    means.append((x, float(np.mean(learned))))
            axis.plot(
                [x for x, _ in means],
                [mean for _, mean in means],
                "o-",
                color=colours[name],
                label=result.label,
            )
        if variable == "imbalance_ratio":
            axis.set_xscale("log")
            ticks = sorted(
                {x for name in clean for x, _ in _clean_and_runs_along(runs, clean, name, variable)}
            )
            axis.set_xticks(ticks, [f"{x:g}" for x in ticks])
            axis.minorticks_off()
            axis.set_xlabel("imbalance ratio of the training set (1 = clean)")
        else:
            axis.set_xlabel("fraction of training labels flipped (0 = clean)")
        axis.set_title(title)
        axis.grid(alpha=0.3)
    if any_stuck:
        axes[0].scatter([], [], s=24, marker="x", color="tab:red", label="a run at chance (not in the mean)")
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    return figure
