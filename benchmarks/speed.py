"""How fast is lossbench, against the seed study's way of training? One command:

    python benchmarks/speed.py        # about 30 min on 2 cores; run nothing else meanwhile

It measures, on this machine and in this one run:
  study     the default study's seed-runs at equal resources: the seed-style loop
            (benchmarks/seed_style.py, whole machine, one seed after another)
            against `lossbench train` (seeds side by side, one core each), CE,
            4 seeds, on the default data: seconds per seed-run epoch;
  pipeline  a fresh clone of the committed HEAD, default params: `dvc repro`
            from scratch (and whether it reproduces the committed metrics), a
            no-op `dvc repro`, and the rerun after one γ change;
  cifar     the full protocol at CIFAR-10 size (50,000/10,000 synthetic images,
            30 epochs, 4 losses, seed 1), `dvc repro` from scratch;
  ci        `bash .ci/run` in a fresh clone, install included.
It writes the table to benchmarks/results.md. `--parts` picks some of them;
`--tiny` is a smoke test of the script itself (numbers meaningless).
"""

from __future__ import annotations

import filecmp
import os
import platform
import shutil
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

from lossbench.lookahead import available_cores
from lossbench.params import load_params
from lossbench.prepare import READERS

PROJECT = Path(__file__).resolve().parents[1]
BIN = str(Path(sys.executable).parent)  # dvc and lossbench of this environment
console = Console(soft_wrap=True)


def shell(cwd: Path, *command: str, env: dict[str, str] | None = None) -> tuple[float, str]:
    """Run a command to completion: its wall time in seconds and its output."""
    environment = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"} | (env or {})
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed in {cwd}:\n{result.stdout}\n{result.stderr}")
    console.print(f"  {' '.join(command)}: {seconds:.1f} s")
    return seconds, result.stdout


