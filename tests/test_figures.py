"""One look across figures: a loss's colour and label are the same in every PNG
and in `dvc plots show`; axes read as plain numbers; the plot templates."""

import json
import re
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import PROJECT, published_details
from matplotlib.collections import PathCollection
from matplotlib.colors import to_hex, to_rgba

from lossbench import figures
from lossbench.claims import final_accuracy
from lossbench.figures import FIXED_COLOURS, OTHER_COLOURS, colour_of, loss_colours
from lossbench.losses.ce import CeLoss
from lossbench.losses.focal import FocalLoss
from lossbench.losses.mae import MaeLoss
from lossbench.params import LossParams, loss_label
from lossbench.report_tables import overlay_table
from lossbench.results import LossResult, VariantRun
from lossbench.runfiles import LossCalibration, Measures
from lossbench.temperature import RELIABILITY_COLUMNS, Scaled

TEMPLATES = PROJECT / ".dvc" / "plots"


@pytest.mark.fast
def test_a_loss_keeps_its_colour_whatever_else_is_run() -> None:
    assert colour_of("ce") == "#1f77b4" and colour_of("mae") == "#2ca02c"
    assert colour_of("focal_low") == "#ff7f0e" and colour_of("focal_high") == "#d62728"
    # Any other name: one of the other colours, from the name alone (a hash, not an order).
    assert colour_of("focal") == "#e377c2"
    for name in ("focal", "focal_mid", "lt", "x-1"):
        assert colour_of(name) in OTHER_COLOURS
        assert colour_of(name) == colour_of(name)
    for names in (["mae", "ce", "focal_low", "focal_high"], ["focal_high", "ce"], ["ce", "focal_mid"]):
        assert loss_colours(names) == {name: colour_of(name) for name in names}


@pytest.mark.fast
def test_names_whose_colours_clash_are_told_apart() -> None:
    assert colour_of("focal") == colour_of("focal_a")  # the hash puts both on pink
    colours = loss_colours(["focal_a", "ce", "focal"])
    assert list(colours) == ["focal_a", "ce", "focal"]  # in the order given
    assert colours["ce"] == FIXED_COLOURS["ce"] and colours["focal_a"] == colour_of("focal_a")
    assert colours["focal"] != colours["focal_a"] and colours["focal"] in OTHER_COLOURS
    many = loss_colours([f"loss{i}" for i in range(9)])
    assert len(set(many.values())) == 9  # nine colours before any is shared


def _result(name: str, spec: LossParams, accuracy: float, seeds: tuple[int, ...] = (1, 2)) -> LossResult:
    rows = [
        {
            "seed": seed,
            "epoch": epoch,
            "lr": 0.1,
            "train_loss": 2.0 / epoch if name != "mae" else 0.15,
            "test_loss": 1.8 / epoch if name != "mae" else 0.16,
            "train_acc": accuracy * epoch / 3 + 0.01 * seed,
            "test_acc": accuracy * epoch / 3 + 0.02 * seed,
            "wall_time_s": 1.0,
        }
        for seed in seeds
        for epoch in (1, 2, 3)
    ]
    per_seed = {seed: {"final_test_acc": accuracy + 0.02 * seed, "at_chance": None} for seed in seeds}
    return LossResult(name, loss_label(spec), spec, per_seed, pd.DataFrame(rows), pd.DataFrame(), {})


RESULTS = [
    _result("mae", MaeLoss(kind="mae", input="probs"), 0.3),
    _result("ce", CeLoss(kind="ce"), 0.5),
    _result("focal_high", FocalLoss(kind="focal", gamma=2.0), 0.48),
]


@pytest.mark.fast
def test_curves_csv_names_each_loss_by_its_label_in_its_colour() -> None:
    table = overlay_table(RESULTS)
    assert {"loss", "label", "color"} <= set(table.columns)
    for name, label in (("mae", "MAE (L1)"), ("ce", "CE"), ("focal_high", "Focal (γ=2)")):
        rows = table[table["loss"] == name]
        assert set(rows["label"]) == {label} and set(rows["color"]) == {colour_of(name)}


def _line_colours(axis: Any) -> dict[str, str]:
    return {line.get_label(): to_hex(line.get_color()) for line in axis.get_lines()}


