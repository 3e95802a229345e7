"""dvc.yaml against the code: every stage depends on all the lossbench code its command runs."""

import ast
import hashlib
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import PROJECT, run_in

from lossbench.seed_run import STAGE_PLUMBING

PACKAGE = PROJECT / "src" / "lossbench"
# The CLI only parses arguments and hands over to a stage's module; a change to
# it (a new command, a help text) must not rerun the pipeline.
DISPATCH = {"lossbench.cli", "lossbench.__main__"}


def _source(module: str) -> Path:
    relative = module.removeprefix("lossbench").removeprefix(".").replace(".", "/")
    if (PACKAGE / relative / "__init__.py").is_file():
        return PACKAGE / relative / "__init__.py"
    return PACKAGE / f"{relative}.py"


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


def _relative(path: Path) -> str:
    return str(path.relative_to(PROJECT))


# The loss kinds' modules, which params.py imports by file name (not seen by `imports_of`).
KIND_MODULES = {_relative(path) for path in (PACKAGE / "losses").glob("*.py") if path.name != "__init__.py"}


def declared_code(stage: dict[str, object]) -> set[str]:
    """The lossbench files a stage's deps name; a folder stands for every module in it."""
    declared: set[str] = set()
    for dep in stage["deps"]:  # type: ignore[attr-defined]
        if not dep.startswith("${code}/"):
            continue
        path = PROJECT / dep.replace("${code}", "src/lossbench")
        declared |= (
            {_relative(module) for module in path.rglob("*.py")} if path.is_dir() else {_relative(path)}
        )
    return declared


# A stage whose entry function is not in the module its command names (cli.STAGES).
ENTRY = {"train": "lossbench.train_stage"}


def code_of(command: str) -> set[str]:
    """The modules a stage's outputs depend on: what its command imports, but for
    a training stage's plumbing (scheduling, progress, lifeline, restore), which
    decides nothing it writes. Importing any lossbench module runs the package's
    __init__ first (it pins the kernels)."""
    return (imports_of(ENTRY.get(command, f"lossbench.{command}")) | imports_of("lossbench")) - STAGE_PLUMBING


@pytest.mark.fast
def test_the_training_plumbing_is_no_part_of_what_training_computes() -> None:
    """What a training stage writes comes from seed_run (evaluation, the files) and the
    loop it runs (train); neither imports the plumbing left out of its deps."""
    computing = imports_of("lossbench.seed_run") | imports_of("lossbench.train") | imports_of("lossbench")
    assert not computing & STAGE_PLUMBING, sorted(computing & STAGE_PLUMBING)
    assert code_of("train") == computing
    assert imports_of("lossbench.train_stage") >= STAGE_PLUMBING - DISPATCH, "a listed module is never loaded"


@pytest.mark.fast
def test_every_stage_depends_on_the_code_its_command_imports() -> None:
    stages = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"]
    assert stages, "no stages"
    for name, stage in stages.items():
        stage = stage.get("do", stage)  # foreach stages: the template
        command = stage["cmd"].split()
        assert command[0] == "lossbench" and len(command) == 2, f"{name}: {stage['cmd']}"
        modules = code_of(command[1])
        needed = {_relative(_source(module)) for module in modules}
        declared = declared_code(stage)
        assert needed <= declared, f"{name} lacks {sorted(needed - declared)}"
        # Every stage reads every kind's module to parse params.yaml; it may depend on them.
        extra = declared - needed - KIND_MODULES
        assert not extra, f"{name} depends on code it does not run: {sorted(extra)}"


@pytest.mark.fast
def test_a_train_stage_depends_on_its_own_loss_kind_only() -> None:
    """train@NAME-SEED depends on no kind's module directly, but on data/loss_code/NAME.txt,
    which validate (depending on every kind) writes from NAME's kind's module."""
    stages = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"]
    train = stages["train"]
    assert not declared_code(train) & KIND_MODULES, "train depends on every loss kind's module"
    assert "data/loss_code/${item.loss}.txt" in train["deps"]
    assert declared_code(stages["validate"]) >= KIND_MODULES
    assert {"data/loss_code": {"cache": False, "persist": True}} in stages["validate"]["outs"]
    # A kind's module imports no other kind's: its digest is all of its own code.
    for module in KIND_MODULES:
        imported = {_relative(_source(name)) for name in imports_of(f"lossbench.losses.{Path(module).stem}")}
        assert imported & KIND_MODULES == {module}, f"{module} imports {sorted(imported & KIND_MODULES)}"


