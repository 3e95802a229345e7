"""Stage report: compare the losses seed by seed, draw the study's figures, test its claims.

Reads what publish@NAME wrote for every loss (results.load_results) and
writes plots/report.md with its tables and verdicts, the figures (figures.py),
the overlay table for `dvc plots show`, the significance table and
metrics/details/summary.json. Runs that stayed at chance are named, and every
verdict is also given without them. Labels say what each run was trained with
(its recorded settings); a run params.yaml has changed since is named.

`report` goes down the layers once: read (`read_results`), find (`find`: the
ranking, the tables of numbers, the claims), write the text and draw the
figures, then write every file as one set: a failure leaves every previous
file as it was.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from lossbench import figures, temperature
from lossbench.errors import MissingInput, shown
from lossbench.findings import Findings, find, summary_of
from lossbench.params import Params
from lossbench.publish import published_files
from lossbench.report_tables import overlay_table
from lossbench.report_text import ACCURACY_FIGURE, CURVES_FIGURE, RELIABILITY_FIGURE, report_text
from lossbench.results import LossResult, load_results, read_class_counts
from lossbench.staleness import trained_otherwise
from lossbench.storage import CLASS_COUNTS_FILE, METRICS_DIR, PLOTS_DIR, PublishedFiles, output_set

CURVES_TABLE = PLOTS_DIR / "curves.csv"
SIGNIFICANCE_TABLE = PLOTS_DIR / "significance.csv"
REPORT_FILE = PLOTS_DIR / "report.md"
SUMMARY_FILE = METRICS_DIR / "summary.json"


def foreign_files(params: Params, root: Path) -> list[Path]:
    """Files in the folders publish@NAME writes to that no current loss owns:
    left from a loss removed from params.yaml, or put there by hand. Never
    deleted here; the report names them."""
    owned = {path for name in params.losses for path in published_files(root, name)} | {root / SUMMARY_FILE}
    folders = {path.parent for path in owned}
    return sorted(
        path
        for folder in folders
        if folder.is_dir()
        for path in folder.iterdir()
        if path.is_file() and path not in owned
    )


def read_results(params: Params, root: Path, console: Console) -> tuple[list[LossResult], dict[str, Any]]:
    """Every loss's published results and the class counts, checked against each
    other; a run trained otherwise than params.yaml now says is named."""
    results = load_results(params, root)
    class_counts = read_class_counts(root / CLASS_COUNTS_FILE)
    classes = list(class_counts["train"])
    for r in results:
        if r.run["classes"] != classes:
            raise MissingInput(
                f"{PublishedFiles.of(root, r.name).details} was trained on other classes than {CLASS_COUNTS_FILE} "
                "lists: run `dvc repro`"
            )
    for r in results:
        note = trained_otherwise(params, r)
        if note is not None:
            console.print(f"  {note}", markup=False, highlight=False)
    return results, class_counts


def report(params: Params, root: Path, console: Console) -> dict[str, Any]:
    results, class_counts = read_results(params, root, console)
    findings = find(params, results, class_counts, temperature.load_scaled(results, root))
    if not findings.numerics.consistent:
        console.print(f"  note: {findings.numerics.text()}", markup=False, highlight=False)
    summary = summary_of(params, findings)
    overlay = overlay_table(results)
    text = report_text(params, results, class_counts, findings)

    chance = 1 / len(class_counts["train"])
    drawn = [
        (figures.draw_curves(results, chance, figures.data_variant(params.data)), CURVES_FIGURE, figures.DPI),
        (figures.draw_final_accuracy(results, chance), ACCURACY_FIGURE, figures.DPI),
        (figures.draw_reliability(findings.scaled), RELIABILITY_FIGURE, figures.RELIABILITY_DPI),
    ]
    # Every number, text and figure is made before the first file is written, and the
    # files are written as one set: a failure (a full disk) leaves all the previous ones.
    with figures.closing(*(figure for figure, _, _ in drawn)), output_set() as files:
        for figure, path, dpi in drawn:
            figures.save_figure(files, figure, root / path, dpi)
        files.write_with(root / CURVES_TABLE, lambda path: overlay.to_csv(path, index=False))
        files.write_with(
            root / SIGNIFICANCE_TABLE, lambda path: findings.significance.to_csv(path, index=False)
        )
        files.write_json(root / SUMMARY_FILE, summary)
        files.write_text(root / REPORT_FILE, text)

    _say_what_was_found(params, root, findings, console)
    return summary


def _say_what_was_found(params: Params, root: Path, findings: Findings, console: Console) -> None:
    """The ranking, the runs at chance, the verdicts and the files written, on the terminal."""
    for path in foreign_files(params, root):
        console.print(
            f"  note: {escape(shown(path.relative_to(root)))} is not written by this pipeline (no such loss in "
            "params.yaml); left as it is"
        )
    console.print(f"[bold]report[/]: ranking by mean final test accuracy: {' > '.join(findings.ranking)}")
    if findings.at_chance:
        runs = (
            f"{name} seed {seed} ({why})"
            for name, seeds in findings.at_chance.items()
            for seed, why in seeds.items()
        )
        console.print(f"  runs at chance: {'; '.join(runs)}", markup=False, highlight=False)
    for claim in findings.claims:
        console.print(f"  claim {claim.number}: {claim.verdict.value}")
    after = findings.scaling.verdicts("after")
    if after:
        console.print(
            "  ECE against CE after temperature scaling: "
            + ", ".join(f"{name} {verdict.value}" for name, verdict in after.items()),
            markup=False,
            highlight=False,
        )
    console.print(
        f"  wrote {REPORT_FILE}, {CURVES_FIGURE}, {ACCURACY_FIGURE}, {RELIABILITY_FIGURE}, {SUMMARY_FILE}"
    )
