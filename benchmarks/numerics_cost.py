"""What the pinned CPU kernels cost: ms per training step, pinned against native.

    python benchmarks/numerics_cost.py            # about 2 min; run nothing else meanwhile
    python benchmarks/numerics_cost.py --variant MKL_CBWR=AVX2,STRICT   # and pinned but for this

One training step is the project's own (lossbench.train.train_epoch on one
batch-sized slice): batch 128 of 32x32 images, augmentation, the protocol
network, CE, SGD with momentum, one thread. Native, pinned and each variant
(the pinned settings with one changed) run alternately in fresh processes (the
kernel choice is read once per process), `--rounds` times each, and the median
of each is reported with its ratio to pinned and the CPU it ran on.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from lossbench.numerics import PINNED_KERNELS

STEP_PROGRAM = """
import json, os, sys, time
import lossbench  # pins the kernels
for name, value in json.loads(sys.argv[1]).items():  # then this run's changes, before torch computes
    if value is None:
        os.environ.pop(name)
    else:
        os.environ[name] = value
import torch
from lossbench.augment import TrainingSet
from lossbench.losses import make_loss
from lossbench.losses.ce import CeLoss
from lossbench.params import TrainParams
from lossbench.storage import PreparedData
from lossbench.synthetic import CLASSES, generate
from lossbench.train import new_state, train_epoch
torch.set_num_threads(1)
steps = int(sys.argv[2])
images, labels = generate("train", 128 * steps, 0, 0.2)
data = PreparedData(images, labels, images[:10], labels[:10], CLASSES)
training = TrainingSet.from_prepared(data, torch.device("cpu"))
state = new_state(TrainParams(), 1, training, torch.device("cpu"))
loss_fn = make_loss("ce", CeLoss(kind="ce"), len(CLASSES), torch.device("cpu"))
train_epoch(state.network, state.optimizer, training, loss_fn, state.generator, 128)  # warm-up
started, cpu_started = time.perf_counter(), time.process_time()
train_epoch(state.network, state.optimizer, training, loss_fn, state.generator, 128)
elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
print(json.dumps({
    "ms_per_step": 1000 * elapsed / steps,
    "cpu_ms_per_step": 1000 * cpu / steps,
    "capability": torch.backends.cpu.get_cpu_capability(),
}))
"""


def cpu_name() -> str:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    flags = fields.get("flags\t\t", fields.get("flags", ""))
    model = " ".join(fields.get("model name\t", "unknown CPU").split())
    family = fields.get("cpu family\t", "?").strip()
    number = fields.get("model\t\t", "?").strip()
    return f"{model}, family {family} model {number}, {'AVX-512' if 'avx512f' in flags else 'no AVX-512'}"


def main(
    rounds: Annotated[int, typer.Option(help="Runs of each kind, alternating.")] = 5,
    steps: Annotated[int, typer.Option(help="Training steps per run.")] = 94,
    variant: Annotated[
        list[str] | None,
        typer.Option(help="NAME=VALUE: also time the pinned settings with this one changed."),
    ] = None,
) -> None:
    kinds: dict[str, dict[str, str | None]] = {"native": dict.fromkeys(PINNED_KERNELS), "pinned": {}}
    for change in variant or []:
        name, _, value = change.partition("=")
        if name not in PINNED_KERNELS or not value:
            raise typer.BadParameter(f"{change!r}: give NAME=VALUE, NAME one of {', '.join(PINNED_KERNELS)}")
        kinds[f"pinned but {name}={value}"] = {name: value}
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    cpu_times: dict[str, list[float]] = {kind: [] for kind in kinds}
    capability = {}
    for _ in range(rounds):
        for kind, changes in kinds.items():
            result = subprocess.run(
                [sys.executable, "-c", STEP_PROGRAM, json.dumps(changes), str(steps)],
                capture_output=True,
                text=True,
                check=True,
                env=os.environ | {"OMP_NUM_THREADS": "1"},
            )
            measured = json.loads(result.stdout.splitlines()[-1])
            times[kind].append(measured["ms_per_step"])
            cpu_times[kind].append(measured["cpu_ms_per_step"])
            capability[kind] = measured["capability"]
    print(f"CPU: {cpu_name()}; {rounds} alternating runs of {steps} steps each (batch 128, one thread)")
    print(f"pinned: {', '.join(f'{name}={value}' for name, value in PINNED_KERNELS.items())}")
    # Wall time, and the process's CPU time, which other processes on the machine disturb less.
    for clock, measured in (("wall time", times), ("CPU time", cpu_times)):
        pinned = statistics.median(measured["pinned"])
        for kind, runs in measured.items():
            median = statistics.median(runs)
            print(
                f"{clock}: {kind} (ATen {capability[kind]}): {median:.2f} ms/step, {median / pinned:.3f}x pinned "
                f"(runs: {', '.join(f'{t:.2f}' for t in runs)})"
            )


if __name__ == "__main__":
    typer.run(main)
