"""Seeds trained side by side: one worker process per seed, as many at once as asked.

Workers fork from a `forkserver` that has imported the training code once (no
torch import per seed, no threads or locks inherited from the stage process).
Each sends, through its own pipe, a record per finished epoch (for the
progress display) and then one outcome; a failed seed stops the others, and so does Ctrl-C
or SIGTERM, after every worker has finished the checkpoint it was writing.
Each worker dies with its stage (`lifeline.die_with_parent`).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Generic, Protocol, TypeVar

from lossbench import lifeline
from lossbench.errors import LossbenchError, TrainingInterrupted

# Seconds a stopped worker gets to finish writing its checkpoint before it is killed.
STOP_GRACE_S = 30.0
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextmanager
def _stop_signals_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM while a worker's message is taken in: one that comes
    then is raised when the block ends, never between reading a worker's outcome and
    recording it (that lost the line of a worker stopped by the same Ctrl-C)."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


class Job(Protocol):
    """What a worker is handed: picklable, and named by its loss and seed."""

    @property
    def name(self) -> str: ...

    @property
    def seed(self) -> int: ...


JobType = TypeVar("JobType", bound=Job)
# train_one(job, on_epoch): trains the job, handing each epoch's record to on_epoch.
TrainOne = Callable[[JobType, Callable[[Any], object]], object]


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


def _worker(job: JobType, train_one: TrainOne[JobType], sending: Connection) -> None:
    """A worker process: run `train_one(job, on_epoch)`, sending ('epoch', record)
    per epoch, then its outcome: ('done' | 'interrupted' | 'failed', message)."""
    lifeline.die_with_parent()
    signal.signal(signal.SIGTERM, _stop_once)
    signal.signal(signal.SIGINT, _stop_once)
    try:
        train_one(job, lambda record: sending.send(("epoch", record)))
    except TrainingInterrupted as error:
        sending.send(("interrupted", str(error)))
        sys.exit(130)
    except KeyboardInterrupt:  # before training started: nothing to save
        sending.send(("interrupted", f"train@{job.name}-{job.seed}: stopped before training"))
        sys.exit(130)
    except LossbenchError as error:
        sending.send(("failed", str(error)))
        sys.exit(1)
    except Exception as error:  # a defect or damaged data: say what, not "killed, or out of memory?"
        first_line = str(error).splitlines()[0] if str(error) else ""
        sending.send(
            ("failed", f"train@{job.name}-{job.seed} failed: {error.__class__.__name__}: {first_line}")
        )
        sys.exit(1)
    sending.send(("done", ""))


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


@dataclass
class _Running(Generic[JobType]):
    process: multiprocessing.process.BaseProcess
    job: JobType
    outcome: tuple[str, str] = ("died", "")


def _died(worker: _Running[Any]) -> str:
    """The line for a worker that ended without saying how."""
    return (
        f"train@{worker.job.name}-{worker.job.seed}: its worker ended with exit code "
        f"{worker.process.exitcode} without a report (killed, or out of memory?); "
        "finished epochs are checkpointed and `dvc repro` resumes"
    )


def run_in_workers(
    jobs: list[JobType],
    workers: int,
    train_one: TrainOne[JobType],
    on_epoch: Callable[[JobType, Any], object],
    optional: Callable[[JobType], bool] = lambda job: False,
) -> list[str]:
    """Run `train_one(job, on_epoch)` for every job in its own process, `workers`
    at a time; `on_epoch(job, record)` is called here for each record a worker
    sends. A job that fails stops the others, unless it is `optional`: then
    its message is returned and the rest go on. `train_one` is a module-level
    function; its module is imported once, by the forkserver, before any
    worker starts."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([train_one.__module__])
    waiting = list(jobs)
    running: dict[Connection, _Running[JobType]] = {}
    failed_optional: list[str] = []
    stopped: list[str] = []  # each stopped worker's line, in the order they ended

    def start(job: JobType) -> None:
        receiving, sending = context.Pipe(duplex=False)
        process = context.Process(target=_worker, args=(job, train_one, sending), name=f"seed {job.seed}")
        process.start()
        sending.close()  # the worker holds the only sending end: its exit ends the pipe
        running[receiving] = _Running(process, job)

    def receive(connection: Connection) -> _Running[JobType] | None:
        """Handle one message; the worker's entry once its pipe has ended."""
        worker = running[connection]
        try:
            kind, payload = connection.recv()
        except (EOFError, OSError):
            del running[connection]
            connection.close()
            worker.process.join()
            if worker.outcome[0] == "interrupted":
                stopped.append(worker.outcome[1])
            return worker
        if kind == "epoch":
            on_epoch(worker.job, payload)
        else:
            worker.outcome = (kind, payload)
        return None

    try:
        while waiting or running:
            while waiting and len(running) < workers:
                start(waiting.pop(0))
            ready = wait(list(running))
            with _stop_signals_held():
                for connection in ready:
                    ended = receive(connection)  # type: ignore[arg-type]
                    if ended is None or ended.outcome[0] in ("done", "interrupted"):
                        continue  # an interrupted worker: its stage's Ctrl-C comes too, or `stopped` says
                    outcome, message = ended.outcome
                    if outcome == "died":
                        message = _died(ended)
                    if outcome == "failed" and optional(ended.job):
                        failed_optional.append(message)
                        continue
                    _stop([other.process for other in running.values()])
                    raise LossbenchError(message)
                if stopped:  # a worker was stopped alone (SIGTERM to it): stop the rest, say each
                    raise KeyboardInterrupt
    except KeyboardInterrupt:
        _ignore_stop_signals()  # the workers are being stopped; a second Ctrl-C changes nothing
        _stop([worker.process for worker in running.values()])
        for connection in list(running):
            while (ended := receive(connection)) is None:
                pass
            # One that failed or died as it was stopped is named too: every seed gets its line.
            if ended.outcome[0] == "failed":
                stopped.append(ended.outcome[1])
            elif ended.outcome[0] == "died":
                stopped.append(_died(ended))
        raise TrainingInterrupted(
            "; ".join(stopped)
            if stopped
            else f"train@{jobs[0].name}-{jobs[0].seed}: stopped; `dvc repro` resumes"
        ) from None
    return failed_optional
