"""Stage publish@NAME: one loss's results where git and `dvc metrics/plots` see them.

A training stage's outputs are all DVC-cached (data/runs/NAME), which is what
lets the run-cache hand it to another machine. This stage writes, each file
declared as its own output (so the pipeline owns exactly the files it writes,
and a file of yours beside them is never touched):

- metrics/NAME.json: the few numbers people compare (`dvc metrics show/diff`);
- metrics/details/NAME.json: everything else, per seed and summarised;
- plots/history/NAME.csv, plots/calibration/NAME.csv, plots/confusion/NAME.csv.
"""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console

from lossbench.errors import MissingInput
from lossbench.evaluation import SEED_METRICS
from lossbench.params import Params, require_loss
from lossbench.results import read_run
from lossbench.stats import summarize
from lossbench.storage import (
    CALIBRATION_DIR,
    CONFUSION_DIR,
    DETAILS_DIR,
    HISTORY_DIR,
    METRICS_DIR,
    RunFiles,
    output_set,
)


def published_files(root: Path, name: str) -> list[Path]:
    return [
        root / METRICS_DIR / f"{name}.json",
        root / DETAILS_DIR / f"{name}.json",
        root / HISTORY_DIR / f"{name}.csv",
        root / CALIBRATION_DIR / f"{name}.csv",
        root / CONFUSION_DIR / f"{name}.csv",
    ]


def details(run: dict[str, Any]) -> dict[str, Any]:
    """data/runs/NAME/metrics.json with each seed number summarised over seeds."""
    per_seed = run["per_seed"].values()
    summaries = {key: summarize([seed[key] for seed in per_seed]) for key in SEED_METRICS}
    recall = [seed["per_class_recall"] for seed in per_seed]
    at_chance = {name: seed["at_chance"] for name, seed in run["per_seed"].items() if seed["at_chance"]}
    return (
        {key: run[key] for key in ("loss", "label", "seeds")}
        | summaries
        | {
            "per_class_recall": {
                name: sum(values) / len(values)
                for name, values in zip(run["classes"], zip(*recall, strict=True), strict=True)
            },
            "at_chance": at_chance,
        }
        | {key: value for key, value in run.items() if key not in ("loss", "label", "seeds")}
    )


def headline(summary: dict[str, Any]) -> dict[str, float]:
    """The numbers `dvc metrics show` lists per loss (seed means, rounded for a
    terminal; details/NAME.json has them unrounded, with intervals)."""
    return {
        "test_acc": round(summary["final_test_acc"]["mean"], 4),
        "test_sd": round(summary["final_test_acc"]["std"], 4),
        "best_acc": round(summary["best_test_acc"]["mean"], 4),
        "best_sd": round(summary["best_test_acc"]["std"], 4),
        "ece": round(summary["ece"]["mean"], 4),
        "conv_ep": round(summary["convergence_epoch"]["mean"], 1),
        "at_chance": len(summary["at_chance"]),
    }


def publish(params: Params, name: str, root: Path, console: Console) -> list[Path]:
    require_loss(params, name)
    run = RunFiles.of(root, name)
    sources = [run.metrics, run.history, run.calibration, run.confusion]
    missing = [source for source in sources if not source.is_file()]
    if missing:
        raise MissingInput(f"{missing[0]} is missing: run `dvc repro train@{name}` first")
    summary = details(read_run(run.metrics))
    metrics, full, history, calibration, confusion = published_files(root, name)
    with output_set() as files:  # all five or none
        files.write_json(metrics, headline(summary))
        files.write_json(full, summary)
        for source, target in (
            (run.history, history),
            (run.calibration, calibration),
            (run.confusion, confusion),
        ):
            files.write_with(target, partial(shutil.copyfile, source))
    shown = headline(summary)
    console.print(
        f"[bold]publish@{name}[/]: test acc {shown['test_acc']:.4f} ± {shown['test_sd']:.4f}, "
        f"ECE {shown['ece']:.4f}, {shown['at_chance']} run(s) at chance; wrote "
        + ", ".join(str(path.relative_to(root)) for path in (metrics, full, history, calibration, confusion))
    )
    return [metrics, full, history, calibration, confusion]
