"""The `lossbench` command: one subcommand per pipeline stage (what `dvc repro`
runs), and the commands people run themselves (check, compare, sweep-report,
variants-report, numerics).

Thin on purpose: each command validates params.yaml, calls its stage's entry
function and turns the project's known failures into one line and exit code 1.
"""

from __future__ import annotations

import gc
import os
import signal
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from ruamel.yaml import YAML
from typer.core import TyperCommand, TyperGroup

from lossbench.errors import LossbenchError, ParamsError, TrainingInterrupted, printable_lines, shown
from lossbench.params import Params, load_params, require_loss


class _FlagsHaveNoMetavar:
    """A flag takes no value: `--help` shows no `<bool>` beside it."""

    def get_params(self, ctx: Any) -> Any:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if getattr(param, "is_flag", False):
                param.metavar = ""
        return params


class _Group(_FlagsHaveNoMetavar, TyperGroup):
    pass


class _Command(_FlagsHaveNoMetavar, TyperCommand):
    pass


app = typer.Typer(
    help="Compare classification losses on CIFAR-10 or its offline stand-in.",
    no_args_is_help=True,
    cls=_Group,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# `lossbench --help` lists the stages apart from the commands people run themselves.
STAGES_PANEL = "Pipeline stages (run by `dvc repro`, in this order; see dvc.yaml)"
USER_PANEL = "Commands"

ParamsOption = Annotated[Path, typer.Option("--params", help="The params file to read.")]
PER_LOSS_STAGES = ("train", "publish")
RootOption = Annotated[
    Path, typer.Option("--root", help="Project root that holds data/, metrics/ and plots/.")
]


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops a stage the way Ctrl-C does


def _plain(error: Exception) -> str:
    """An error's message as literal text: no rich markup, no terminal control characters."""
    return escape(printable_lines(str(error)))


def _run(
    params_path: Path, step: Callable[[Params, Console], object], before: Callable[[], object] | None = None
) -> None:
    """Validate params_path (after `before`, a check that names a better cause), then run step."""
    _guarded(lambda console: step(load_params(params_path), console), before)


def _guarded(action: Callable[[Console], object], before: Callable[[], object] | None = None) -> None:
    """Run action (after `before`): an error is one line and an exit code, not a traceback."""
    console = Console(soft_wrap=True)
    errors = Console(stderr=True, soft_wrap=True)
    signal.signal(signal.SIGTERM, _interrupt)
    # A shell starts background jobs with SIGINT ignored and Python keeps that;
    # a stage must still stop cleanly when `lossbench repro` or a user sends it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        if before is not None:
            before()
        action(console)
    except TrainingInterrupted as error:
        errors.print(f"[bold yellow]interrupted:[/] {_plain(error)}", highlight=False)
        raise typer.Exit(130) from None
    except LossbenchError as error:
        errors.print(f"[bold red]error:[/] {_plain(error)}", highlight=False)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        errors.print("[bold yellow]interrupted[/] (no file is left half-written)")
        raise typer.Exit(130) from None
    except OSError as error:  # a file or folder the user named or removed, or `dvc` not installed
        errors.print(f"[bold red]error:[/] {escape(_os_error_line(error))}", highlight=False)
        raise typer.Exit(1) from None


def _os_error_line(error: OSError) -> str:
    reason = error.strerror or error.__class__.__name__
    if error.filename == "dvc" and isinstance(error, FileNotFoundError):
        return "dvc: command not found; activate the project's environment (`source .venv/bin/activate`)"
    where = f"{shown(error.filename)}: " if error.filename is not None else ""
    return f"{where}{reason}"


def _stage_item(stage: str, name: str | None) -> str:
    """What a foreach or matrix stage is for: given, or read from DVC's $DVC_STAGE.

    dvc.yaml does not put the loss name into the command (a shell would read
    it); DVC sets DVC_STAGE to the stage's address, e.g. `publish@ce` or
    `train@ce-1`, or `sub/dvc.yaml:train@ce-1` for a dvc.yaml in a subfolder.
    """
    if name is not None:
        return name
    address = os.environ.get("DVC_STAGE", "").rsplit(":", 1)[-1]
    if not address.startswith(f"{stage}@"):
        example = "ce 1" if stage == "train" else "ce"
        raise ParamsError(f"lossbench {stage}: give what to run, e.g. `lossbench {stage} {example}`")
    return address.removeprefix(f"{stage}@")


def _loss_and_seed(params: Params, item: str, seed: int | None) -> tuple[str, int]:
    """train@NAME-SEED's loss and seed (`ce-1`; a loss name may hold '-', a seed never)."""
    if seed is None:
        name, _, number = item.rpartition("-")
        if not number.isdigit():
            raise ParamsError(
                f"lossbench train: {shown(item)} names no seed; give both, e.g. `lossbench train ce 1`"
            )
        item, seed = name, int(number)
    require_loss(params, item)
    if seed not in params.seeds:
        raise ParamsError(f"seeds: {params.seeds} has no seed {seed}; add it there to train it")
    return item, seed


StageEntry = Callable[..., object]


def _validate() -> StageEntry:
    from lossbench.validate import validate

    return validate


def _prepare() -> StageEntry:
    from lossbench.prepare import prepare

    return prepare


def _train() -> StageEntry:
    from lossbench.train_stage import train

    return train


def _publish() -> StageEntry:
    from lossbench.publish import publish

    return publish


def _calibrate() -> StageEntry:
    from lossbench.calibrate import calibrate

    return calibrate


def _report() -> StageEntry:
    from lossbench.report import report

    return report


# Each stage's entry function, `entry(params, [loss,] root, console)`, imported
# only when its command runs: after params.yaml is validated, so bad params fail
# in a fraction of a second instead of after torch has loaded, and `lossbench
# --help` or `check` never load torch.
STAGES: dict[str, Callable[[], StageEntry]] = {
    "validate": _validate,
    "prepare": _prepare,
    "train": _train,
    "publish": _publish,
    "calibrate": _calibrate,
    "report": _report,
}


def _run_stage(
    params_path: Path, stage: str, root: Path, loss: str | None = None, seed: int | None = None
) -> None:
    """Validate params, then call the stage's entry function (STAGES).

    `loss` is given for the per-loss stages (train, publish), `seed` for train.
    """

    def step(loaded: Params, console: Console) -> object:
        arguments: tuple[object, ...] = (root,)
        if stage == "train":
            arguments = (*_loss_and_seed(loaded, _stage_item(stage, loss), seed), root)
        elif stage in PER_LOSS_STAGES:
            name = _stage_item(stage, loss)
            require_loss(loaded, name)
            arguments = (name, root)
        return STAGES[stage]()(loaded, *arguments, console)

    _run(params_path, step)


def _version(shown: bool) -> None:
    if shown:
        try:
            number = version("lossbench")
        except PackageNotFoundError:  # run from a source tree that was never installed
            number = "unknown (not installed)"
        print(f"lossbench {number}")
        raise typer.Exit()


@app.callback()
def _main(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print lossbench's version and exit."
        ),
    ] = False,
) -> None:
    """Compare classification losses on CIFAR-10 or its offline stand-in."""