@pytest.mark.fast
def test_the_pngs_colour_each_loss_by_its_name_and_read_as_plain_numbers() -> None:
    figure = figures.draw_curves(RESULTS, chance=0.1)
    figure.canvas.draw()
    try:
        train_loss, _, train_acc, test_acc = figure.axes
        expected = {r.label: colour_of(r.name) for r in RESULTS}
        assert {k: v for k, v in _line_colours(test_acc).items() if k in expected} == expected
        # Log-scale loss panels: decimals, never 2×10⁰ or 2e-01.
        labels = [t.get_text() for t in train_loss.get_yticklabels() + train_loss.get_yticklabels(minor=True)]
        shown = [label for label in labels if label]
        assert shown and all(re.fullmatch(r"[0-9.]+", label) for label in shown), shown
        # Accuracy panels fit the data (0.31 to 0.54 here) and chance, dashed, not 0 to 1.
        for axis in (train_acc, test_acc):
            low, high = axis.get_ylim()
            assert 0.05 < low < 0.1 and 0.5 < high < 0.7, (low, high)
            chance = [
                line
                for line in axis.get_lines()
                if line.get_linestyle() == "--" and list(np.asarray(line.get_ydata())) == [0.1, 0.1]
            ]
            assert len(chance) == 1
        legend_labels = [text.get_text() for text in figure.legends[0].get_texts()]
        assert legend_labels == ["MAE (L1)", "CE", "Focal (γ=2)", "chance (1/10)"]
    finally:
        plt.close(figure)


@pytest.mark.fast
def test_final_accuracy_uses_the_same_colours_and_fits_the_data() -> None:
    accuracy = figures.draw_final_accuracy(RESULTS, chance=0.1)
    try:
        (axis,) = accuracy.axes
        points = [
            to_hex(c.get_facecolor()[0])
            for c in axis.collections
            if isinstance(c, PathCollection) and len(c.get_offsets())
        ]
        assert points == [colour_of(r.name) for r in RESULTS]
        low, high = axis.get_ylim()
        assert low < 0.1 < high < 1.0
    finally:
        plt.close(accuracy)


def _templates() -> dict[str, dict[str, Any]]:
    return {path.stem: json.loads(path.read_text()) for path in TEMPLATES.glob("*.json")}


@pytest.mark.fast
@pytest.mark.parametrize("name", ["by_loss", "by_loss_log"])
def test_overlay_templates_take_colour_and_legend_from_curves_csv(name: str) -> None:
    template = _templates()[name]
    colour = template["encoding"]["color"]
    assert colour["scale"] == {"range": {"field": "line_colour"}}  # the colour written by the report
    assert template["encoding"]["detail"] == {"field": "loss"}  # one line per loss, whatever its colour
    calculated = {step["as"]: step["calculate"] for step in template["transform"] if "calculate" in step}
    assert calculated["loss_label"] == "datum.label || datum.loss"  # the legend shows labels
    # Files written before the report wrote colours: the default losses' colours, as here.
    fallback = re.search(r"\{[^}]*\}", calculated["line_colour"])
    assert fallback is not None
    assert yaml.safe_load(fallback.group()) == FIXED_COLOURS
    assert calculated["line_colour"].startswith("datum.color ||")


@pytest.mark.fast
def test_seeds_sort_as_numbers_and_per_loss_plots_name_their_file() -> None:
    templates = _templates()
    seed = templates["by_seed"]
    assert seed["transform"] == [{"calculate": "toNumber(datum.seed)", "as": "seed_number"}]
    assert seed["encoding"]["color"]["field"] == "seed_number"  # 1, 2, ..., 10, not 1, 10, 2
    for name in ("by_seed", "confusion", "reliability"):
        assert templates[name]["data"] == {"name": "dvc", "values": "<DVC_METRIC_DATA>"}
        assert templates[name]["title"]["subtitle"] == {"expr": "data('dvc')[0].filename"}


def _layers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [spec] + [layer for child in spec.get("layer", []) for layer in _layers(child)]


