"""How fast is lossbench, against the seed study's way of training? One command:

    python benchmarks/speed.py                 # after `dvc repro prepare`; about 30 min on 2 cores

It measures, on this machine and in this one run:
  epoch     the seed-style loop (benchmarks/seed_style.py) against lossbench's
            engine: seconds per epoch, and final test accuracy over 3 seeds (CE,
            the default data, evaluation every epoch in both);
  pipeline  sequential `dvc repro` against `lossbench repro`, from prepared data,
            a no-op `dvc repro`, and the rerun after one γ change;
  cifar     the full protocol at CIFAR-10 size (50,000/10,000 synthetic images,
            30 epochs, 4 losses, seed 1) with `lossbench repro`, from scratch.
and writes the table to benchmarks/results.md. `--parts` picks some of them;
`--tiny` is a smoke test of the script itself (numbers meaningless).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import torch
import typer
import yaml
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from seed_style import train_seed_style

from lossbench.losses import make_loss
from lossbench.params import load_params
from lossbench.runner import available_cores
from lossbench.storage import PREPARED_DIR, load_prepared
from lossbench.train import DeviceData, train_seed

PROJECT = Path(__file__).resolve().parents[1]
BIN = str(Path(sys.executable).parent)  # dvc and lossbench of this environment
console = Console(soft_wrap=True)


def mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {spread:.4f}"


def engine_run(seed: int, epochs: int, threads: int) -> tuple[float, float]:
    """lossbench's engine on the prepared data, CE: (seconds per epoch, final test acc)."""
    torch.set_num_threads(threads)
    params = load_params(PROJECT / "params.yaml")
    params = params.model_copy(update={"train": params.train.model_copy(update={"epochs": epochs})})
    data = load_prepared(PROJECT / PREPARED_DIR)
    device = torch.device("cpu")
    tensors = DeviceData.from_prepared(data, device)
    loss_fn = make_loss("ce", params.losses["ce"], len(data.classes), device)
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        _, history = train_seed(
            params,
            "ce",
            seed,
            tensors,
            loss_fn,
            Path(scratch) / "checkpoint.pt",
            "benchmark",
            Console(quiet=True),
        )
        seconds = time.perf_counter() - started
    return seconds / epochs, history[-1].test_acc


def epoch_part(seeds: list[int], epochs: int) -> list[list[str]]:
    data = load_prepared(PROJECT / PREPARED_DIR)
    default_threads = torch.get_num_threads()
    cores = available_cores()
    baseline_s, baseline_acc, engine_s, engine_acc = [], [], [], []
    for seed in seeds:
        torch.set_num_threads(default_threads)
        records = train_seed_style(data, seed, epochs)
        baseline_s.append(statistics.mean(r.seconds for r in records))
        baseline_acc.append(records[-1].test_acc)
        console.print(
            f"seed-style seed {seed}: {baseline_s[-1]:.2f} s/epoch, test acc {baseline_acc[-1]:.4f}"
        )
        seconds, accuracy = engine_run(seed, epochs, threads=1)
        engine_s.append(seconds)
        engine_acc.append(accuracy)
        console.print(f"engine (1 thread) seed {seed}: {seconds:.2f} s/epoch, test acc {accuracy:.4f}")
    all_cores_s, _ = engine_run(seeds[0], epochs, threads=cores)
    console.print(f"engine ({cores} threads) seed {seeds[0]}: {all_cores_s:.2f} s/epoch")
    base = statistics.mean(baseline_s)
    size = f"{len(data.train_labels)}/{len(data.test_labels)} images"
    return [
        [
            f"seed-style loop: PIL transforms, DataLoader(2 workers), .item() per batch ({default_threads} threads)",
            f"{base:.2f} s/epoch",
            "1.00×",
            f"{size}; test acc {mean_std(baseline_acc)} (seeds {seeds}, {epochs} epochs)",
        ],
        [
            "lossbench engine, 1 thread (pipeline default)",
            f"{statistics.mean(engine_s):.2f} s/epoch",
            f"{base / statistics.mean(engine_s):.2f}×",
            f"{size}; test acc {mean_std(engine_acc)} (seeds {seeds}, {epochs} epochs)",
        ],
        [
            f"lossbench engine, {cores} threads",
            f"{all_cores_s:.2f} s/epoch",
            f"{base / all_cores_s:.2f}×",
            f"{size}; seed {seeds[0]}",
        ],
    ]


