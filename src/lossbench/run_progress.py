"""What `lossbench run` shows while its Dask tasks run.

On a terminal: a row for the whole run (stages done of all, time since it
started, time left) over a row for each stage being worked on (what it does,
epochs done of all, time since its try started, time left). On a terminal and in
a log alike: one line per stage as it ends, and one per retry. The tasks say how
far they are through Dask's event log (`report` in a task, `RunProgress.event`
here); the time left is the time so far per epoch done, times the epochs left.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskID, TextColumn, TimeElapsedColumn
from rich.text import Text

from lossbench.progress import EPOCH_LINE

# The Dask event topic the tasks report on.
PROGRESS_TOPIC = "lossbench-progress"
# What a task's `dvc repro` prints as it moves on.
RUNNING_STAGE = re.compile(r"^Running stage '([^']+)'")
CACHED_STAGE = re.compile(r"^Stage '([^']+)' is cached - skipping run")
# A task's states that are not a stage's name.
CLONING, TRAINING, PUSHING, CACHED = "cloning", "training", "pushing", "from the run-cache"


def stage_event(line: str, stage: str) -> dict[str, Any] | None:
    """What one line of the `dvc repro` of `stage` says about its progress, if anything:
    a state (the stage DVC runs, training, from the run-cache) and the epochs done."""
    if match := EPOCH_LINE.match(line):
        return {"state": TRAINING, "epoch": int(match[3])}
    if match := RUNNING_STAGE.match(line):
        return {"state": TRAINING if match[1] == stage else f"stage {match[1]}"}
    if (match := CACHED_STAGE.match(line)) and match[1] == stage:
        return {"state": CACHED}
    return None


def _clock(seconds: float | None) -> str:
    return "-:--:--" if seconds is None else str(timedelta(seconds=int(seconds)))


class TimeLeftColumn(ProgressColumn):
    """The time left at the pace so far: the row's time per epoch done, times the epochs left."""

    def render(self, task: Task) -> Text:
        if task.finished:
            return Text(_clock(0), style="progress.remaining")
        return Text(_clock(time_left(task.elapsed, task.completed, task.total)), style="progress.remaining")


def time_left(elapsed: float | None, done: float, total: float | None) -> float | None:
    """Seconds left at the pace so far; None before the first epoch."""
    return elapsed / done * (total - done) if elapsed and done and total is not None else None


@dataclass
class _Stage:
    label: str
    epochs: int
    row: TaskID
    tries: int = 0
    epoch: int = 0
    ended: bool = False


class RunProgress:
    """The progress of `lossbench run`'s tasks; `stages` maps each Dask task key to its
    label (train@NAME-SEED, and its grid point where one stage name has several) and epochs."""

    def __init__(self, console: Console, stages: dict[str, tuple[str, int]]) -> None:
        self.console = console
        self.bars = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=20),
            TextColumn("{task.fields[count]}"),
            TimeElapsedColumn(),
            TimeLeftColumn(),
            TextColumn("{task.fields[state]}"),
            console=console,
        )
        total = sum(epochs for _, epochs in stages.values())
        self.whole = self.bars.add_task("all stages", total=total, count=f"0/{len(stages)} stages", state="")
        self.stages = {
            key: _Stage(
                label,
                epochs,
                self.bars.add_task(label, total=epochs, start=False, visible=False, count="", state=""),
            )
            for key, (label, epochs) in stages.items()
        }

    def __enter__(self) -> RunProgress:
        self.bars.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.bars.stop()

    def event(self, message: dict[str, Any]) -> None:
        """A task's report: {"key": its Dask key, "state": ..., "epoch": epochs done (training)}."""
        stage = self.stages.get(str(message.get("key")))
        if stage is None or stage.ended:
            return
        state = str(message.get("state", ""))
        if state == CLONING:  # a try starts: the first, or a retry after a failure or a lost worker
            stage.tries += 1
            stage.epoch = 0
            self.bars.reset(stage.row, start=True, visible=True)
            if stage.tries > 1:
                self.console.print(f"{stage.label}: try {stage.tries}", highlight=False, markup=False)
        stage.epoch = int(message.get("epoch", stage.epoch))
        tries = f" (try {stage.tries})" if stage.tries > 1 else ""
        self.bars.update(
            stage.row,
            completed=stage.epoch,
            count=f"{stage.epoch}/{stage.epochs} epochs",
            state=state + tries,
        )
        self._update_whole()

    def ended(self, key: str, cached: bool) -> None:
        """The task of `key` has its result: the stage was trained, or taken from the run-cache."""
        stage = self.stages[key]
        if stage.ended:
            return
        stage.ended, stage.epoch = True, stage.epochs
        row = self.bars.tasks[stage.row]
        took = _clock(row.elapsed or 0.0)
        self.bars.update(stage.row, completed=stage.epochs, visible=False)
        done = self._update_whole()
        whole = self.bars.tasks[self.whole]
        left = time_left(whole.elapsed, whole.completed, whole.total)
        how = CACHED if cached else f"trained {stage.epochs} epoch{'s' if stage.epochs != 1 else ''}"
        self.console.print(
            f"{stage.label}: {how} in {took}; {done}/{len(self.stages)} stages done in "
            f"{_clock(whole.elapsed or 0.0)}"
            + (f", about {_clock(left)} left" if done < len(self.stages) else ""),
            highlight=False,
            markup=False,
        )

    def _update_whole(self) -> int:
        done = sum(stage.ended for stage in self.stages.values())
        epochs: float = sum(stage.epoch for stage in self.stages.values())
        total = self.bars.tasks[self.whole].total or 0
        if done < len(self.stages):  # its clock runs until the last stage has ended (pushed)
            epochs = min(epochs, total - 0.01)
        self.bars.update(self.whole, completed=epochs, count=f"{done}/{len(self.stages)} stages")
        return done
