"""The `lossbench` command: one subcommand per pipeline stage, plus `check`.

Thin on purpose: each command validates params.yaml, calls its stage's entry
function and turns the project's known failures into one line and exit code 1.
"""

from __future__ import annotations

import importlib
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console

from lossbench.errors import LossbenchError, TrainingInterrupted
from lossbench.params import Params, load_params

app = typer.Typer(
    help="Compare classification losses on CIFAR-10 or its offline stand-in.", no_args_is_help=True
)

ParamsOption = Annotated[Path, typer.Option("--params", help="The params file to read.")]
RootOption = Annotated[
    Path, typer.Option("--root", help="Project root that holds data/, metrics/ and plots/.")
]


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops a stage the way Ctrl-C does


def _run(params_path: Path, step: Callable[[Params, Console], object]) -> None:
    console = Console(soft_wrap=True)
    errors = Console(stderr=True, soft_wrap=True)
    signal.signal(signal.SIGTERM, _interrupt)
    # A shell starts background jobs with SIGINT ignored and Python keeps that;
    # a stage must still stop cleanly when `lossbench repro` or a user sends it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        step(load_params(params_path), console)
    except TrainingInterrupted as error:
        errors.print(f"[bold yellow]interrupted:[/] {error}", highlight=False)
        raise typer.Exit(130) from None
    except LossbenchError as error:
        errors.print(f"[bold red]error:[/] {error}", highlight=False)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        errors.print("[bold yellow]interrupted[/] (no file is left half-written)")
        raise typer.Exit(130) from None


def _run_stage(params_path: Path, stage: str, *args: object) -> None:
    """Validate params, then call `lossbench.<stage>.<stage>(params, *args, console)`.

    The stage module is imported only after validation, so bad params fail in
    a fraction of a second instead of after torch has loaded.
    """

    def step(loaded: Params, console: Console) -> object:
        entry = getattr(importlib.import_module(f"lossbench.{stage}"), stage)
        return entry(loaded, *args, console)

    _run(params_path, step)


@app.command()
def check(params: ParamsOption = Path("params.yaml")) -> None:
    """Validate params.yaml and print the full configuration with every default filled in."""

    def show(loaded: Params, console: Console) -> None:
        console.print(yaml.safe_dump(loaded.model_dump(mode="json"), sort_keys=False, allow_unicode=True))

    _run(params, show)


@app.command()
def prepare(params: ParamsOption = Path("params.yaml"), root: RootOption = Path(".")) -> None:
    """Stage prepare: write the dataset as uint8 tensors under data/prepared."""
    _run_stage(params, "prepare", root)


@app.command()
def train(
    name: Annotated[str, typer.Argument(help="A loss name under `losses` in params.yaml.")],
    params: ParamsOption = Path("params.yaml"),
    root: RootOption = Path("."),
) -> None:
    """Stage train@NAME: train the protocol network with one loss."""
    _run_stage(params, "train", name, root)


@app.command()
def report(params: ParamsOption = Path("params.yaml"), root: RootOption = Path(".")) -> None:
    """Stage report: figures, summary metrics and the claims report."""
    _run_stage(params, "report", root)


@app.command()
def repro(
    jobs: Annotated[
        int | None,
        typer.Option(
            "--jobs", "-j", min=1, help="Training stages run at once (default: cores / train.threads)."
        ),
    ] = None,
    params: ParamsOption = Path("params.yaml"),
    root: RootOption = Path("."),
) -> None:
    """The whole pipeline, like `dvc repro`, with the training stages run concurrently."""

    def step(loaded: Params, console: Console) -> object:
        from lossbench.runner import repro as run_repro

        return run_repro(loaded, root, console, jobs)

    _run(params, step)


@app.command("sweep-report")
def sweep_report(
    loss: Annotated[str, typer.Option("--loss", help="The focal loss whose γ the sweep varied.")],
    all_commits: Annotated[
        bool, typer.Option("--all-commits", help="Include experiments of every commit, not just HEAD's.")
    ] = False,
    params: ParamsOption = Path("params.yaml"),
    root: RootOption = Path("."),
) -> None:
    """Accuracy and ECE against γ across the experiments of a DVC sweep (plots/sweep.png)."""

    def step(loaded: Params, console: Console) -> object:
        from lossbench.sweep import sweep_report as run_sweep_report

        return run_sweep_report(loaded, loss, root, console, all_commits)

    _run(params, step)


def main() -> None:
    app()
