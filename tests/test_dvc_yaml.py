"""dvc.yaml against the code: every stage depends on all the lossbench code its command runs."""

import ast
from pathlib import Path

import yaml
from conftest import PROJECT

from lossbench.seed_run import STAGE_PLUMBING

PACKAGE = PROJECT / "src" / "lossbench"
# The CLI only parses arguments and hands over to a stage's module; a change to
# it (a new command, a help text) must not rerun the pipeline.
DISPATCH = {"lossbench.cli", "lossbench.__main__"}


def _source(module: str) -> Path:
    return PACKAGE / ("__init__.py" if module == "lossbench" else f"{module.removeprefix('lossbench.')}.py")


def imports_of(module: str) -> set[str]:
    """lossbench modules `module` imports, anywhere in its source (functions too), transitively."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        tree = ast.parse(_source(name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "lossbench":
                todo += [f"lossbench.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lossbench."):
                todo.append(node.module)  # type: ignore[arg-type]
            elif isinstance(node, ast.Import):
                todo += [alias.name for alias in node.names if alias.name.startswith("lossbench.")]
    return seen - DISPATCH


# A stage whose entry function is not in the module its command names (cli.STAGES).
ENTRY = {"train": "lossbench.train_stage"}


def code_of(command: str) -> set[str]:
    """The modules a stage's outputs depend on: what its command imports, but for
    a training stage's plumbing (scheduling, progress, lifeline, restore), which
    decides nothing it writes. Importing any lossbench module runs the package's
    __init__ first (it pins the kernels)."""
    return (imports_of(ENTRY.get(command, f"lossbench.{command}")) | imports_of("lossbench")) - STAGE_PLUMBING


def test_the_training_plumbing_is_no_part_of_what_training_computes() -> None:
    """What a training stage writes comes from seed_run (evaluation, the files) and the
    loop it runs (train); neither imports the plumbing left out of its deps."""
    computing = imports_of("lossbench.seed_run") | imports_of("lossbench.train") | imports_of("lossbench")
    assert not computing & STAGE_PLUMBING, sorted(computing & STAGE_PLUMBING)
    assert code_of("train") == computing
    assert imports_of("lossbench.train_stage") >= STAGE_PLUMBING - DISPATCH, "a listed module is never loaded"


def test_every_stage_depends_on_the_code_its_command_imports() -> None:
    stages = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"]
    assert stages, "no stages"
    for name, stage in stages.items():
        stage = stage.get("do", stage)  # foreach stages: the template
        command = stage["cmd"].split()
        assert command[0] == "lossbench" and len(command) == 2, f"{name}: {stage['cmd']}"
        modules = code_of(command[1])
        needed = {str(_source(module).relative_to(PROJECT)) for module in modules}
        declared = {
            dep.replace("${code}", "src/lossbench") for dep in stage["deps"] if dep.startswith("${code}/")
        }
        assert needed <= declared, f"{name} lacks {sorted(needed - declared)}"
        assert declared <= needed, f"{name} depends on code it does not run: {sorted(declared - needed)}"


def test_no_command_holds_a_value_from_params() -> None:
    """A stage's command is fixed text: nothing from params.yaml reaches a shell."""
    for name, stage in yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"].items():
        assert "${" not in stage.get("do", stage)["cmd"], name


def test_every_study_runs_the_projects_pipeline() -> None:
    """studies/NAME/dvc.yaml is the project's dvc.yaml with only its code paths moved,
    and, after the project's plots, the figures of the study's own report."""
    project = (PROJECT / "dvc.yaml").read_text()
    studies = sorted((PROJECT / "studies").glob("*/dvc.yaml"))
    assert studies
    own_figures = {"cifar10-gamma": ["plots/sweep.png"], "cifar10-variants": ["plots/variants.png"]}
    for path in studies:
        study = yaml.safe_load(path.read_text())
        root = yaml.safe_load(project)
        assert study["vars"] == [{"code": "../../src/lossbench"}]
        assert study["plots"] == root["plots"] + own_figures.get(path.parent.name, [])
        assert {k: v for k, v in study.items() if k not in ("vars", "plots")} == {
            k: v for k, v in root.items() if k not in ("vars", "plots")
        }
        for folder in ("data/raw/imagefolder", "data/raw/cifar10"):
            assert (path.parent / folder / "README.md").is_file(), folder
