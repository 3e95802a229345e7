"""`lossbench sweep-report`: accuracy and calibration against focal's γ, across
the experiments of a DVC sweep (`dvc exp run --queue -S losses.NAME.gamma=...`),
and claim 4's verdict from them.

Reads the runs `dvc exp show --json` lists, from git and the workspace
(experiments.exp_show), takes every experiment (and committed baseline) that
has results for the loss, and plots every seed's point with the seed mean.
Run it in the project or in a study's folder: it reads that folder's
params.yaml (under --rev, that commit's) and results, wherever the experiments
were run and pulled from.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import ValidationError
from rich.console import Console

from lossbench import figures, temperature
from lossbench.claims import STATEMENTS, accuracy_margin, ece_margin, gamma_claim
from lossbench.errors import DamagedInput, MissingInput, ParamsError
from lossbench.experiments import (
    exp_show,
    experiment_records,
    json_at,
    params_at,
    params_of,
    queue_command,
    run_name,
    study_prefix,
)
from lossbench.jsonfile import Field
from lossbench.losses.focal import FocalLoss
from lossbench.md import markdown_names, md
from lossbench.params import Params
from lossbench.results import LossResult
from lossbench.run_numerics import RunNumerics, numerics_of
from lossbench.runfiles import CALIBRATION_DIR, parsed_calibration
from lossbench.staleness import stale_settings, trained_but
from lossbench.storage import DETAILS_DIR, PLOTS_DIR, output_set
from lossbench.verdicts import Margin, pairwise_table, wilcoxon_note

SWEEP_FIGURE = PLOTS_DIR / "sweep.png"
SWEEP_TABLE = PLOTS_DIR / "sweep.csv"
SWEEP_REPORT = PLOTS_DIR / "sweep.md"


def _other_params(params: dict[str, Any], loss: str) -> str:
    """Everything but losses.<loss>.gamma (and how the machine ran it, and how
    the reports judge), as a comparable string."""
    rest = copy.deepcopy(params)
    rest.get("losses", {}).get(loss, {}).pop("gamma", None)
    rest.pop("machine", None)
    rest.pop("analysis", None)
    return json.dumps(rest, sort_keys=True)


def focal_gamma(record: dict[str, Any], loss: str, prefix: str = "") -> float | None:
    """The γ of losses.<loss> in a run's params.yaml if it is a focal loss there, else None;
    params of another shape (an older commit's, a hand edit) are named."""
    params = Field(params_of(record, prefix), f"{prefix}params.yaml of run {run_name(record)}")
    losses = params.get("losses")
    spec = None if losses is None else losses.get(loss)
    if spec is None or spec.mapping().get("kind") != "focal":
        return None
    return spec.child("gamma").number()


def sweep_records(
    records: list[dict[str, Any]], loss: str, prefix: str = "", left_out: list[str] | None = None
) -> list[dict[str, Any]]:
    """The runs of one sweep: of the groups of runs that share every param but
    this γ, the one with the most γ values. Runs whose params cannot be read
    are left out, each named in `left_out`."""
    groups: dict[str, set[float]] = {}
    readable = []
    for record in records:
        try:
            gamma = focal_gamma(record, loss, prefix)
        except DamagedInput as error:
            if left_out is not None:
                left_out.append(str(error))
            continue
        readable.append(record)
        if gamma is not None:
            groups.setdefault(_other_params(params_of(record, prefix), loss), set()).add(gamma)
    sweep = max(groups, key=lambda key: len(groups[key]), default=None)
    return [
        record
        for record in readable
        if sweep is not None and _other_params(params_of(record, prefix), loss) == sweep
    ]


def _run_params(record: dict[str, Any], prefix: str, left_out: list[str] | None) -> Params | None:
    """A run's params.yaml, typed; None, named in `left_out`, where it is not this project's format."""
    try:
        return Params.model_validate(params_of(record, prefix))
    except ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "the file"
        if left_out is not None:
            left_out.append(f"{prefix}params.yaml of run {run_name(record)}: {key}: {first['msg']}")
        return None


def scaled_ece(root: Path, record: dict[str, Any], loss: str, name: str) -> dict[int, float]:
    """Each seed's ECE after temperature scaling in a run (calibrate), none where it has no such file."""
    path = f"{CALIBRATION_DIR.as_posix()}/{loss}.json"
    found = json_at(root, record, path)
    if found is None:
        return {}
    calibration = parsed_calibration(found, f"{path} of run {name}")
    return {
        seed: values.after.ece
        for seed, values in zip(calibration.seeds(), calibration.per_seed.values(), strict=True)
    }


def sweep_points(
    records: list[dict[str, Any]], loss: str, root: Path, left_out: list[str] | None = None
) -> pd.DataFrame:
    """One row per (γ, seed): final test accuracy and ECE, from each run's
    metrics/details/<loss>.json. A γ and seed found in two runs (the baseline
    and an experiment, say) counts once if their numbers agree; if not, stop.
    Runs whose params cannot be read are named in `left_out`."""
    prefix = study_prefix(root)
    rows: dict[tuple[float, int], dict[str, Any]] = {}
    for record in sweep_records(records, loss, prefix, left_out):
        name, path = run_name(record), f"{DETAILS_DIR}/{loss}.json"
        details, gamma = json_at(root, record, path), focal_gamma(record, loss, prefix)
        if details is None or gamma is None:
            continue  # no results (a commit where it was not run); γ: every run of a sweep has one
        where = f"{path} of run {name}"
        run_params = _run_params(record, prefix, left_out)
        if run_params is None:
            continue
        result = LossResult.from_details(details, where)
        changed = stale_settings(run_params, loss, result)
        if changed:
            raise MissingInput(f"{where} {trained_but(changed)} (stale: rerun it, or `dvc exp remove` it)")
        scaled = scaled_ece(root, record, loss, name)
        for seed, numbers in result.per_seed.items():
            accuracy, ece = float(numbers["final_test_acc"]), float(numbers["ece"])
            row = {
                "gamma": gamma,
                "seed": seed,
                "final_test_acc": accuracy,
                "ece": ece,
                "ece_scaled": scaled.get(seed),
                "at_chance": bool(numbers.get("at_chance")),
                "experiment": name,
                "numerics": numerics_of(result.run["settings"]),
            }
            earlier = rows.setdefault((gamma, seed), row)
            if earlier is not row and name not in earlier["experiment"].split(" = "):
                earlier["experiment"] += f" = {name}"  # the same numbers, found in both
            if (earlier["final_test_acc"], earlier["ece"]) != (accuracy, ece):
                raise MissingInput(
                    f"runs {earlier['experiment']} and {name} both ran γ={gamma:g}, seed {seed} with different "
                    "results (other code?); remove one (`dvc exp remove`) or check --all-commits and --rev"
                )
    return pd.DataFrame(list(rows.values()))


def sweep_table(points: pd.DataFrame) -> pd.DataFrame:
    """One row per γ: its runs, and the seed mean and sd of accuracy and ECE."""
    table = (
        points.groupby("gamma")
        .agg(
            runs=("seed", "size"),
            acc_mean=("final_test_acc", "mean"),
            acc_std=("final_test_acc", "std"),
            ece_mean=("ece", "mean"),
            ece_std=("ece", "std"),
            ece_scaled_mean=("ece_scaled", "mean"),
            ece_scaled_std=("ece_scaled", "std"),
        )
        .reset_index()
    )
    # Runs made before the calibrate stage have no ECE after scaling: no empty columns.
    scaled = ["ece_scaled_mean", "ece_scaled_std"]
    return table.drop(columns=scaled) if table["ece_scaled_mean"].isna().all() else table


def gamma_pairs(accuracy: dict[float, dict[int, float]], margin: Margin) -> pd.DataFrame:
    """Every pair of γ on final test accuracy, paired on the seeds both have: one family for Holm."""
    pairs = []
    gammas = sorted(accuracy)
    for index, first in enumerate(gammas):
        for second in gammas[index + 1 :]:
            seeds = sorted(set(accuracy[first]) & set(accuracy[second]))
            pairs.append(
                (
                    f"γ={first:g}",
                    f"γ={second:g}",
                    [accuracy[first][seed] for seed in seeds],
                    [accuracy[second][seed] for seed in seeds],
                )
            )
    return pairwise_table(pairs, margin)


def scaling_section(points: pd.DataFrame, margin: Margin) -> str:
    """Does ECE's rise with γ survive temperature scaling? Each γ − the smallest
    γ on ECE, paired by seed, before and after scaling: one Holm family per side."""
    heading = "## ECE after temperature scaling\n\n"
    have = points.dropna(subset=["ece_scaled"])
    if have.empty:
        return heading + "No run of the sweep has calibrate's files: rerun its experiments.\n"
    # A network that never learned has no calibration to compare (T ends at its bound).
    stuck: dict[float, set[int]] = {}
    for row in have[have["at_chance"]].to_dict("records"):
        stuck.setdefault(float(row["gamma"]), set()).add(int(row["seed"]))
    have = have[~have["at_chance"]]
    if have["gamma"].nunique() < 2:
        return heading + "Fewer than two γ have a run that left chance: no calibration to compare.\n"
    values: dict[float, dict[int, tuple[float, float]]] = {}
    for row in have.to_dict("records"):
        values.setdefault(float(row["gamma"]), {})[int(row["seed"])] = (
            float(row["ece"]),
            float(row["ece_scaled"]),
        )
    base = min(values)
    cases = []
    for gamma in sorted(values)[1:]:
        seeds = sorted(set(values[gamma]) & set(values[base]))
        first, second = [values[gamma][s] for s in seeds], [values[base][s] for s in seeds]
        cases.append(
            temperature.EceCase(
                f"γ={gamma:g} − γ={base:g}"
                + temperature.without_at_chance(stuck.get(gamma, set()) | stuck.get(base, set())),
                ([b for b, _ in first], [b for b, _ in second]),
                ([a for _, a in first], [a for _, a in second]),
            )
        )
    return (
        heading
        + "Does ECE's rise with γ vanish once each network is temperature-scaled (T fitted on one half of the "
        + "test set, scored on the other, both ways)? Each γ minus the smallest, on ECE paired by seed, in points "
        + f"of ECE; Holm over the γ on each side; equivalence within {margin.written()}.\n\n"
        + "\n".join(temperature.judge_ece(cases, margin).lines())
        + "\n"
    )


def _sweep_text(
    loss: str,
    points: pd.DataFrame,
    table: pd.DataFrame,
    pairs: pd.DataFrame,
    verdict_line: str,
    params: Params,
    numerics: RunNumerics,
) -> str:
    """plots/sweep.md."""
    margin = accuracy_margin(params.analysis)
    seeds = int(points.groupby("gamma")["seed"].nunique().min())
    return (
        f"# γ sweep of losses.{md(loss)}\n\n![accuracy and ECE against γ](sweep.png)\n\n"
        + table.round(4).to_markdown(index=False)
        + f"\n\n{verdict_line}\n\n"
        + "## Every pair of γ\n\nFinal test accuracy, first minus second, paired by seed, in points: the "
        + "paired t-test's p raw and Holm-adjusted over all the pairs (one family), Wilcoxon, exact sign-flip, "
        + f"and TOST for equivalence within {margin.written()}; the detectable difference is a planning "
        + f"number, not a bound. {wilcoxon_note(seeds)}\n\n"
        + markdown_names(pairs, ["first", "second", "verdict"]).to_markdown(index=False)
        + "\n\n"
        + scaling_section(points, ece_margin(params.analysis))
        + "\n"
        + md(numerics.text())
        + "\n\nExperiments: "
        + ", ".join(
            " = ".join(md(name) for name in found.split(" = ")) for found in sorted(set(points["experiment"]))
        )
        + "\n"
    )


def _swept(
    params: Params, loss: str, root: Path, console: Console, all_commits: bool, rev: str | None
) -> tuple[Params, pd.DataFrame]:
    """The study's params (those of `--rev`'s commit, if given) and the sweep's points (`sweep_points`)."""
    shown = exp_show(root, all_commits, rev)
    if rev is not None:  # that commit's study: the workspace may have moved on
        params = params_at(root, shown, rev)
    if not isinstance(params.losses.get(loss), FocalLoss):
        raise ParamsError(
            f"losses.{loss}: sweep-report needs a focal loss; focal entries: "
            + ", ".join(n for n, s in params.losses.items() if isinstance(s, FocalLoss))
        )
    left_out: list[str] = []
    points = sweep_points(experiment_records(shown), loss, root, left_out)
    for problem in left_out:
        console.print(f"note: left out: {problem}", markup=False, highlight=False)
    if points.empty or points["gamma"].nunique() < 2:
        raise MissingInput(
            f"need results for at least two values of losses.{loss}.gamma; "
            + queue_command(params, root, f"losses.{loss}.gamma=0.0,0.5,1.0,2.0")
            + ", then wait for `dvc queue status` to show them done"
        )
    return params, points


def _without_chance(points: pd.DataFrame, margin: Margin) -> str:
    """Claim 4 again without the runs at chance (each γ on its own seeds that left it), if any."""
    stuck = points[points["at_chance"]]
    if stuck.empty:
        return ""
    live: dict[float, dict[int, float]] = {}
    for row in points[~points["at_chance"]].to_dict("records"):
        live.setdefault(float(row["gamma"]), {})[int(row["seed"])] = float(row["final_test_acc"])
    stuck_seeds: dict[float, list[int]] = {}
    for row in stuck.to_dict("records"):
        stuck_seeds.setdefault(float(row["gamma"]), []).append(int(row["seed"]))
    lost: dict[float, Sequence[int]] = {gamma: sorted(seeds) for gamma, seeds in stuck_seeds.items()}
    if len(live) < 2:
        return " *Without the runs at chance: not testable* (fewer than two γ have a run that left chance)."
    verdict, evidence = gamma_claim(live, margin, lost)
    return f" *Without the runs at chance: {verdict.value}.* {evidence}"


def sweep_report(
    params: Params, loss: str, root: Path, console: Console, all_commits: bool = False, rev: str | None = None
) -> pd.DataFrame:
    params, points = _swept(params, loss, root, console, all_commits, rev)
    numerics = RunNumerics.of(dict(zip(points["experiment"], points["numerics"], strict=True)))
    if not numerics.consistent:
        console.print(f"note: {numerics.text()}", markup=False, highlight=False)

    accuracy: dict[float, dict[int, float]] = {}
    for row in points.to_dict("records"):
        accuracy.setdefault(float(row["gamma"]), {})[int(row["seed"])] = float(row["final_test_acc"])
    margin = accuracy_margin(params.analysis)
    verdict, evidence = gamma_claim(accuracy, margin)
    evidence += _without_chance(points, margin)
    statement = STATEMENTS[3][0]
    table = sweep_table(points)
    pairs = gamma_pairs(accuracy, margin)

    figure = figures.draw_sweep(points, loss)
    text = _sweep_text(
        loss,
        points,
        table,
        pairs,
        f"Claim 4, *{statement}* **{verdict.value}.** {evidence}",
        params,
        numerics,
    )
    # Every number, text and figure is made before the first file is written; the files are one set.
    with figures.closing(figure), output_set() as files:
        figures.save_figure(files, figure, root / SWEEP_FIGURE)
        files.write_with(root / SWEEP_TABLE, lambda path: table.round(4).to_csv(path, index=False))
        files.write_text(root / SWEEP_REPORT, text)
    console.print(table.round(4).to_string(index=False))
    console.print(f"[bold]claim 4[/] ({statement}): [bold]{verdict.value}[/]. {evidence}")
    best = table.sort_values("acc_mean").iloc[-1]
    console.print(
        f"[bold]sweep-report[/]: best mean test accuracy at γ={best['gamma']:g} "
        f"({best['acc_mean']:.4f}); wrote {SWEEP_FIGURE}, {SWEEP_TABLE} and {SWEEP_REPORT}"
    )
    return table
