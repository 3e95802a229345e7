"""Stage publish@NAME: one loss's seeds gathered where git, `dvc metrics/plots`
and the reports see them.

Each seed is trained by its own stage, train@NAME-SEED, into a DVC-cached
folder data/runs/NAME/seedSEED (which is what lets the run-cache hand a seed
to another machine). This stage gathers the seeds params.yaml lists and
writes, each file declared as its own output (so the pipeline owns exactly the
files it writes, and a file of yours beside them is never touched):

- metrics/NAME.json: the few numbers people compare (`dvc metrics show/diff`);
- metrics/details/NAME.json: everything else, per seed and summarised;
- plots/history/NAME.csv, plots/calibration/NAME.csv, plots/confusion/NAME.csv.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console

from lossbench.errors import DamagedInput, MissingInput, shown
from lossbench.evaluation import SEED_METRICS
from lossbench.jsonfile import read_json
from lossbench.params import Params, require_loss
from lossbench.restore import another_runs_files, locked_stages, recorded_hash
from lossbench.result_files import SeedRunMetrics, loss_of, parsed, seed_numbers
from lossbench.stats import summarize
from lossbench.storage import PublishedFiles, SeedRunFiles, output_set

# What every seed of a loss must share; a seed trained otherwise is stale.
SHARED_KEYS = ("loss", "label", "classes", "train_samples", "test_samples", "settings")


def published_files(root: Path, name: str) -> list[Path]:
    return PublishedFiles.of(root, name).all()


def read_seed_run(files: SeedRunFiles, name: str, seed: int) -> dict[str, Any]:
    """data/runs/NAME/seedN/metrics.json, checked (runfiles.SeedRunMetrics):
    what train@NAME-N wrote, with the one seed N; as written, for publish to gather."""
    for path in (files.metrics, files.history, files.calibration, files.predictions):
        if not path.is_file():
            raise MissingInput(f"{path} is missing: run `dvc repro train@{name}-{seed}` first")
    where = str(files.metrics)
    value = read_json(files.metrics)
    run = parsed(SeedRunMetrics, value, where)
    if run.loss != name:
        raise DamagedInput(f"{where}: loss is not {shown(name)}: {another_runs_files(name, seed)}")
    if run.seeds != [seed]:
        raise DamagedInput(f"{where}: seeds is {run.seeds}, not [{seed}]: {another_runs_files(name, seed)}")
    seed_numbers(run.per_seed, where, [seed], len(run.classes))
    loss_of(run.settings, where)
    assert isinstance(value, dict)  # a SeedRunMetrics
    return value


def gather_seeds(params: Params, name: str, root: Path) -> tuple[dict[str, Any], list[SeedRunFiles]]:
    """The loss's run over every seed params.yaml lists, in that order: the
    shared keys of its seed runs and `per_seed` merged; and the seeds' folders."""
    seeds = params.seeds
    folders = [SeedRunFiles.of(root, name, seed) for seed in seeds]
    runs = [read_seed_run(folder, name, seed) for folder, seed in zip(folders, seeds, strict=True)]
    first = runs[0]
    for seed, run in zip(seeds[1:], runs[1:], strict=True):
        differing = [key for key in SHARED_KEYS if run[key] != first[key]]
        if differing:
            raise DamagedInput(
                f"{folders[seeds.index(seed)].metrics}: seed {seed} was trained with another "
                f"{differing[0]} than seed {seeds[0]}: run `dvc repro` to retrain the stale seed"
            )
    gathered = {key: first[key] for key in SHARED_KEYS} | {
        "seeds": list(seeds),
        "per_seed": {key: value for run in runs for key, value in run["per_seed"].items()},
    }
    return gathered, folders


def _listing(folder: Path) -> list[dict[str, str]]:
    """The folder's files as DVC lists them in a .dir object: md5 and relative path, by path."""
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    return [
        {"md5": hashlib.md5(path.read_bytes()).hexdigest(), "relpath": path.relative_to(folder).as_posix()}
        for path in files
    ]


