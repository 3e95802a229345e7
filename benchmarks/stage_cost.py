"""What a tiny training stage costs besides `import torch`, and a tiny `dvc exp run` of the default.

    python benchmarks/stage_cost.py               # both parts, about 5 minutes on 2 quiet cores
    python benchmarks/stage_cost.py --parts stage # the stage only, about a minute
    python benchmarks/stage_cost.py --parts exp-run -S machine.workers=2   # seeds trained ahead

Times are CPU seconds (user + system) of the processes measured, taken with
getrusage(RUSAGE_CHILDREN) around each command, so that other work on a shared
machine changes them little; wall seconds are printed too. This process is made
the subreaper of everything it starts (Linux), and waits for every orphan, so
that processes their parent never waits for (the forkserver behind seeds
trained ahead, and its workers) are counted too.

stage: in a fresh copy of the pipeline with tiny synthetic data (100 train / 50
test images, 1 epoch), `lossbench train ce 1` against `python -c "import lossbench,
torch"`, interleaved, each --repeat times; the difference of the medians is the
stage's own cost.
exp-run: the default pipeline in a fresh copy of this working tree, `dvc exp run`
with 3 epochs and 200 training (and 100 test) images per class of the shipped
CIFAR-10 JPEG copy: 4 losses x 4 seeds, 23 stages.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ["DVC_NO_ANALYTICS"] = "1"  # before engine.ENV is made: no report daemon to wait for
from engine import ENV, fresh_project, run

PY = sys.executable
TINY = (
    "data.dataset=synthetic",
    "data.synthetic.train_size=100",
    "data.synthetic.test_size=50",
    "train.epochs=1",
    "seeds=[1]",
)
TINY_DEFAULT = (
    "train.epochs=3",
    "data.cifar10_jpeg.train_per_class=200",
    "data.cifar10_jpeg.test_per_class=100",
)


PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h


def measured(cwd: Path, *command: str) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of `command` and every process it started."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    while True:  # orphans of the command, reparented here: wait for each, so its CPU counts
        try:
            os.wait()
        except ChildProcessError:
            break
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed in {cwd}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, wall


def stage_part(scratch: Path, repeat: int) -> None:
    root = scratch / "tiny"
    root.mkdir()
    fresh_project(root, TINY)
    run(root, "dvc", "repro", "prepare")
    stage, torch_only = [], []
    for _ in range(repeat):
        stage.append(measured(root, PY, "-m", "lossbench", "train", "ce", "1")[0])
        torch_only.append(measured(root, PY, "-c", "import lossbench, torch")[0])
    print(f"lossbench train ce 1 (CPU s): {', '.join(f'{t:.2f}' for t in stage)}")
    print(f"import lossbench, torch (CPU s): {', '.join(f'{t:.2f}' for t in torch_only)}")
    print(
        f"stage's own cost: {statistics.median(stage) - statistics.median(torch_only):.2f} CPU s "
        "(difference of the medians)"
    )


def exp_run_part(scratch: Path, extra: list[str]) -> None:
    root = scratch / "default"
    root.mkdir()
    fresh_project(root, ())
    arguments = [part for setting in (*TINY_DEFAULT, *extra) for part in ("-S", setting)]
    cpu, wall = measured(root, "dvc", "exp", "run", *arguments)
    print(f"dvc exp run {' '.join(arguments)}: {cpu:.1f} CPU s, {wall:.1f} s wall")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=("stage", "exp-run"), default=["stage", "exp-run"])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "-S", dest="extra", action="append", default=[], help="another -S for the exp run (machine.workers=2)"
    )
    chosen = parser.parse_args()
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1)
    scratch = Path(tempfile.mkdtemp(prefix="lossbench-stage-cost-"))
    try:
        if "stage" in chosen.parts:
            stage_part(scratch, chosen.repeat)
        if "exp-run" in chosen.parts:
            exp_run_part(scratch, chosen.extra)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