@app.command(rich_help_panel=USER_PANEL)
def check(params: ParamsOption = Path("params.yaml"), root: RootOption = Path(".")) -> None:
    """Run every check of stage validate (params, data, device) and print the configuration, every default filled in; writes nothing.

    Run it before `dvc repro` to find a mistake early. Stage validate makes the same checks, then writes its stamp.
    """

    def show(loaded: Params, console: Console) -> None:
        from lossbench.validate import check_before_training, missing_remote

        check_before_training(loaded, root)
        YAML(typ="safe", pure=True).dump(loaded.model_dump(mode="json"), console.file)
        if note := missing_remote(root):
            Console(stderr=True, soft_wrap=True).print(escape(shown(note, 400)), highlight=False)

    _run(params, show)


@app.command(rich_help_panel=STAGES_PANEL)
def validate(params: ParamsOption = Path("params.yaml"), root: RootOption = Path(".")) -> None:
    """Stage validate, the pipeline's first: the checks of `check`, then its stamp data/validated.txt, which later stages depend on, and data/loss_code/NAME.txt, the digest of each loss's kind module, which that loss's train stages depend on."""
    _run_stage(params, "validate", root)


@app.command(rich_help_panel=STAGES_PANEL)
def prepare(params: ParamsOption = Path("params.yaml"), root: RootOption = Path(".")) -> None:
    """Stage prepare: write the dataset as uint8 tensors under data/prepared."""
    _run_stage(params, "prepare", root)


LossArgument = Annotated[
    str | None,
    typer.Argument(help="A loss name under `losses` in params.yaml (default: from DVC's stage name)."),
]


SeedArgument = Annotated[
    int | None,
    typer.Argument(help="A seed from `seeds` in params.yaml (default: from DVC's stage name)."),
]


