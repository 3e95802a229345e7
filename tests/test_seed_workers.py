"""run_in_workers: when one seed's worker is stopped, the others are stopped and every
seed is named in the one line that says so. Real worker processes (forkserver)."""

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from lossbench.errors import TrainingInterrupted
from lossbench.seed_workers import run_in_workers


@dataclass(frozen=True)
class Job:
    name: str
    seed: int
    folder: Path


def train_until_stopped(job: Job, on_epoch: object) -> None:
    """Seed 2 waits to be stopped, and its worker then dies without a word (as one killed
    while it stops would); seed 1, once seed 2 waits, is interrupted as by SIGTERM to it alone."""
    ready = job.folder / "seed-2-waits"
    if job.seed == 2:
        signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(3))
        ready.touch()
        time.sleep(60)
        return
    deadline = time.monotonic() + 60
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    raise TrainingInterrupted(f"train@{job.name}-{job.seed}: interrupted in epoch 2")


def test_a_seed_whose_worker_dies_as_it_is_stopped_is_named_too(tmp_path: Path) -> None:
    jobs = [Job("ce", 1, tmp_path), Job("ce", 2, tmp_path)]
    with pytest.raises(TrainingInterrupted) as stopped:
        run_in_workers(jobs, 2, train_until_stopped, lambda job, record: None)
    assert str(stopped.value) == (
        "train@ce-1: interrupted in epoch 2; train@ce-2: its worker ended with exit code 3 without a "
        "report (killed, or out of memory?); finished epochs are checkpointed and `dvc repro` resumes"
    )
