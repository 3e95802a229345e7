"""Stage publish@NAME: copy one loss's run files to where git and `dvc
metrics/plots` see them.

A training stage's outputs are all DVC-cached (data/runs/NAME), which is what
lets the run-cache hand it to another machine. Its text files are copied here
to metrics/NAME.json and plots/*/NAME.csv, each declared as this stage's own
output, so the pipeline owns exactly the files it writes: a file of yours in
metrics/ or plots/ is never deleted or overwritten.
"""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path

from rich.console import Console

from lossbench.errors import MissingInput
from lossbench.params import Params, require_loss
from lossbench.storage import CALIBRATION_DIR, CONFUSION_DIR, HISTORY_DIR, METRICS_DIR, RunFiles, write_with


def published_copies(root: Path, name: str) -> dict[Path, Path]:
    """Each run file of loss `name` and the path it is published to."""
    run = RunFiles.of(root, name)
    return {
        run.metrics: root / METRICS_DIR / f"{name}.json",
        run.history: root / HISTORY_DIR / f"{name}.csv",
        run.calibration: root / CALIBRATION_DIR / f"{name}.csv",
        run.confusion: root / CONFUSION_DIR / f"{name}.csv",
    }


def publish(params: Params, name: str, root: Path, console: Console) -> list[Path]:
    require_loss(params, name)
    copies = published_copies(root, name)
    missing = [source for source in copies if not source.is_file()]
    if missing:
        raise MissingInput(f"{missing[0]} is missing: run `dvc repro train@{name}` first")
    for source, target in copies.items():
        write_with(target, partial(shutil.copyfile, source))
    console.print(f"[bold]publish@{name}[/]: {', '.join(str(t.relative_to(root)) for t in copies.values())}")
    return list(copies.values())