@app.command(rich_help_panel=STAGES_PANEL)
def train(
    name: LossArgument = None,
    seed: SeedArgument = None,
    params: ParamsOption = Path("params.yaml"),
    root: RootOption = Path("."),
) -> None:
    """Stage train@NAME-SEED: train the protocol network with one loss and one seed."""
    _run_stage(params, "train", root, name, seed)


@app.command(rich_help_panel=STAGES_PANEL)
def publish(
    name: LossArgument = None, params: ParamsOption = Path("params.yaml"), root: RootOption = Path(".")
) -> None:
    """Stage publish@NAME: gather one loss's seeds into metrics/ and plots/."""
    _run_stage(params, "publish", root, name)


@app.command(rich_help_panel=STAGES_PANEL)
def calibrate(params: ParamsOption = Path("params.yaml"), root: RootOption = Path(".")) -> None:
    """Stage calibrate: temperature scaling of each loss's and seed's finished network (fitted on one half of the test set, scored on the other), no retraining."""
    _run_stage(params, "calibrate", root)


@app.command(rich_help_panel=STAGES_PANEL)
def report(params: ParamsOption = Path("params.yaml"), root: RootOption = Path(".")) -> None:
    """Stage report: figures, summary metrics and the claims report."""
    _run_stage(params, "report", root)


AllCommitsOption = Annotated[
    bool, typer.Option("--all-commits", help="Include experiments of every commit, not just HEAD's.")
]
RevOption = Annotated[
    str | None,
    typer.Option(
        "--rev",
        help="Read the experiments and params.yaml of this commit, not HEAD's: the one they were run from.",
    ),
]


@app.command(rich_help_panel=USER_PANEL)
def compare(
    all_commits: AllCommitsOption = False,
    rev: RevOption = None,
    params: ParamsOption = Path("params.yaml"),
    root: RootOption = Path("."),
) -> None:
    """Runs side by side (this commit and its DVC experiments): what differs, and each loss's headline numbers."""

    def step(loaded: Params, console: Console) -> object:
        from lossbench.experiments import compare as run_compare

        return run_compare(root, console, all_commits, rev)  # params.yaml is checked, not needed

    _run(params, step)


@app.command("run", rich_help_panel=USER_PANEL)
def run(
    set_param: Annotated[
        list[str] | None,
        typer.Option(
            "--set-param",
            "-S",
            help="KEY=VALUE as in `dvc exp run -S`; KEY=A,B,C gives one experiment per value (a grid "
            "with other -S); KEY=[A,B] is one list value. Repeat for several keys.",
        ),
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option("--scheduler", help="An existing Dask scheduler, e.g. tcp://host:8786.")
    ] = None,
    cluster: Annotated[
        Path | None,
        typer.Option("--cluster", help="A YAML file naming a Slurm, PBS or SGE cluster (dask-jobqueue)."),
    ] = None,
    remote: Annotated[
        str | None,
        typer.Option(
            "--remote",
            help="DVC remote the tasks push their results to. Default: this repository's default remote "
            "if it lies outside the repository, else .dvc/tmp/lossbench-results, which git ignores (the "
            "shipped dvc-remote/ is never written).",
        ),
    ] = None,
    repo: Annotated[
        str | None, typer.Option("--repo", help="The repository the workers clone (default: this one).")
    ] = None,
    retries: Annotated[int, typer.Option("--retries", help="Retries of a failed task, 0 to 10.")] = 2,
    wait_for_workers: Annotated[
        float,
        typer.Option(
            "--wait-for-workers",
            metavar="MINUTES",
            help="Give up when no worker has been available this long (batch jobs still queued, "
            "workers preempted).",
        ),
    ] = 30.0,
    print_job_script: Annotated[
        bool,
        typer.Option(
            "--print-job-script",
            help="With --cluster: print the job script dask-jobqueue would submit, then exit; "
            "nothing is submitted or trained.",
        ),
    ] = False,
    root: RootOption = Path("."),
) -> None:
    """Train this commit's training stages, or a grid of experiments, as Dask tasks; then `dvc repro` here (`dvc exp run -S` per grid point) takes every one from the run-cache.

    Each task trains one stage (train@NAME-SEED) in a clone of the commit and pushes it to --remote. Default: a cluster on this machine, one worker per core. --cluster FILE keys: kind (slurm, pbs, sge), cores and memory per job, jobs, and walltime, queue, account, job_extra_directives (a list), interface, job_script_prologue (a list of shell lines each job runs first), log_directory (an existing folder); --print-job-script shows the job script. --scheduler: start its workers with `--nthreads 1 --resources train=1`. Progress: a row per running stage and one for the whole run, a line per stage as it ends. docs/scale-out.md has the details.
    """

    def step(loaded: Params, console: Console) -> object:
        from lossbench.engine import run_on_dask

        # Hours of waiting on tasks: the cycle collector back on where lossbench.__main__
        # turned it off for start-up, sparing what exists by now, the imported modules.
        if not gc.isenabled():
            gc.freeze()
            gc.enable()
        return run_on_dask(
            root,
            set_param or [],
            console,
            scheduler=scheduler,
            cluster_file=cluster,
            remote=remote,
            repo=repo,
            retries=retries,
            wait_for_workers=wait_for_workers,
        )

    def root_first() -> None:
        from lossbench.engine import check_root

        check_root(root)  # a missing folder or commit, not "params.yaml: file not found"

    def show_job_script(console: Console) -> None:
        from lossbench.engine import job_script

        if cluster is None or scheduler is not None:
            raise ParamsError(
                "--print-job-script: give --cluster FILE (and no --scheduler); it prints its job script"
            )
        console.out(job_script(cluster), end="", highlight=False)

    if print_job_script:
        _guarded(show_job_script)
    else:
        _run(root / "params.yaml", step, root_first)