@pytest.mark.fast
def test_the_reliability_diagrams_pool_seeds_by_count_on_unit_axes_in_the_loss_colour() -> None:
    template = _templates()["reliability"]
    steps = template["transform"]
    calculated = {step["as"]: step["calculate"] for step in steps if "calculate" in step}
    # The loss from its file's name; its colour as the overlays take it (no colour in the file).
    assert calculated["loss_name"].startswith("datum.loss ||")
    fallback = re.search(r"\{[^}]*\}", calculated["loss_colour"])
    assert fallback is not None and yaml.safe_load(fallback.group()) == FIXED_COLOURS
    assert calculated["loss_colour"].startswith("datum.color ||")
    # Empty bins (no images, no confidence) are dropped before anything is drawn.
    assert {
        "filter": "datum.images > 0 && datum['<DVC_METRIC_X>'] !== '' && datum['<DVC_METRIC_Y>'] !== ''"
    } in steps
    # Seeds pooled per bin as reliability.png pools them: sums of images, of
    # confidence x images and of correct answers, divided by the images.
    (pooled,) = [layer for layer in template["layer"] if "transform" in layer]
    aggregate = pooled["transform"][0]
    assert aggregate["groupby"] == ["rev", "loss_name", "loss_colour", "bin"]
    assert {(a["op"], a["field"]) for a in aggregate["aggregate"]} >= {
        ("sum", "images"),
        ("sum", "confidence_sum"),
        ("sum", "correct"),
    }
    assert calculated["confidence_sum"] == "datum.seed_confidence * datum.images"
    assert calculated["correct"] == "datum.seed_accuracy * datum.images"
    means = {step["as"]: step["calculate"] for step in pooled["transform"][1:] if "calculate" in step}
    assert means["confidence"] == "datum.confidence_sum / datum.images"
    assert means["accuracy"] == "datum.correct / datum.images"
    # Both axes 0 to 1 in every layer; the pooled points' area is the images in the bin.
    for layer in _layers(template):
        for axis in ("x", "y"):
            if axis in layer.get("encoding", {}):
                assert layer["encoding"][axis]["scale"]["domain"] == [0, 1], layer
    sizes = [layer["encoding"]["size"] for layer in _layers(template) if "size" in layer.get("encoding", {})]
    assert [(size["field"], size["scale"]["zero"]) for size in sizes] == [("images", True)]


@pytest.mark.parametrize(
    ("study", "figure"), [("cifar10-gamma", "sweep.png"), ("cifar10-variants", "variants.png")]
)
def test_a_studys_experiment_figure_is_among_its_plots(study: str, figure: str) -> None:
    """Not in studies/NAME/dvc.yaml, which must equal the project's (where the figure does
    not exist and would be shown as missing), but in a dvc.yaml beside the figure."""
    folder = PROJECT / "studies" / study / "plots"
    assert yaml.safe_load((folder / "dvc.yaml").read_text()) == {"plots": [figure]}
    assert (folder / figure).is_file()


@pytest.mark.fast
def test_the_sweep_figure_marks_a_run_at_chance_and_leaves_it_out_of_the_mean() -> None:
    """γ=0's seed 1 never learned: its point is a red cross, and γ=0's mean (accuracy,
    ECE before and after scaling) is that of seeds 2 and 3."""
    rows = [
        (0.0, 1, 0.10, 0.0, 0.0, True),
        (0.0, 2, 0.56, 0.02, 0.018, False),
        (0.0, 3, 0.58, 0.03, 0.020, False),
        (2.0, 1, 0.52, 0.09, 0.030, False),
        (2.0, 2, 0.50, 0.10, 0.034, False),
    ]
    columns = ["gamma", "seed", "final_test_acc", "ece", "ece_scaled", "at_chance"]
    figure = figures.draw_sweep(pd.DataFrame(rows, columns=columns), "focal")
    accuracy, ece = figure.axes
    mean = next(line for line in accuracy.lines if line.get_label() == "seed mean, runs at chance left out")
    assert np.allclose(mean.get_ydata(), [0.57, 0.51])
    means = {line.get_label(): line.get_ydata() for line in ece.lines}
    assert np.allclose(means["seed mean, runs at chance left out"], [0.025, 0.095])
    assert np.allclose(means["after temperature scaling"], [0.019, 0.032])
    crosses = [c for c in accuracy.collections if c.get_label() == "a run at chance"]
    assert len(crosses) == 1 and crosses[0].get_offsets().tolist() == [[0.0, 0.1]]
    plt.close(figure)


