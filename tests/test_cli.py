"""The `lossbench` command as a new user meets it: its help, --version, the
stage table, and what compare and sweep-report print."""

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from conftest import PROJECT, TINY_PARAMS, run_in
from rich.console import Console
from typer.testing import CliRunner

from lossbench import cli, experiments, sweep
from lossbench.claims import STATEMENTS
from lossbench.cli import STAGES, STAGES_PANEL, USER_PANEL, app
from lossbench.errors import MissingInput
from lossbench.params import Params

WIDE = {"COLUMNS": "200", "TERMINAL_WIDTH": "200"}


def _commands() -> dict[str, Any]:
    """The commands as click (typer's own copy of it) sees them, by name."""
    return dict(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


@pytest.mark.fast
def test_help_lists_the_stages_apart_from_the_commands_people_run() -> None:
    panels = {name: getattr(command, "rich_help_panel", None) for name, command in _commands().items()}
    assert {name for name, panel in panels.items() if panel == STAGES_PANEL} == set(STAGES)
    assert {name for name, panel in panels.items() if panel == USER_PANEL} == {
        "check",
        "compare",
        "sweep-report",
        "variants-report",
        "numerics",
        "plan",
        "run",
    }
    shown = CliRunner().invoke(app, ["--help"], env=WIDE).output
    assert f"─ {STAGES_PANEL} ─" in shown and f"─ {USER_PANEL} ─" in shown
    stages_at = shown.index(STAGES_PANEL)
    for name in STAGES:
        assert shown.index(f"│ {name} ") > stages_at, name
    for name in ("check", "compare", "numerics"):
        assert shown.index(f"│ {name} ") < stages_at, name


@pytest.mark.fast
def test_check_and_validate_say_how_they_differ() -> None:
    commands = _commands()
    check, validate = commands["check"].help or "", commands["validate"].help or ""
    assert "every check of stage validate" in check and "writes nothing" in check
    assert "print the configuration" in check
    assert "the pipeline's first" in validate and "the checks of `check`" in validate
    assert "data/validated.txt" in validate


@pytest.mark.fast
@pytest.mark.parametrize(("command", "claim"), [("sweep-report", 4), ("variants-report", 5)])
def test_help_spells_out_the_claim_it_tests(command: str, claim: int) -> None:
    statement = STATEMENTS[claim - 1][0].rstrip(".")
    spelled = statement[0].lower() + statement[1:]
    assert f'"{spelled}"' in (_commands()[command].help or "")
    shown = CliRunner().invoke(app, [command, "--help"], env=WIDE).output
    assert spelled in " ".join(shown.split())


@pytest.mark.fast
def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output == f"lossbench {version('lossbench')}\n"


@pytest.mark.fast
def test_the_stage_table_is_the_pipelines_stages_each_its_modules_entry() -> None:
    commands = {
        stage.get("do", stage)["cmd"].split()[1]
        for stage in yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"].values()
    }
    assert set(STAGES) == commands
    for name in ("validate", "publish", "report"):  # train and prepare load torch
        entry = STAGES[name]()
        assert entry.__module__ == f"lossbench.{name}" and entry.__name__ == name


def test_help_and_check_start_without_torch(tmp_path: Path) -> None:
    """Stage modules load only when their command runs: the help stays fast."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(TINY_PARAMS))
    script = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from lossbench.cli import app\n"
        "CliRunner().invoke(app, ['--help'])\n"
        "CliRunner().invoke(app, ['check'])\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('lossbench.')))\n"
    )
    shown = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    assert "torch'" not in shown and "lossbench.train" not in shown, shown
    assert "lossbench.validate" in shown  # check ran


HEADLINE = {"test_acc": 0.5, "test_sd": 0.01, "best_acc": 0.52, "ece": 0.03, "conv_ep": 2.0, "at_chance": 0}


def _exp_show(*runs: tuple[str, float]) -> list[dict[str, Any]]:
    """`dvc exp show --json` of commits whose metrics/ce.json (publish's headline) holds test_acc."""
    return [
        {
            "rev": rev * 40,
            "name": rev,
            "data": {
                "params": {"params.yaml": {"data": TINY_PARAMS}},
                "metrics": {"metrics/ce.json": {"data": HEADLINE | {"test_acc": accuracy}}},
            },
        }
        for rev, accuracy in runs
    ]


def _git_repository(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    run_in(root, "git", "init", "-q")
    return root


@pytest.mark.parametrize(("runs", "title"), [(1, "1 run: what differs"), (2, "2 runs: what differs")])
def test_compare_counts_its_runs_in_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runs: int, title: str
) -> None:
    shown = _exp_show(*[(f"r{index}", 0.5 + index / 100) for index in range(runs)])
    monkeypatch.setattr(experiments, "exp_show", lambda root, all_commits=False, rev=None: shown)
    table = experiments.compare(_git_repository(tmp_path), Console())
    assert str(table.title).startswith(title)


def _study_params(dataset: dict[str, Any]) -> Params:
    return Params.model_validate(
        {**TINY_PARAMS, "data": dataset, "losses": {"focal": {"kind": "focal", "gamma": 2.0}}}
    )


IMAGES = {
    "dataset": "imagefolder",
    "imagefolder": {"train_root": "cifar10-jpeg/train", "test_root": "cifar10-jpeg/test"},
}


def test_sweep_report_suggests_the_command_that_queues_a_studys_sweep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The study's pipeline, its images (-C) and its params file, named from the top
    folder, as in the README's *Claims 4 and 5*."""
    study = _git_repository(tmp_path) / "studies" / "cifar10-gamma"
    study.mkdir(parents=True)
    monkeypatch.setattr(sweep, "exp_show", lambda root, all_commits=False, rev=None: [])
    with pytest.raises(MissingInput) as raised:
        sweep.sweep_report(_study_params(IMAGES), "focal", study, Console())
    S = "studies/cifar10-gamma"
    assert (
        "from the repository's top folder (`cd ../..`) run e.g. "
        f"`dvc exp run --queue {S}/dvc.yaml -C {S}/data/raw/imagefolder/cifar10-jpeg "
        f"-S '{S}/params.yaml:losses.focal.gamma=0.0,0.5,1.0,2.0' && dvc queue start`"
    ) in str(raised.value)


@pytest.mark.parametrize(
    ("dataset", "copied"),
    [
        ({"dataset": "synthetic"}, ""),
        ({"dataset": "cifar10_jpeg"}, ""),  # its archive is in git
        ({"dataset": "cifar10"}, "-C data/raw/cifar10 "),
        (IMAGES, "-C data/raw/imagefolder/cifar10-jpeg "),
        ({"dataset": "imagefolder", "imagefolder": {"root": "mine/all"}}, "-C data/raw/imagefolder/mine "),
    ],
)
def test_in_the_project_itself_the_command_needs_no_paths(
    tmp_path: Path, dataset: dict[str, Any], copied: str
) -> None:
    command = experiments.queue_command(_study_params(dataset), _git_repository(tmp_path), "data.seed=1,2")
    assert command == f"run e.g. `dvc exp run --queue {copied}-S 'data.seed=1,2' && dvc queue start`"


@pytest.mark.fast
def test_cli_module_imports_no_stage_module_at_start() -> None:
    """The dispatch is the explicit table, not a module name built from a string."""
    source = Path(cli.__file__).read_text()
    assert "import_module" not in source and "__import__" not in source
