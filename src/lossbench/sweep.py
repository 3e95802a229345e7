"""`lossbench sweep-report`: accuracy and calibration against focal's γ, across
the experiments of a DVC sweep (`dvc exp run --queue -S losses.NAME.gamma=...`).

Reads `dvc exp show --json`, takes every experiment (and committed baseline)
that has results for the loss, and plots the seed mean with a min-max band.
"""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt
import pandas as pd
from rich.console import Console

from lossbench.errors import MissingInput, ParamsError
from lossbench.params import FocalLoss, Params
from lossbench.storage import PLOTS_DIR, write_with

SWEEP_FIGURE = PLOTS_DIR / "sweep.png"
SWEEP_TABLE = PLOTS_DIR / "sweep.csv"


def experiment_records(exp_show: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every revision's data in `dvc exp show --json`: commits and their experiments."""
    records = []
    for commit in exp_show:
        if commit.get("data"):
            records.append({"rev": commit["rev"], "name": commit.get("name"), **commit["data"]})
        for experiment in commit.get("experiments") or []:
            for revision in experiment.get("revs", []):
                if revision.get("data"):
                    records.append({"rev": revision["rev"], "name": revision.get("name"), **revision["data"]})
    return records


def _other_params(params: dict[str, Any], loss: str) -> str:
    """Everything but losses.<loss>.gamma, as a comparable string."""
    rest = copy.deepcopy(params)
    rest.get("losses", {}).get(loss, {}).pop("gamma", None)
    return json.dumps(rest, sort_keys=True)


def sweep_points(records: list[dict[str, Any]], loss: str) -> pd.DataFrame:
    """One row per (γ, seed) with final test accuracy and ECE; each distinct run counted once.

    Only runs that differ in nothing but this γ belong to one sweep: of the
    groups of runs sharing all other params, the one with the most γ values wins.
    """
    groups: dict[str, set[float]] = {}
    for record in records:
        params = (record.get("params") or {}).get("params.yaml", {}).get("data", {})
        spec = params.get("losses", {}).get(loss, {})
        if spec.get("kind") == "focal":
            groups.setdefault(_other_params(params, loss), set()).add(float(spec["gamma"]))
    sweep = max(groups, key=lambda key: len(groups[key]), default=None)
    rows, seen = [], set()
    for record in records:
        params = (record.get("params") or {}).get("params.yaml", {}).get("data", {})
        metrics = (record.get("metrics") or {}).get(f"metrics/{loss}.json", {}).get("data")
        spec = params.get("losses", {}).get(loss, {})
        if not metrics or spec.get("kind") != "focal" or "per_seed" not in metrics:
            continue
        if _other_params(params, loss) != sweep:
            continue
        gamma = float(spec["gamma"])
        per_seed = metrics["per_seed"]
        key = (gamma, json.dumps(per_seed, sort_keys=True))
        if key in seen:  # the workspace repeats its baseline commit
            continue
        seen.add(key)
        for seed, values in per_seed.items():
            rows.append(
                {
                    "gamma": gamma,
                    "seed": seed,
                    "final_test_acc": values["final_test_acc"],
                    "ece": values["ece"],
                    "experiment": record.get("name") or record["rev"][:7],
                }
            )
    return pd.DataFrame(rows)


def draw_sweep(points: pd.DataFrame, loss: str, path: Path) -> pd.DataFrame:
    table = (
        points.groupby("gamma")
        .agg(
            runs=("seed", "size"),
            acc_mean=("final_test_acc", "mean"),
            acc_min=("final_test_acc", "min"),
            acc_max=("final_test_acc", "max"),
            ece_mean=("ece", "mean"),
            ece_min=("ece", "min"),
            ece_max=("ece", "max"),
        )
        .reset_index()
    )
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, prefix, title in ((axes[0], "acc", "final test accuracy"), (axes[1], "ece", "ECE (15 bins)")):
        axis.plot(table["gamma"], table[f"{prefix}_mean"], "o-")
        axis.fill_between(table["gamma"], table[f"{prefix}_min"], table[f"{prefix}_max"], alpha=0.25)
        axis.scatter(
            points["gamma"], points["final_test_acc" if prefix == "acc" else "ece"], s=8, color="black"
        )
        axis.axvspan(0.5, 2.0, color="green", alpha=0.07, label="the study's 0.5 < γ < 2")
        axis.set_xlabel(f"γ of losses.{loss}")
        axis.set_title(f"{title}: seed mean, min-max band")
        axis.grid(alpha=0.3)
    axes[0].legend()
    figure.tight_layout()
    write_with(path, lambda out: figure.savefig(out, dpi=110, format="png"))
    plt.close(figure)
    return table


def sweep_report(
    params: Params, loss: str, root: Path, console: Console, all_commits: bool = False
) -> pd.DataFrame:
    if not isinstance(params.losses.get(loss), FocalLoss):
        raise ParamsError(
            f"losses.{loss}: sweep-report needs a focal loss; focal entries: "
            + ", ".join(n for n, s in params.losses.items() if isinstance(s, FocalLoss))
        )
    # By default DVC lists the experiments of the current commit only.
    command = ["dvc", "exp", "show", "--json", *(["--all-commits"] if all_commits else [])]
    shown = subprocess.run(command, cwd=root, capture_output=True, text=True)
    if shown.returncode != 0:
        raise MissingInput(f"`dvc exp show --json` failed: {shown.stderr.strip()}")
    points = sweep_points(experiment_records(json.loads(shown.stdout)), loss)
    if points.empty or points["gamma"].nunique() < 2:
        raise MissingInput(
            f"need results for at least two values of losses.{loss}.gamma; run e.g. "
            f"`dvc exp run --queue -S 'losses.{loss}.gamma=0,0.5,1,2' && dvc queue start`, then wait for "
            "`dvc queue status` to show them done"
        )
    table = draw_sweep(points, loss, root / SWEEP_FIGURE)
    write_with(root / SWEEP_TABLE, lambda path: table.round(4).to_csv(path, index=False))
    console.print(table.round(4).to_string(index=False))
    best = table.sort_values("acc_mean").iloc[-1]
    console.print(
        f"[bold]sweep-report[/]: best mean test accuracy at γ={best['gamma']:g} "
        f"({best['acc_mean']:.4f}); wrote {SWEEP_FIGURE} and {SWEEP_TABLE}"
    )
    return table