@pytest.mark.fast
def test_the_variants_figure_marks_a_run_at_chance_and_leaves_it_out_of_the_mean() -> None:
    """CE's clean seed 1 never learned: its point is a red cross, and the clean
    mean is that of seeds 2 and 3, so 20% noise does not seem to raise CE's accuracy."""

    def ce(accuracies: dict[int, float], stuck: set[int]) -> LossResult:
        per_seed: dict[int, dict[str, object]] = {
            seed: {"final_test_acc": value, "at_chance": "never left chance" if seed in stuck else None}
            for seed, value in accuracies.items()
        }
        return LossResult.from_details(published_details("ce", {"kind": "ce"}, per_seed), "ce.json")

    clean = {"ce": ce({1: 0.10, 2: 0.56, 3: 0.58}, stuck={1})}
    noisy = VariantRun("noise", 1.0, 0.2, {"ce": ce({1: 0.50, 2: 0.52, 3: 0.54}, stuck=set())}, {})
    panels: list[figures.VariantPanel] = [("label_noise", final_accuracy, "test accuracy")] * 2
    figure = figures.draw_variants([noisy], clean, panels)
    axis = figure.axes[0]
    (mean,) = [line for line in axis.lines if line.get_label() == "CE"]
    assert np.allclose(mean.get_xdata(), [0.0, 0.2]) and np.allclose(mean.get_ydata(), [0.57, 0.52])
    crosses = [c for c in axis.collections if c.get_offsets().tolist() == [[0.0, 0.1]]]
    assert len(crosses) == 1 and crosses[0].get_facecolor()[0].tolist() == list(to_rgba("tab:red"))
    assert "a run at chance (not in the mean)" in [text.get_text() for text in axis.get_legend().get_texts()]
    plt.close(figure)


@pytest.mark.fast
def test_the_reliability_diagram_leaves_out_a_run_at_chance_and_says_so() -> None:
    """CE's seed 1 never learned (every image in the lowest bin): its bins are not
    pooled and its ECE is not in the title's mean, as the comparisons leave it out."""
    per_seed: dict[int, dict[str, object]] = {
        1: {"final_test_acc": 0.1, "at_chance": "never left chance"},
        2: {"final_test_acc": 0.7},
        3: {"final_test_acc": 0.7},
    }
    bins = pd.DataFrame(
        [(1, 0, 0.0, 0.2, 100, 0.1, 0.1)] + [(seed, 3, 0.6, 0.8, 100, 0.7, 0.7) for seed in (2, 3)],
        columns=list(RELIABILITY_COLUMNS),
    )
    result = LossResult.from_details(
        published_details("ce", {"kind": "ce"}, per_seed), "ce.json", tables=(pd.DataFrame(), bins)
    )

    def measures(ece: float) -> dict[str, float]:
        return dict.fromkeys(Measures.model_fields, 0.01) | {"ece": ece}

    calibration = LossCalibration.model_validate(
        {
            "loss": "ce",
            "label": "CE",
            "split_seed": 0,
            "bins": 15,
            "floor_draws": 10,
            "half_sizes": [50, 50],
            "per_seed": {
                f"seed{seed}": {"temperatures": [t, t], "before": measures(ece), "after": measures(ece / 2)}
                for seed, ece, t in ((1, 0.0, 100.0), (2, 0.04, 1.2), (3, 0.06, 1.4))
            },
        }
    )
    figure = figures.draw_reliability([Scaled(result, calibration, bins)])
    before, _, after, _ = figure.axes
    assert before.get_title() == "CE, 1 at chance left out\nbefore scaling: ECE 0.050"
    assert after.get_title() == "CE, 1 at chance left out\nafter scaling: ECE 0.025, T 1.30"
    for axis in (before, after):
        assert [round(bar.get_x(), 2) for bar in axis.patches] == [0.6]  # the lowest bin is seed 1's alone
    plt.close(figure)