def _cached_listing(root: Path, dir_hash: str) -> list[dict[str, str]] | None:
    """The .dir object dvc.lock names, from the project's DVC cache, if it is there."""
    digest = dir_hash.removesuffix(".dir")
    try:
        listing = json.loads((root / ".dvc/cache/files/md5" / digest[:2] / f"{digest[2:]}.dir").read_text())
    except (OSError, ValueError):
        return None
    return listing if isinstance(listing, list) else None


def check_matches_lock(
    root: Path, stages: dict[str, Any], name: str, seed: int, folder: SeedRunFiles
) -> None:
    """Refuse a seed run whose files are not what dvc.lock records for
    train@NAME-SEED: one edited by hand, or pulled from a remote that was not
    verified. `stages`: dvc.lock's, read once per publish. Hashing a seed's few
    small files costs milliseconds. A run made outside DVC (no record in
    dvc.lock) is not checked."""
    recorded = recorded_hash(stages, name, seed)
    if recorded is None:
        return
    listing = _listing(folder.folder)
    digest = hashlib.md5(json.dumps(listing, sort_keys=True).encode()).hexdigest()  # as DVC hashes a folder
    if f"{digest}.dir" == recorded:
        return
    # Name the file that differs where the DVC cache holds the recorded listing.
    recorded_files = {
        str(entry.get("relpath")): entry.get("md5") for entry in _cached_listing(root, recorded) or []
    }
    found_files = {entry["relpath"]: entry["md5"] for entry in listing}
    differing = sorted(
        path
        for path in recorded_files.keys() | found_files.keys()
        if recorded_files.get(path) != found_files.get(path)
    )
    what = folder.folder / differing[0] if recorded_files and differing else folder.folder
    stage = f"train@{name}-{seed}"
    raise DamagedInput(
        f"{what}: not the file dvc.lock records for {stage} (edited, damaged, or pulled from an "
        f"unverified remote); remove {folder.folder} and run `dvc pull {stage}`, or `dvc repro {stage}`"
    )


def details(run: dict[str, Any]) -> dict[str, Any]:
    """A loss's gathered run with each seed number summarised over seeds."""
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
        "ece": round(summary["ece"]["mean"], 4),
        "conv_ep": round(summary["convergence_epoch"]["mean"], 1),
        "at_chance": len(summary["at_chance"]),
    }


def _stacked(paths: list[Path]) -> pd.DataFrame:
    # pandas' default float parser reads back what to_csv wrote, bit for bit (tested by the
    # default's rerun: plots/history/*.csv equal the seed stages' files)
    return pd.concat([pd.read_csv(path) for path in paths], ignore_index=True)


def publish(params: Params, name: str, root: Path, console: Console) -> list[Path]:
    require_loss(params, name)
    gathered, folders = gather_seeds(params, name, root)
    stages = locked_stages(root)
    for seed, folder in zip(params.seeds, folders, strict=True):
        check_matches_lock(root, stages, name, seed, folder)
    summary = details(gathered)
    history = _stacked([folder.history for folder in folders])
    calibration = _stacked([folder.calibration for folder in folders])
    published = PublishedFiles.of(root, name)
    with output_set() as files:  # all five or none
        files.write_json(published.headline, headline(summary))
        files.write_json(published.details, summary)
        files.write_with(published.history, lambda path: history.to_csv(path, index=False))
        files.write_with(published.calibration, lambda path: calibration.to_csv(path, index=False))
        first_seed_predictions = pd.read_csv(folders[0].predictions)
        files.write_with(published.confusion, lambda path: first_seed_predictions.to_csv(path, index=False))
    shown = headline(summary)
    console.print(
        f"[bold]publish@{name}[/]: {len(folders)} seed(s), test acc {shown['test_acc']:.4f} ± "
        f"{shown['test_sd']:.4f}, ECE {shown['ece']:.4f}, {shown['at_chance']} run(s) at chance; wrote "
        + ", ".join(str(path.relative_to(root)) for path in published.all())
    )
    return published.all()
