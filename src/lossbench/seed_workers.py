"""Seeds trained side by side: one worker process per seed, as many at once as asked.

Workers fork from a `forkserver` that has imported the training code once (no
torch import per seed, no threads or locks inherited from the stage process).
Each reports one outcome; a failed seed stops the others, and so does Ctrl-C
or SIGTERM, after every worker has finished the checkpoint it was writing.
Each worker dies with its stage (`lifeline.die_with_parent`).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import wait
from typing import Any, Protocol, TypeVar

from lossbench import lifeline
from lossbench.errors import LossbenchError, TrainingInterrupted

# Seconds a stopped worker gets to finish writing its checkpoint before it is killed.
STOP_GRACE_S = 30.0


class Job(Protocol):
    """What a worker is handed: picklable, and named by its loss and seed."""

    @property
    def name(self) -> str: ...

    @property
    def seed(self) -> int: ...


JobType = TypeVar("JobType", bound=Job)


def _stop_once(signum: int, frame: object) -> None:
    """SIGINT or SIGTERM in a worker: stop, and ignore the second signal that a
    Ctrl-C to the process group plus the stage's own stop request make."""
    _ignore_stop_signals()
    raise KeyboardInterrupt


def _ignore_stop_signals() -> None:
    # A Python no-op rather than SIG_IGN: a signal already on its way would
    # otherwise surface as "OSError: Signal 15 ignored due to race condition".
    signal.signal(signal.SIGINT, _already_stopping)
    signal.signal(signal.SIGTERM, _already_stopping)


def _already_stopping(signum: int, frame: object) -> None:
    return None


def _worker(job: JobType, train_one: Callable[[JobType], object], outcomes: Any) -> None:
    """A worker process: run `train_one(job)`, report ('done' | 'interrupted' | 'failed', message)."""
    lifeline.die_with_parent()
    signal.signal(signal.SIGTERM, _stop_once)
    signal.signal(signal.SIGINT, _stop_once)
    try:
        train_one(job)
    except TrainingInterrupted as error:
        outcomes.put((job.seed, "interrupted", str(error)))
        sys.exit(130)
    except KeyboardInterrupt:  # before training started: nothing to save
        outcomes.put((job.seed, "interrupted", f"train@{job.name}: seed {job.seed} stopped before training"))
        sys.exit(130)
    except LossbenchError as error:
        outcomes.put((job.seed, "failed", str(error)))
        sys.exit(1)
    except Exception as error:  # a defect or damaged data: say what, not "killed, or out of memory?"
        first_line = str(error).splitlines()[0] if str(error) else ""
        outcomes.put(
            (
                job.seed,
                "failed",
                f"train@{job.name}: seed {job.seed} failed: {error.__class__.__name__}: {first_line}",
            )
        )
        sys.exit(1)
    outcomes.put((job.seed, "done", ""))


def _stop(processes: list[multiprocessing.process.BaseProcess]) -> None:
    """Stop workers as SIGTERM does (they finish the checkpoint they are writing)."""
    for process in processes:
        if process.is_alive() and process.pid is not None:
            os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for process in processes:
        process.join(max(0.1, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()


def run_in_workers(jobs: list[JobType], workers: int, train_one: Callable[[JobType], object]) -> None:
    """Run `train_one(job)` for every job in its own process, `workers` at a
    time. `train_one` is a module-level function; its module is imported once,
    by the forkserver, before any worker starts."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([train_one.__module__])
    outcomes = context.SimpleQueue()
    waiting = list(jobs)
    running: dict[Any, tuple[multiprocessing.process.BaseProcess, JobType]] = {}
    reports: dict[int, tuple[str, str]] = {}

    def collect() -> None:
        while not outcomes.empty():
            seed, outcome, message = outcomes.get()
            reports[seed] = (outcome, message)

    try:
        while waiting or running:
            while waiting and len(running) < workers:
                job = waiting.pop(0)
                started = context.Process(
                    target=_worker, args=(job, train_one, outcomes), name=f"seed {job.seed}"
                )
                started.start()
                running[started.sentinel] = (started, job)
            finished = [running.pop(sentinel) for sentinel in wait(list(running))]
            for ended, _ in finished:
                ended.join()
            collect()
            for ended, job in finished:
                outcome, message = reports.get(job.seed, ("died", ""))
                if outcome == "done":
                    continue
                _stop([other for other, _ in running.values()])
                if outcome == "died":
                    message = (
                        f"train@{job.name}: the worker for seed {job.seed} ended with exit code "
                        f"{ended.exitcode} without a report (killed, or out of memory?); "
                        "finished epochs are checkpointed and `dvc repro` resumes"
                    )
                raise TrainingInterrupted(message) if outcome == "interrupted" else LossbenchError(message)
    except KeyboardInterrupt:
        _ignore_stop_signals()  # the workers are being stopped; a second Ctrl-C changes nothing
        _stop([process for process, _ in running.values()])
        collect()
        saved = [message for outcome, message in reports.values() if outcome == "interrupted"]
        raise TrainingInterrupted(
            "; ".join(saved) if saved else f"train@{jobs[0].name}: stopped; `dvc repro` resumes"
        ) from None
