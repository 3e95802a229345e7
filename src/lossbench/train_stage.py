"""Stage train@NAME-SEED: train the protocol network with one loss and one seed.

One seed of one loss is the unit DVC runs and caches (dvc.yaml's matrix), so
adding a seed trains only that seed, and the run-cache carries each seed to
another machine. DVC runs one stage at a time; so that every core still
works, the stage also trains the next seeds their stages will train "ahead",
one worker process per core (lookahead.py), leaving their finished
checkpoints for their own stages, which then only evaluate and write
(seed_run.py). A seed's run depends only on its seed and the params, never on
which process trains it or how many run at once, so the metrics are the same
on any machine (tested). After every epoch a seed's full training state goes
to a checkpoint, and its epochs so far to data/live/NAME/seedN.csv (`dvc
plots show data/live` draws them mid-run); an interrupted stage (Ctrl-C,
SIGTERM, SIGKILL, its dvc process killed) resumes from there.

A seed too small for a worker of its own trains in less time than a process
takes to import torch. When DVC runs every stale stage, the first stage that
trains such a seed then trains and evaluates, one after another in its own
process, the stale seeds whose stages come after it; each of those stages
finds its seed's files finished (data/checkpoints/NAME/seed-N.finished) and
only moves them into place, without importing torch.

This module is the stage's frame: what it loads, schedules, shows and puts
back. The loop is train.py; the stage's dvc.yaml deps are the code training
computes with, not this frame (seed_run.STAGE_PLUMBING).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import io
import json
import shutil
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from lossbench import lifeline
from lossbench.errors import DamagedInput, LossbenchError, OutputWriteError, TrainingInterrupted
from lossbench.params import Params, loss_label, require_loss
from lossbench.restore import restore_previous_run
from lossbench.storage import (
    CHECKPOINT_DIR,
    PREPARED_DIR,
    PreparedData,
    SeedRunFiles,
    load_prepared,
    write_json,
)

if TYPE_CHECKING:
    import torch

    from lossbench.train import SeedJob

# In a seed's folder finished ahead: which dvc process and params it was made under.
MADE_UNDER = "made-under.json"


def finished_folder(root: Path, name: str, seed: int) -> Path:
    """Where an earlier stage leaves a seed it trained and evaluated ahead."""
    return root / CHECKPOINT_DIR / name / f"seed-{seed}.finished"


def _made_under(params: Params, dvc: str) -> dict[str, str]:
    return {"dvc": dvc, "params": hashlib.sha256(params.model_dump_json().encode()).hexdigest()}


def finished_ahead(params: Params, root: Path, name: str, seed: int, dvc: str) -> dict[str, Any] | None:
    """What the seed's folder finished ahead records, if it was made by this dvc process
    (`dvc`, its identity) under these params; one from any other run is removed."""
    folder = finished_folder(root, name, seed)
    try:
        made = json.loads((folder / MADE_UNDER).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        made = None
    if (
        isinstance(made, dict)
        and dvc
        and {key: made.get(key) for key in ("dvc", "params")} == _made_under(params, dvc)
        and all(isinstance(made.get(key), str) for key in ("by", "said"))
    ):
        return made
    if folder.exists():  # unfinished, or from another run: never used
        shutil.rmtree(folder, ignore_errors=True)
    return None


def _move_finished_into_place(
    params: Params, name: str, seed: int, root: Path, console: Console
) -> dict[str, Any] | None:
    """The seed's metrics, if an earlier stage of this dvc run trained and evaluated it
    ahead: its files go into data/runs/NAME/seedN as they are."""
    found = lifeline.dvc_process()
    made = finished_ahead(params, root, name, seed, found.identity if found else "")
    if made is None:
        return None
    folder, files = finished_folder(root, name, seed), SeedRunFiles.of(root, name, seed)
    (folder / MADE_UNDER).unlink()
    if files.folder.exists():  # DVC removes a stage's outputs before it runs; a leftover goes too
        shutil.rmtree(files.folder)
    files.folder.parent.mkdir(parents=True, exist_ok=True)
    folder.rename(files.folder)
    console.print(
        f"[bold]train@{name}-{seed}[/]: {loss_label(params.losses[name])}, seed {seed}: trained and "
        f"evaluated ahead by {escape(made['by'])} in this dvc run; its files moved into place",
        highlight=False,
    )
    console.print(made["said"], markup=False, highlight=False)
    try:
        metrics: dict[str, Any] = json.loads(files.metrics.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise DamagedInput(f"{files.metrics}: not this run's metrics ({error.__class__.__name__})") from None
    return metrics


def train(params: Params, name: str, seed: int, root: Path, console: Console) -> dict[str, Any]:
    """Train loss `name` of params.losses with `seed`; write its weights,
    metrics, history, calibration bins and test predictions. If it fails, the
    previous run that DVC removed before the stage comes back."""
    try:
        require_loss(params, name)
        moved = _move_finished_into_place(params, name, seed, root, console)
        if moved is not None:
            return moved
        # The prepared data is checked before torch is imported: a missing or
        # damaged file is said in a fraction of a second.
        data = load_prepared(root / PREPARED_DIR)
        return _train(params, name, seed, root, data, console)
    except BaseException:
        note = restore_previous_run(root, name, seed)
        if note:
            console.print(note, markup=False, highlight=False)
        raise


def _train(
    params: Params, name: str, seed: int, root: Path, data: PreparedData, console: Console
) -> dict[str, Any]:
    import torch

    from lossbench.checkpoint import run_fingerprint
    from lossbench.lookahead import (
        Run,
        available_cores,
        chains_ahead,
        is_stale,
        seeds_ahead,
        trained_ahead,
        worker_count,
    )
    from lossbench.progress import TrainingProgress
    from lossbench.seed_run import evaluate_seed, training_inputs, write_seed_run, write_timings
    from lossbench.seed_workers import run_in_workers
    from lossbench.train import DeviceData, SeedJob, resolve_device, train_job, train_seed, use_threads

    # Imports done: the cycle collector back on for training, where the lossbench command
    # turned it off for start-up (lossbench.__main__), leaving what exists by now, the
    # imported modules, out of every collection. A caller's own process is left as it is.
    if not gc.isenabled():
        gc.freeze()
        gc.enable()
    config = params.train
    device = resolve_device(config.device)
    use_threads(params)
    lifeline.stop_when_ancestors_die()

    inputs = training_inputs(root, device)
    job = SeedJob(params, name, seed, root, run_fingerprint(params, name, seed, inputs))
    workers = worker_count(params, available_cores(), len(data.train_labels))
    # Ahead only while this seed trains too: a stage that finds its seed
    # already trained ahead just evaluates it, and the next stale one trains
    # ahead in turn (2 cores, 4 seeds: 1+2, -, 3+4, -).
    run = Run.here()
    train_here = is_stale(job, run)
    ahead = seeds_ahead(params, job, inputs, workers - 1, run) if train_here and device.type == "cpu" else []
    # Tiny seeds: the stale ones after this, here, one after another, once this one is written.
    chained = (
        seeds_ahead(params, job, inputs, len(params.losses) * len(params.seeds), run, every=True)
        if train_here
        and device.type == "cpu"
        and workers == 1
        and chains_ahead(params, len(data.train_labels), run)
        else []
    )
    console.print(
        f"[bold]train@{name}-{seed}[/]: {loss_label(params.losses[name])}, seed {seed}, "
        f"{len(data.train_labels)} train / {len(data.test_labels)} test images, {config.epochs} epochs "
        f"on {device.type}, {torch.get_num_threads()} thread(s)"
        + (
            f"; training ahead on idle cores: {', '.join(f'{j.name} seed {j.seed}' for j in ahead)}"
            if ahead
            else ""
        )
        + (
            f"; then, in this process (tiny seeds): {', '.join(f'{j.name} seed {j.seed}' for j in chained)}"
            if chained
            else ""
        ),
        highlight=False,
    )
    if not train_here and trained_ahead(job):  # no bar: it would stand at 0 epochs
        console.print(
            f"  {name} seed {seed}: already trained, {config.epochs}/{config.epochs} epochs in its "
            "checkpoint (trained ahead); evaluating it",
            highlight=False,
        )
    else:
        with TrainingProgress(console, config.epochs) as progress:
            if ahead:
                jobs = [job, *ahead]
                for each in jobs:
                    progress.add(each.name, each.seed)
                failed_ahead = run_in_workers(
                    jobs,
                    len(jobs),
                    train_job,
                    lambda each, record: progress.epoch(each.name, record),
                    optional=lambda each: each is not job,  # its own stage will meet the failure again
                )
                for message in failed_ahead:
                    console.print(f"  note (a seed trained ahead): {message}", markup=False, highlight=False)
            else:
                device_data = DeviceData.load(params, name, root)
                progress.add(name, seed)
                train_seed(
                    job,
                    device_data.training,
                    device_data.test,
                    device_data.loss_fn,
                    console,
                    partial(progress.epoch, name),
                )
                del device_data  # the training pixels are not needed to evaluate

    seed_run = evaluate_seed(job, data, device, console)
    write_seed_run(SeedRunFiles.of(root, name, seed), seed_run, job.fingerprint)
    try:
        write_timings(root, job, seed_run.history)
    except OutputWriteError as error:  # only a log: the run is written
        console.print(f"  note: the training time is not logged: {error}", markup=False, highlight=False)
    _clear_training_files(job)
    if chained:
        _finish_ahead(
            chained, data, device, _made_under(params, run.dvc) | {"by": f"train@{name}-{seed}"}, console
        )
    return seed_run.metrics


def _clear_training_files(job: SeedJob) -> None:
    """A written seed's checkpoint and live history."""
    job.checkpoint.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # only a view; its training said any failure
        job.live_history.unlink(missing_ok=True)


