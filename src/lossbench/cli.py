"""The `lossbench` command: one subcommand per pipeline stage, plus `check`.

Thin on purpose: each command validates params.yaml, calls its stage's entry
function and turns the project's known failures into one line and exit code 1.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
import yaml
from rich.console import Console

from lossbench.errors import LossbenchError
from lossbench.params import Params, load_params

app = typer.Typer(
    help="Compare classification losses on CIFAR-10 or its offline stand-in.", no_args_is_help=True
)

ParamsOption = Annotated[Path, typer.Option("--params", help="The params file to read.")]
RootOption = Annotated[
    Path, typer.Option("--root", help="Project root that holds data/, metrics/ and plots/.")
]
Result = TypeVar("Result")


def _run(params_path: Path, step: Callable[[Params, Console], Result]) -> Result:
    console = Console(soft_wrap=True)
    errors = Console(stderr=True, soft_wrap=True)
    try:
        return step(load_params(params_path), console)
    except LossbenchError as error:
        errors.print(f"[bold red]error:[/] {error}", highlight=False, markup=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        errors.print("[bold red]interrupted[/]; no output of this step was written")
        raise typer.Exit(130) from None


@app.command()
def check(params: ParamsOption = Path("params.yaml")) -> None:
    """Validate params.yaml and print the full configuration with every default filled in."""

    def show(loaded: Params, console: Console) -> None:
        console.print(yaml.safe_dump(loaded.model_dump(mode="json"), sort_keys=False, allow_unicode=True))

    _run(params, show)


@app.command()
def prepare(params: ParamsOption = Path("params.yaml"), root: RootOption = Path(".")) -> None:
    """Stage prepare: write the dataset as uint8 tensors under data/prepared."""

    def step(loaded: Params, console: Console) -> object:
        from lossbench.prepare import prepare as run_prepare  # torch loads only after params validate

        return run_prepare(loaded, root, console)

    _run(params, step)


@app.command()
def train(
    name: Annotated[str, typer.Argument(help="A loss name under `losses` in params.yaml.")],
    params: ParamsOption = Path("params.yaml"),
    root: RootOption = Path("."),
) -> None:
    """Stage train@NAME: train the protocol network with one loss."""

    def step(loaded: Params, console: Console) -> object:
        from lossbench.train import train as run_train

        return run_train(loaded, name, root, console)

    _run(params, step)


@app.command()
def report(params: ParamsOption = Path("params.yaml"), root: RootOption = Path(".")) -> None:
    """Stage report: figures, summary metrics and the claims report."""

    def step(loaded: Params, console: Console) -> object:
        from lossbench.report import report as run_report

        return run_report(loaded, root, console)

    _run(params, step)


def main() -> None:
    app()