# Help texts spell the claims out as claims.STATEMENTS states them (tested).
@app.command("sweep-report", rich_help_panel=USER_PANEL)
def sweep_report(
    loss: Annotated[str, typer.Option("--loss", help="The focal loss whose γ the sweep varied.")],
    all_commits: AllCommitsOption = False,
    rev: RevOption = None,
    params: ParamsOption = Path("params.yaml"),
    root: RootOption = Path("."),
) -> None:
    """Accuracy and ECE against γ across a DVC sweep's experiments, and claim 4: "a γ between 0.5 and 2 is best; larger γ is not better" (plots/sweep.md)."""

    def step(loaded: Params, console: Console) -> object:
        from lossbench.sweep import sweep_report as run_sweep_report

        return run_sweep_report(loaded, loss, root, console, all_commits, rev)

    _run(params, step)


@app.command("variants-report", rich_help_panel=USER_PANEL)
def variants_report(
    clean: Annotated[
        Path,
        typer.Option(
            "--clean", help="The folder of the clean run (same protocol) to pair with, e.g. ../cifar10-jpeg."
        ),
    ],
    all_commits: AllCommitsOption = False,
    rev: RevOption = None,
    params: ParamsOption = Path("params.yaml"),
    root: RootOption = Path("."),
) -> None:
    """Claim 5, "focal loss helps with class imbalance; CE is sensitive to label noise": long-tailed and noisy-label experiments against the clean run (plots/variants.md)."""

    def step(loaded: Params, console: Console) -> None:
        from lossbench.variants import variants_report as run_variants_report

        run_variants_report(loaded, clean, root, console, all_commits, rev)

    _run(params, step)


@app.command(rich_help_panel=USER_PANEL)
def plan(
    difference: Annotated[
        list[float] | None,
        typer.Option(
            "--difference",
            min=0.01,
            max=100.0,
            help="A gap in final test accuracy, in percentage points, to plan for (repeat; default 1 and 2).",
        ),
    ] = None,
    loss: Annotated[
        list[str] | None, typer.Option("--loss", help="Pool only these losses' pairs (repeat; default all).")
    ] = None,
    params: ParamsOption = Path("params.yaml"),
    root: RootOption = Path("."),
) -> None:
    """How many seeds a difference (or an equivalence margin) needs at 80% power, from the spread of the committed runs."""

    def step(loaded: Params, console: Console) -> object:
        from lossbench.planning import plan as run_plan

        return run_plan(
            loaded, root, console, [value / 100 for value in difference or [1.0, 2.0]], loss or []
        )

    _run(params, step)


@app.command(rich_help_panel=USER_PANEL)
def numerics(
    print_reference: Annotated[
        bool,
        typer.Option("--print", help="Print this machine's digests in the form numerics_check.py keeps."),
    ] = False,
) -> None:
    """Check in seconds whether this machine computes the committed results bit for bit (exit 0 if so)."""
    from lossbench.numerics_check import numerics_check

    if not numerics_check(Console(soft_wrap=True), print_reference):
        raise typer.Exit(1)


# Every command, whoever adds it: flags without a `<bool>` in --help.
for _info in app.registered_commands:
    if _info.cls in (None, TyperCommand):
        _info.cls = _Command


def main() -> None:
    app()
