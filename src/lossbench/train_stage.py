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

This module is the stage's frame: what it loads, schedules, shows and puts
back. The loop is train.py; the stage's dvc.yaml deps are the code training
computes with, not this frame (seed_run.STAGE_PLUMBING).
"""

from __future__ import annotations

import contextlib
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console

from lossbench.errors import OutputWriteError
from lossbench.params import Params, loss_label, require_loss
from lossbench.restore import restore_previous_run
from lossbench.storage import PREPARED_DIR, PreparedData, SeedRunFiles, load_prepared


def train(params: Params, name: str, seed: int, root: Path, console: Console) -> dict[str, Any]:
    """Train loss `name` of params.losses with `seed`; write its weights,
    metrics, history, calibration bins and test predictions. If it fails, the
    previous run that DVC removed before the stage comes back."""
    try:
        require_loss(params, name)
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

    from lossbench import lifeline
    from lossbench.checkpoint import run_fingerprint
    from lossbench.lookahead import Run, available_cores, is_stale, seeds_ahead, trained_ahead, worker_count
    from lossbench.progress import TrainingProgress
    from lossbench.seed_run import evaluate_seed, training_inputs, write_seed_run, write_timings
    from lossbench.seed_workers import run_in_workers
    from lossbench.train import DeviceData, SeedJob, resolve_device, train_job, train_seed, use_threads

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
    console.print(
        f"[bold]train@{name}-{seed}[/]: {loss_label(params.losses[name])}, seed {seed}, "
        f"{len(data.train_labels)} train / {len(data.test_labels)} test images, {config.epochs} epochs "
        f"on {device.type}, {torch.get_num_threads()} thread(s)"
        + (
            f"; training ahead on idle cores: {', '.join(f'{j.name} seed {j.seed}' for j in ahead)}"
            if ahead
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
    job.checkpoint.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # only a view; its training said any failure
        job.live_history.unlink(missing_ok=True)
    return seed_run.metrics