def _finish_ahead(
    jobs: list[SeedJob], data: PreparedData, device: torch.device, made: dict[str, str], console: Console
) -> None:
    """Train and evaluate each seed in turn, leaving its files for its own stage. A seed
    that fails is only noted: its own stage meets the failure again."""
    from lossbench.progress import TrainingProgress
    from lossbench.seed_run import evaluate_seed, write_seed_run, write_timings
    from lossbench.train import DeviceData, train_seed

    with TrainingProgress(console, jobs[0].params.train.epochs) as progress:
        for each in jobs:
            progress.add(each.name, each.seed)
        for each in jobs:
            folder = finished_folder(each.root, each.name, each.seed)
            try:
                device_data = DeviceData.load(each.params, each.name, each.root)
                train_seed(
                    each,
                    device_data.training,
                    device_data.test,
                    device_data.loss_fn,
                    console,
                    partial(progress.epoch, each.name),
                )
                said = Console(file=io.StringIO(), record=True, width=200)
                seed_run = evaluate_seed(each, data, device, said)
                shutil.rmtree(folder, ignore_errors=True)
                write_seed_run(SeedRunFiles(folder), seed_run, each.fingerprint)
                write_json(folder / MADE_UNDER, made | {"said": said.export_text().strip()})
            except TrainingInterrupted:
                raise
            except (LossbenchError, OSError, RuntimeError) as error:
                shutil.rmtree(folder, ignore_errors=True)
                console.print(f"  note (a seed trained ahead): {error}", markup=False, highlight=False)
                continue
            with contextlib.suppress(OutputWriteError):  # only a log: the run is written
                write_timings(each.root, each, seed_run.history)
            _clear_training_files(each)