def copy_project(destination: Path, params_update: dict[str, Any] | None = None) -> Path:
    """The working tree's tracked files as a fresh git + DVC repo with nothing computed."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=PROJECT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        source = PROJECT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    (destination / "dvc.lock").unlink(missing_ok=True)  # so every stage runs
    if params_update:
        params = yaml.safe_load((destination / "params.yaml").read_text())
        for dotted, value in params_update.items():
            *parents, leaf = dotted.split(".")
            node = params
            for key in parents:
                node = node[key]
            node[leaf] = value
        (destination / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "benchmark"]):
        shell(destination, *command)
    shell(destination, "dvc", "config", "--local", "core.analytics", "false")
    return destination


def shell(cwd: Path, *command: str) -> float:
    """Run a command to completion; its wall time in seconds."""
    env = os.environ | {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "GIT_AUTHOR_NAME": "benchmark",
        "GIT_AUTHOR_EMAIL": "benchmark@localhost",
        "GIT_COMMITTER_NAME": "benchmark",
        "GIT_COMMITTER_EMAIL": "benchmark@localhost",
    }
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed in {cwd}:\n{result.stdout}\n{result.stderr}")
    console.print(f"  {' '.join(command)}: {seconds:.1f} s")
    return seconds


def metrics_of(root: Path) -> dict[str, Any]:
    return {path.name: json.loads(path.read_text()) for path in sorted((root / "metrics").glob("*.json"))}


def pipeline_part(scratch: Path, update: dict[str, Any]) -> list[list[str]]:
    parallel = copy_project(scratch / "parallel", update)
    shell(parallel, "dvc", "repro", "prepare")
    parallel_s = shell(parallel, "lossbench", "repro")
    shell(parallel, "dvc", "status", "--quiet")  # fails unless clean

    sequential = copy_project(scratch / "sequential", update)
    shell(sequential, "dvc", "repro", "prepare")
    sequential_s = shell(sequential, "dvc", "repro")
    same = metrics_of(parallel) == metrics_of(sequential)
    noop_s = shell(sequential, "dvc", "repro")
    params = yaml.safe_load((sequential / "params.yaml").read_text())
    params["losses"]["focal_high"]["gamma"] = 1.0
    (sequential / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    gamma_s = shell(sequential, "dvc", "repro")
    size = f"{len(params['losses'])} losses × {len(params['train']['seeds'])} seeds"
    return [
        [
            "`dvc repro`, sequential, from prepared data",
            f"{sequential_s:.0f} s",
            "1.00×",
            size,
        ],
        [
            "`lossbench repro`, concurrent, from prepared data",
            f"{parallel_s:.0f} s",
            f"{sequential_s / parallel_s:.2f}×",
            f"metrics identical to `dvc repro`: {'yes' if same else 'NO'}; `dvc status` clean",
        ],
        ["no-op `dvc repro`", f"{noop_s:.1f} s", "", "nothing changed"],
        [
            "`dvc repro` after focal_high γ 2 → 1",
            f"{gamma_s:.0f} s",
            "",
            f"{gamma_s / sequential_s:.0%} of the sequential full run (1 training stage + report)",
        ],
    ]


def cifar_part(scratch: Path, update: dict[str, Any]) -> list[list[str]]:
    root = copy_project(scratch / "cifar", update)
    prepare_s = shell(root, "dvc", "repro", "prepare")
    rest_s = shell(root, "lossbench", "repro")
    return [
        [
            "full protocol at CIFAR-10 size, `lossbench repro` from scratch",
            f"{prepare_s + rest_s:.0f} s",
            "",
            f"prepare {prepare_s:.0f} s (generating the synthetic images) + training and report {rest_s:.0f} s; "
            "50,000/10,000 images, 30 epochs, 4 losses, seed 1",
        ]
    ]


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    return (
        f"{available_cores()} cores ({model}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads by default, Python {platform.python_version()}, "
        f"CUDA {'available' if torch.cuda.is_available() else 'not available'}"
    )


def main(
    parts: Annotated[
        str, typer.Option(help="Comma-separated: epoch, pipeline, cifar.")
    ] = "epoch,pipeline,cifar",
    seeds: Annotated[str, typer.Option(help="Seeds for the epoch part.")] = "1,2,3",
    epochs: Annotated[int, typer.Option(help="Epochs per seed in the epoch part.")] = 30,
    out: Annotated[Path, typer.Option(help="Markdown file for the table.")] = PROJECT
    / "benchmarks"
    / "results.md",
    tiny: Annotated[bool, typer.Option(help="Smoke-test the script with tiny sizes.")] = False,
) -> None:
    chosen = parts.split(",")
    rows: list[list[str]] = []
    pipeline_update: dict[str, Any] = {}
    cifar_update: dict[str, Any] = {
        "data.synthetic.train_size": 50000,
        "data.synthetic.test_size": 10000,
        "train.seeds": [1],
    }
    if tiny:
        pipeline_update = {
            "data.synthetic.train_size": 300,
            "data.synthetic.test_size": 100,
            "train.epochs": 2,
        }
        cifar_update = pipeline_update | {"train.seeds": [1]}
    started = time.perf_counter()
    if "epoch" in chosen:
        rows += epoch_part([int(s) for s in seeds.split(",")], epochs)
    with tempfile.TemporaryDirectory(prefix="lossbench-benchmark-") as scratch:
        if "pipeline" in chosen:
            rows += pipeline_part(Path(scratch), pipeline_update)
        if "cifar" in chosen:
            rows += cifar_part(Path(scratch), cifar_update)

    table = Table(title=f"lossbench speed: {machine()}", title_justify="left")
    for column in ("what", "time", "speed-up", "notes"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    lines = [
        f"Machine: {machine()}.",
        "",
        f"Command: `python benchmarks/speed.py --parts {parts}` ({time.perf_counter() - started:.0f} s in all).",
        "",
        "| what | time | speed-up | notes |",
        "| --- | --- | --- | --- |",
        *(f"| {' | '.join(row)} |" for row in rows),
    ]
    out.write_text("\n".join(lines) + "\n")
    console.print(f"wrote {out}")


if __name__ == "__main__":
    typer.run(main)
