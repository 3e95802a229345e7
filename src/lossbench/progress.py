"""What a training stage shows while it trains: on a terminal, one bar per seed
(epochs done, time since it started, time left, the last epoch's numbers); elsewhere (CI, `dvc queue`,
a log file) one plain line per seed and epoch."""

from __future__ import annotations

import re
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

# The plain line of one epoch (printed where no bars are drawn), as `lossbench run`'s tasks
# read it from their training's output: loss, seed, epoch, epochs.
EPOCH_LINE = re.compile(r"^  (\S+) seed ([0-9]+) epoch +([0-9]+)/([0-9]+)  ")


class TrainingProgress:
    def __init__(self, console: Console, epochs: int) -> None:
        self.console = console
        self.epochs = epochs
        self.tasks: dict[tuple[str, int], TaskID] = {}
        self.bars: Progress | None = None
        if console.is_terminal:
            self.bars = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("epochs"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[numbers]}"),
                console=console,
            )

    def __enter__(self) -> TrainingProgress:
        if self.bars is not None:
            self.bars.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self.bars is not None:
            self.bars.stop()

    def add(self, name: str, seed: int) -> None:
        if self.bars is not None:
            self.tasks[(name, seed)] = self.bars.add_task(
                f"{name} seed {seed}", total=self.epochs, numbers=""
            )

    def epoch(self, name: str, record: dict[str, Any]) -> None:
        """One finished epoch of loss `name`: a record of train.EpochRecord's fields."""
        numbers = (
            f"train loss {record['train_loss']:.4f} acc {record['train_acc']:.4f}  "
            f"test loss {record['test_loss']:.4f} acc {record['test_acc']:.4f}"
        )
        if self.bars is None:
            self.console.print(
                f"  {name} seed {record['seed']} epoch {record['epoch']:>3}/{self.epochs}  lr {record['lr']:.4g}  "
                f"{numbers}  ({record['wall_time_s']:.1f}s)",
                highlight=False,
            )
            return
        task = self.tasks.get((name, record["seed"]))
        if task is not None:
            self.bars.update(task, completed=record["epoch"], numbers=numbers)
