"""What one seed as the unit of caching costs and saves, from a fresh clone. One command:

    python benchmarks/seed_unit.py          # about 15 min on 2 cores; run nothing else meanwhile
    python benchmarks/seed_unit.py --full   # and a full `dvc repro -f` as the baseline (+5-10 min)

In a fresh clone of the committed HEAD it times, one after another:
  pull         `dvc pull --run-cache --allow-missing` from the shipped remote (dvc-remote/;
               data/prepared is not shipped: the first `dvc repro` rebuilds it)
  no-op        `dvc repro` right after the pull: nothing may train
  γ edit       focal_high γ 2 -> 1: only focal_high's seeds may train
  γ back       γ 1 -> 2: every stage from the run-cache, nothing trains
  add a seed   seeds + [5]: one stage per loss trains (seed 5)
  drop it      seeds back: nothing trains
  full         (--full) `dvc repro -f`: every seed of every loss, the baseline
and prints which stages ran and the wall time of each, with the CPU named.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from ruamel.yaml import YAML

PROJECT = Path(__file__).resolve().parents[1]
BIN = str(Path(sys.executable).parent)  # dvc and lossbench of this environment
console = Console(soft_wrap=True)


def cpu_name() -> str:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"model name\s*:\s*(.+)", text)
    family = re.search(r"cpu family\s*:\s*(\d+)", text)
    number = re.search(r"^model\s*:\s*(\d+)", text, re.MULTILINE)
    avx512 = "AVX-512" if " avx512f" in text else "no AVX-512"
    return (
        f"{model.group(1) if model else platform.processor()}, family {family.group(1) if family else '?'} "
        f"model {number.group(1) if number else '?'}, {avx512}, {os.cpu_count()} cores"
    )


def run(root: Path, *command: str) -> tuple[float, str]:
    """Seconds and stdout of a command in `root` (it must succeed)."""
    started = time.perf_counter()
    result = subprocess.run(
        command,
        cwd=root,
        env=os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    return time.perf_counter() - started, result.stdout


def trained(output: str) -> list[str]:
    """The training stages DVC ran (not restored from the run-cache)."""
    return re.findall(r"Running stage '(train@[^']+)'", output)


def edit_params(root: Path, change: object) -> None:
    yaml = YAML()  # round trip: comments stay
    path = root / "params.yaml"
    params = yaml.load(path)
    change(params)  # type: ignore[operator]
    yaml.dump(params, path)


def main(full: Annotated[bool, typer.Option(help="Also time `dvc repro -f` (every seed).")] = False) -> None:
    table = Table("what", "time", "stages trained", title=f"seed as the unit of caching — {cpu_name()}")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "clone"
        subprocess.run(["git", "clone", "-q", str(PROJECT), str(root)], check=True)
        seeds = list(YAML(typ="safe").load(root / "params.yaml")["seeds"])

        def step(what: str, *command: str, expect: list[str] | None = None) -> None:
            seconds, output = run(root, *command)
            ran = trained(output)
            table.add_row(what, f"{seconds:.0f} s", ", ".join(ran) or "none")
            console.print(f"{what}: {seconds:.0f} s, trained {ran or 'nothing'}")
            if expect is not None and sorted(ran) != sorted(expect):  # DVC picks the order
                raise SystemExit(f"{what}: expected {expect or 'no training'}, DVC trained {ran}")

        step(
            "dvc pull --run-cache --allow-missing (shipped remote)",
            "dvc",
            "pull",
            "--run-cache",
            "--allow-missing",
        )
        step("dvc repro after the pull", "dvc", "repro", expect=[])
        edit_params(root, lambda p: p["losses"]["focal_high"].__setitem__("gamma", 1.0))
        step(
            "dvc repro after focal_high γ 2 → 1",
            "dvc",
            "repro",
            expect=[f"train@focal_high-{s}" for s in seeds],
        )
        edit_params(root, lambda p: p["losses"]["focal_high"].__setitem__("gamma", 2.0))
        step("dvc repro after γ 1 → 2 (run-cache)", "dvc", "repro", expect=[])
        edit_params(root, lambda p: p.__setitem__("seeds", [*seeds, 5]))
        losses = list(YAML(typ="safe").load(root / "params.yaml")["losses"])
        step("dvc repro after adding seed 5", "dvc", "repro", expect=[f"train@{name}-5" for name in losses])
        edit_params(root, lambda p: p.__setitem__("seeds", seeds))
        step("dvc repro after removing seed 5", "dvc", "repro", expect=[])
        if full:
            step("dvc repro -f (every seed, the baseline)", "dvc", "repro", "-f")
    console.print(table)


if __name__ == "__main__":
    typer.run(main)