def updated(params: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """params with each dotted key of `update` (as `dvc exp run -S` names it) set."""
    for dotted, value in update.items():
        *parents, leaf = dotted.split(".")
        node = params
        for key in parents:
            node = node[key]
        node[leaf] = value
    return params


def study_params(params: dict[str, Any], seeds: list[int], epochs: int) -> dict[str, Any]:
    """The study part's params: CE only, `seeds` (top-level), `epochs`."""
    params["seeds"] = seeds
    params["train"]["epochs"] = epochs
    params["losses"] = {"ce": {"kind": "ce"}}
    return params


def fresh_clone(destination: Path, update: dict[str, Any] | None = None) -> Path:
    """A git clone of the committed HEAD, as a new user gets it, with params changed by `update`."""
    shell(PROJECT, "git", "clone", "-q", str(PROJECT), str(destination))
    if update:
        params = updated(yaml.safe_load((destination / "params.yaml").read_text()), update)
        (destination / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shell(destination, "dvc", "config", "--local", "core.analytics", "false")
    return destination


def study_part(scratch: Path, seeds: list[int], epochs: int, update: dict[str, Any]) -> list[list[str]]:
    root = fresh_clone(scratch / "study", update)
    params = study_params(yaml.safe_load((root / "params.yaml").read_text()), seeds, epochs)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shell(root, "lossbench", "prepare")
    engine_s, _ = shell(root, "lossbench", "train", "ce")
    engine = engine_s / (len(seeds) * epochs)

    loaded = load_params(root / "params.yaml")
    data = READERS[loaded.data.dataset](loaded.data, root / "data" / "raw" / loaded.data.dataset)
    baseline_s, baseline_acc = 0.0, []
    for seed in seeds:
        started = time.perf_counter()
        records = train_seed_style(data, seed, epochs)
        baseline_s += time.perf_counter() - started
        baseline_acc.append(f"{records[-1].test_acc:.3f}")
        console.print(f"  seed-style seed {seed}: {records[-1].test_acc:.4f} after {epochs} epochs")
    baseline = baseline_s / (len(seeds) * epochs)
    size = (
        f"{len(data.train_labels)}/{len(data.test_labels)} images, CE, {len(seeds)} seeds × {epochs} epochs"
    )
    cores = available_cores()
    return [
        [
            f"seed-style loop, seeds one after another, whole machine ({torch.get_num_threads()} threads, "
            "2 loader workers)",
            f"{baseline:.2f} s per seed-epoch",
            "1.00×",
            f"{size}; test acc {', '.join(baseline_acc)}",
        ],
        [
            f"`lossbench train`, {min(cores, len(seeds))} seeds side by side, 1 thread each",
            f"{engine:.2f} s per seed-epoch",
            f"{baseline / engine:.2f}×",
            f"{size}; {engine_s:.0f} s for the stage, process start and data loading included",
        ],
    ]


def pipeline_part(scratch: Path, update: dict[str, Any]) -> list[list[str]]:
    root = fresh_clone(scratch / "pipeline", update)
    full_s, _ = shell(root, "dvc", "repro")
    same = all(
        filecmp.cmp(path, PROJECT / path.relative_to(root), shallow=False)
        for path in sorted((root / "metrics").glob("*.json"))
    )
    noop_s, _ = shell(root, "dvc", "repro")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["losses"]["focal_high"]["gamma"] = 1.0
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    gamma_s, _ = shell(root, "dvc", "repro")
    size = (
        f"{params['data']['synthetic']['train_size']}/{params['data']['synthetic']['test_size']} images, "
        f"{len(params['losses'])} losses × {len(params['seeds'])} seeds × {params['train']['epochs']} epochs"
    )
    return [
        [
            "fresh clone, default params, `dvc repro`",
            f"{full_s:.0f} s",
            "",
            f"{size}; metrics identical to the committed ones: {'yes' if same else 'NO'}",
        ],
        ["no-op `dvc repro`", f"{noop_s:.1f} s", "", "nothing changed"],
        [
            "`dvc repro` after focal_high γ 2 → 1",
            f"{gamma_s:.0f} s",
            "",
            f"{gamma_s / full_s:.0%} of the full run: validate, train@focal_high, publish@focal_high, report",
        ],
    ]


def cifar_part(scratch: Path, update: dict[str, Any]) -> list[list[str]]:
    root = fresh_clone(scratch / "cifar", update)
    total_s, _ = shell(root, "dvc", "repro")
    return [
        [
            "full protocol at CIFAR-10 size, fresh clone, `dvc repro`",
            f"{total_s:.0f} s",
            "",
            "50,000/10,000 synthetic images, 30 epochs, 4 losses, seed 1: one seed per stage, so one core",
        ]
    ]


def ci_part(scratch: Path) -> list[list[str]]:
    root = fresh_clone(scratch / "ci")
    seconds, output = shell(root, "bash", ".ci/run", env={"CI": "true"})
    summary = next((line for line in reversed(output.splitlines()) if " passed" in line), "")
    return [
        [
            "`bash .ci/run` in a fresh clone, install included",
            f"{seconds / 60:.1f} min",
            "",
            summary.strip("= "),
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
        f"{available_cores()} cores ({model}), torch {torch.__version__}, Python {platform.python_version()}, "
        f"CUDA {'available' if torch.cuda.is_available() else 'not available'}"
    )


def part_updates(tiny: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The params each part changes (as `dvc exp run -S` names them): the study and
    pipeline parts', and the cifar part's (CIFAR-10's size, synthetic images, seed 1)."""
    update: dict[str, Any] = {}
    if tiny:
        update = {
            "data.cifar10_jpeg.train_per_class": 30,
            "data.cifar10_jpeg.test_per_class": 10,
            "data.synthetic.train_size": 300,
            "data.synthetic.test_size": 100,
            "train.epochs": 2,
        }
    sizes = {"data.synthetic.train_size": 50000, "data.synthetic.test_size": 10000}
    return update, sizes | update | {"data.dataset": "synthetic", "seeds": [1]}


def main(
    parts: Annotated[
        str, typer.Option(help="Comma-separated: study, pipeline, cifar, ci.")
    ] = "study,pipeline,cifar,ci",
    epochs: Annotated[int, typer.Option(help="Epochs per seed in the study part.")] = 30,
    out: Annotated[Path, typer.Option(help="Markdown file for the table.")] = PROJECT
    / "benchmarks"
    / "results.md",
    tiny: Annotated[bool, typer.Option(help="Smoke-test the script with tiny sizes.")] = False,
) -> None:
    chosen = parts.split(",")
    rows: list[list[str]] = []
    update, cifar_update = part_updates(tiny)
    if tiny:
        epochs = 2
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lossbench-benchmark-") as folder:
        scratch = Path(folder)
        if "study" in chosen:
            rows += study_part(scratch, [1, 2, 3, 4], epochs, update)
        if "pipeline" in chosen:
            rows += pipeline_part(scratch, update)
        if "cifar" in chosen:
            rows += cifar_part(scratch, cifar_update)
        if "ci" in chosen:
            rows += ci_part(scratch)
        shutil.rmtree(scratch, ignore_errors=True)

    table = Table(title=f"lossbench speed: {machine()}", title_justify="left")
    for column in ("what", "time", "speed-up", "notes"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    lines = [
        f"Machine: {machine()}.",
        "",
        f"Command: `python benchmarks/speed.py --parts {parts} --epochs {epochs}` "
        f"({time.perf_counter() - started:.0f} s in all).",
        "",
        "| what | time | speed-up | notes |",
        "| --- | --- | --- | --- |",
        *(f"| {' | '.join(row)} |" for row in rows),
    ]
    out.write_text("\n".join(lines) + "\n")
    console.print(f"wrote {out}")


if __name__ == "__main__":
    typer.run(main)
