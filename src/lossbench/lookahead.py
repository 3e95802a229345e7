"""Which seeds a training stage trains ahead, and how many at once.

DVC runs one stage at a time. So that every core still works, a training
stage also trains the next seeds that their own stages will have to train,
one worker process per core, and leaves their finished checkpoints for those
stages, which then only evaluate and write. A seed's run depends only on its
seed and the params, never on which process trains it, so training ahead
changes no number.

A seed will have to train when its stage has no output made from these
inputs, or when `dvc repro -f` forces every stage and its stage has not yet
run in this `dvc repro` (its output is older than the dvc process).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from rich.console import Console

from lossbench import lifeline
from lossbench.checkpoint import load_saved, run_fingerprint
from lossbench.errors import ParamsError
from lossbench.params import Params
from lossbench.storage import SeedRunFiles
from lossbench.train import SeedJob

# Set by `lossbench run` for its tasks: each task has one core, so trains no seed ahead.
WORKERS_VARIABLE = "LOSSBENCH_WORKERS"


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# Training images x epochs of one seed below which a seed is not trained ahead
# unless machine.workers asks for it. Training ahead starts a forkserver, which
# imports torch once more (about 2 s of a core); a seed of fewer image-epochs
# trains in less than that (an epoch of 12,000 images: 0.45 s on one Zen 4 core,
# benchmarks/results.md), so a tiny pipeline runs faster without.
AHEAD_FROM_IMAGE_EPOCHS = 50_000


def worker_count(params: Params, cores: int, train_images: int) -> int:
    """Seeds trained at once: $LOSSBENCH_WORKERS, machine.workers, or as many
    as the cores hold at train.threads each (one for a tiny seed)."""
    variable = os.environ.get(WORKERS_VARIABLE, "")
    if variable:
        if not variable.isdigit() or int(variable) < 1:
            raise ParamsError(f"{WORKERS_VARIABLE}: {variable!r} is not a whole number of at least 1")
        return int(variable)
    if params.machine.workers:
        return params.machine.workers
    if train_images * params.train.epochs < AHEAD_FROM_IMAGE_EPOCHS:
        return 1
    threads = params.train.threads or cores  # 0: torch's default, every core
    return max(1, cores // threads)


# `dvc repro`'s options, all flags; any other word is a target.
_REPRO_FLAGS = frozenset(
    [
        "-q",
        "-v",
        "-f",
        "-i",
        "-s",
        "-p",
        "-P",
        "-R",
        "--quiet",
        "--verbose",
        "--force",
        "--interactive",
        "--single-item",
        "--pipeline",
        "--all-pipelines",
        "--recursive",
        "--downstream",
        "--force-downstream",
        "--pull",
        "--allow-missing",
        "--dry",
        "-k",
        "--keep-going",
        "--ignore-errors",
        "--glob",
        "--no-commit",
        "--no-run-cache",
    ]
)


@dataclass(frozen=True)
class Run:
    """The `dvc repro` this stage is part of, as far as look-ahead needs it."""

    forced: bool  # `dvc repro -f` of the whole pipeline: every stage reruns
    started: float  # when the dvc process started (seconds since the epoch); 0 when unknown

    @classmethod
    def here(cls) -> Run:
        found = lifeline.dvc_process()
        if found is None:
            return cls(forced=False, started=0.0)
        arguments, started = found
        return cls(forces_every_stage(arguments), started)


def forces_every_stage(arguments: list[str]) -> bool:
    """True for `dvc repro -f` (or --force) with no target: every stage of the
    pipeline reruns. With targets only theirs and their upstream stages do, and a
    command other than plain options (`dvc exp run`, an unknown option) is not
    guessed at."""
    if not arguments or arguments[0] != "repro":
        return False
    options = arguments[1:]
    if not all(option in _REPRO_FLAGS or _short_flags(option) for option in options):
        return False
    return any(option == "--force" or (_short_flags(option) and "f" in option) for option in options)


def _short_flags(option: str) -> bool:
    """-fs: several of repro's one-letter flags together."""
    return (
        len(option) > 1
        and option[0] == "-"
        and option[1] != "-"
        and all(f"-{letter}" in _REPRO_FLAGS for letter in option[1:])
    )


def is_stale(job: SeedJob, run: Run) -> bool:
    """True if the seed's stage will have to train: it has no output made from
    these inputs (or, in a forced run, none made by this run), and no finished
    checkpoint waits for it."""
    written = SeedRunFiles.of(job.root, job.name, job.seed).fingerprint
    try:
        current = written.read_text(encoding="utf-8").strip() == job.fingerprint and not (
            run.forced and written.stat().st_mtime < run.started
        )
    except (OSError, UnicodeDecodeError):
        current = False
    return not current and not trained_ahead(job)


def trained_ahead(job: SeedJob) -> bool:
    """True if the seed's finished checkpoint, made from these inputs, waits for its
    stage (an earlier stage trained it ahead): the stage only evaluates it."""
    saved = load_saved(job.checkpoint, job.fingerprint, Console(quiet=True))
    return saved is not None and len(saved["history"]) >= job.params.train.epochs


def seeds_ahead(params: Params, job: SeedJob, inputs: bytes, count: int, run: Run) -> list[SeedJob]:
    """Up to `count` seeds whose stages will have to train: first this loss's
    other seeds (DVC runs a loss's seed stages in an order of its own, and a
    targeted `dvc repro train@ce-2 train@ce-1` wants ce 1 next), then the
    seeds after this one in the pipeline's order (dvc.yaml's matrix: loss by
    loss, seed by seed)."""
    order = [(name, seed) for name in params.losses for seed in params.seeds]
    position = order.index((job.name, job.seed)) if (job.name, job.seed) in order else len(order)
    same_loss = [(job.name, seed) for seed in params.seeds if seed != job.seed]
    later = [(name, seed) for name, seed in order[position + 1 :] if name != job.name]
    ahead: list[SeedJob] = []
    for name, seed in same_loss + later:
        if len(ahead) == count:
            break
        candidate = SeedJob(params, name, seed, job.root, run_fingerprint(params, name, seed, inputs))
        if is_stale(candidate, run):
            ahead.append(candidate)
    return ahead