@pytest.mark.fast
def test_no_command_holds_a_value_from_params() -> None:
    """A stage's command is fixed text: nothing from params.yaml reaches a shell."""
    for name, stage in yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"].items():
        assert "${" not in stage.get("do", stage)["cmd"], name


@pytest.mark.fast
def test_every_study_runs_the_projects_pipeline() -> None:
    """studies/NAME/dvc.yaml is the project's dvc.yaml with only its code paths moved
    (the figures of a study's own report are declared beside them, in plots/dvc.yaml)."""
    project = (PROJECT / "dvc.yaml").read_text()
    studies = sorted((PROJECT / "studies").glob("*/dvc.yaml"))
    assert studies
    for path in studies:
        study = yaml.safe_load(path.read_text())
        root = yaml.safe_load(project)
        assert study["vars"] == [{"code": "../../src/lossbench"}]
        assert study["plots"] == root["plots"]
        assert {k: v for k, v in study.items() if k not in ("vars", "plots")} == {
            k: v for k, v in root.items() if k not in ("vars", "plots")
        }
        for folder in ("data/raw/imagefolder", "data/raw/cifar10"):
            assert (path.parent / folder / "README.md").is_file(), folder


@pytest.mark.fast
def test_no_stage_tracks_the_analysis_params() -> None:
    """The equivalence margins change verdicts, never a trained number, and a
    params.yaml without them must still run (DVC refuses a tracked key that is
    missing): only validate reads them, with all of params.yaml, and its output
    never changes."""
    for pipeline in [PROJECT / "dvc.yaml", *sorted((PROJECT / "studies").glob("*/dvc.yaml"))]:
        stages = yaml.safe_load(pipeline.read_text())["stages"]
        for name, stage in stages.items():
            tracked = [str(p) for p in (stage.get("do") or stage).get("params", [])]
            assert not any(p.startswith("analysis") for p in tracked), (pipeline, name)


def test_a_folder_of_code_is_its_source_not_pythons_caches(tmp_path: Path) -> None:
    """validate and report depend on the folder src/lossbench/losses: Python's bytecode
    caches in it (which appear on first import) must not make them stale."""
    run_in(tmp_path, "git", "init", "-q")
    run_in(tmp_path, "dvc", "init", "-q")
    shutil.copy(PROJECT / ".dvcignore", tmp_path / ".dvcignore")
    (tmp_path / "code" / "__pycache__").mkdir(parents=True)
    (tmp_path / "code" / "kind.py").write_text("x = 1\n")
    (tmp_path / "code" / "__pycache__" / "kind.cpython-311.pyc").write_bytes(b"one")
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  s:\n    cmd: echo done > out.txt\n    deps: [code]\n    outs: [out.txt]\n"
    )
    run_in(tmp_path, "dvc", "repro")
    (tmp_path / "code" / "__pycache__" / "kind.cpython-311.pyc").write_bytes(b"two")
    (tmp_path / "code" / "__pycache__" / "kind.cpython-312.pyc").write_bytes(b"three")
    assert run_in(tmp_path, "dvc", "status", "--json").stdout.strip() == "{}"
    (tmp_path / "code" / "kind.py").write_text("x = 2\n")
    assert "s" in run_in(tmp_path, "dvc", "status", "--json").stdout


def test_every_committed_lock_is_of_this_pipeline_and_this_code() -> None:
    """Each committed dvc.lock holds only stages its dvc.yaml defines (DVC leaves behind
    the entries of a renamed stage), and each of them records the lossbench code as it
    is now: a code change must be followed by a `dvc repro` of what it touches before
    the results are committed, or a fresh clone's `dvc status` says they are stale."""
    stale = []
    for lock_path in [PROJECT / "dvc.lock", *sorted((PROJECT / "studies").glob("*/dvc.lock"))]:
        folder = lock_path.parent
        defined = run_in(
            PROJECT, "dvc", "stage", "list", "--names-only", str(folder / "dvc.yaml")
        ).stdout.split()
        names = {name.rpartition(":")[2] for name in defined}
        locked = yaml.safe_load(lock_path.read_text())["stages"]
        where = lock_path.relative_to(PROJECT)
        stale += [f"{where}: {stage}: not in its dvc.yaml" for stage in sorted(set(locked) - names)]
        for stage, entry in locked.items():
            for dep in entry.get("deps", []):
                source = (folder / dep["path"]).resolve()
                code = source.is_relative_to(PACKAGE) and source.is_file()
                if code and hashlib.md5(source.read_bytes()).hexdigest() != dep["md5"]:
                    stale.append(f"{where}: {stage}: {source.relative_to(PROJECT)} changed since it ran")
    assert not stale, "\n".join(stale)
