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
from pathlib import Path

from rich.console import Console

from lossbench import lifeline
from lossbench.checkpoint import load_saved, run_fingerprint
from lossbench.errors import ParamsError
from lossbench.params import Params
from lossbench.storage import SeedRunFiles
from lossbench.train import SeedJob
from lossbench.train_stage import finished_ahead

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


def chains_ahead(params: Params, train_images: int, run: Run) -> bool:
    """True if a stage that trains should then train and evaluate, in its own process, the
    stale seeds whose stages come after it: seeds too small for a worker each (below
    AHEAD_FROM_IMAGE_EPOCHS), in a dvc run that will run all their stages. Each of those
    stages then moves its finished files into place without importing torch, which takes
    longer than training such a seed (benchmarks/results.md)."""
    return (
        run.whole
        and not os.environ.get(WORKERS_VARIABLE)
        and params.machine.workers in (0, 1)
        and train_images * params.train.epochs < AHEAD_FROM_IMAGE_EPOCHS
    )


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


# `dvc exp run`'s options that take a value (the next word, or after "=").
_EXP_RUN_VALUED = frozenset(["-S", "--set-param", "-n", "--name", "-m", "--message", "-C", "--copy-paths"])


@dataclass(frozen=True)
class Run:
    """The `dvc repro` this stage is part of, as far as look-ahead needs it."""

    forced: bool  # `dvc repro -f` of the whole pipeline: every stage reruns
    started: float  # when the dvc process started (seconds since the epoch); 0 when unknown
    whole: bool = False  # it runs every stale stage of the pipeline, in this workspace
    dvc: str = ""  # the dvc process's identity (pid and start time); "" outside DVC

    @classmethod
    def here(cls) -> Run:
        found = lifeline.dvc_process()
        if found is None:
            return cls(forced=False, started=0.0)
        return cls(
            forces_every_stage(found.arguments),
            found.started,
            runs_every_stale_stage(found.arguments),
            found.identity,
        )


def runs_every_stale_stage(arguments: list[str]) -> bool:
    """True for `dvc repro` or `dvc exp run` in the workspace whose only targets (if any)
    are whole pipelines (a dvc.yaml): then every stale stage runs, one after another, in
    this dvc process. Queued, temporary and dry runs, targeted stages and any option not
    known here are not guessed at."""
    if arguments[:1] == ["repro"]:
        words, valued = arguments[1:], frozenset[str]()
    elif arguments[:2] == ["exp", "run"]:
        words, valued = arguments[2:], _EXP_RUN_VALUED
    else:
        return False
    known = (_REPRO_FLAGS - {"--dry"}) | valued
    position = 0
    while position < len(words):
        word = words[position]
        option = word.split("=", 1)[0]
        if option in valued:
            position += 1 if "=" in word else 2
            continue
        if word.startswith("-"):
            if not (word in known or _short_flags(word)) or word in ("-s", "--single-item"):
                return False
        elif Path(word).name != "dvc.yaml":
            return False  # a stage: only it and its upstream run
        position += 1
    return True


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
    checkpoint or run finished ahead in this run waits for it."""
    written = SeedRunFiles.of(job.root, job.name, job.seed).fingerprint
    try:
        current = written.read_text(encoding="utf-8").strip() == job.fingerprint and not (
            run.forced and written.stat().st_mtime < run.started
        )
    except (OSError, UnicodeDecodeError):
        current = False
    return (
        not current
        and not trained_ahead(job)
        and not finished_ahead(job.params, job.root, job.name, job.seed, run.dvc)
    )


def trained_ahead(job: SeedJob) -> bool:
    """True if the seed's finished checkpoint, made from these inputs, waits for its
    stage (an earlier stage trained it ahead): the stage only evaluates it."""
    saved = load_saved(job.checkpoint, job.fingerprint, Console(quiet=True))
    return saved is not None and len(saved["history"]) >= job.params.train.epochs


def seeds_ahead(
    params: Params, job: SeedJob, inputs: bytes, count: int, run: Run, every: bool = False
) -> list[SeedJob]:
    """Up to `count` seeds whose stages will have to train: first this loss's
    other seeds (DVC runs a loss's seed stages in an order of its own, and a
    targeted `dvc repro train@ce-2 train@ce-1` wants ce 1 next), then the
    seeds after this one in the pipeline's order (dvc.yaml's matrix: loss by
    loss, seed by seed); with `every`, then those before it too (DVC may order
    stages otherwise)."""
    order = [(name, seed) for name in params.losses for seed in params.seeds]
    position = order.index((job.name, job.seed)) if (job.name, job.seed) in order else len(order)
    same_loss = [(job.name, seed) for seed in params.seeds if seed != job.seed]
    later = [(name, seed) for name, seed in order[position + 1 :] if name != job.name]
    earlier = [(name, seed) for name, seed in order[:position] if name != job.name] if every else []
    ahead: list[SeedJob] = []
    for name, seed in same_loss + later + earlier:
        if len(ahead) == count:
            break
        candidate = SeedJob(params, name, seed, job.root, run_fingerprint(params, name, seed, inputs))
        if is_stale(candidate, run):
            ahead.append(candidate)
    return ahead
