"""The committed study reports rebuild, in a fresh clone, from the experiments the
repository ships: each study's experiments.bundle holds its DVC experiments' git refs
(`git clone` does not copy refs/exps), and the reports need nothing else."""

import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import PROJECT, run_in, write_params

# study folder, the report command's arguments, the files it writes
STUDIES = {
    "cifar10-gamma": (["sweep-report", "--loss", "focal"], ["plots/sweep.csv", "plots/sweep.md"]),
    "cifar10-variants": (
        ["variants-report", "--clean", "../cifar10-jpeg"],
        ["plots/imbalance.csv", "plots/noise.csv", "plots/variants.md"],
    ),
}


@pytest.mark.parametrize("study", sorted(STUDIES))
def test_a_study_report_rebuilds_from_its_shipped_experiments(study: str, tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    run_in(tmp_path, "git", "clone", "-q", str(PROJECT), str(clone))
    bundle = f"studies/{study}/experiments.bundle"
    run_in(clone, "git", "fetch", "-q", bundle, "refs/exps/*:refs/exps/*")
    refs = run_in(clone, "git", "for-each-ref", "--format=%(refname)", "refs/exps").stdout.split()
    # refs/exps/AB/CDEF…/NAME: the experiments' baseline commit is ABCDEF…
    baselines = {"".join(ref.split("/")[2:4]) for ref in refs}
    assert refs and len(baselines) == 1, refs
    arguments, outputs = STUDIES[study]
    folder = clone / "studies" / study
    committed = {output: (folder / output).read_text() for output in outputs}
    for output in outputs:
        (folder / output).unlink()
    # The workspace has moved on (other seeds, one CE loss): under --rev the report is the commit's.
    params = yaml.safe_load((folder / "params.yaml").read_text())
    write_params(folder, params | {"seeds": [1, 2], "losses": {"ce": {"kind": "ce"}}})
    run_in(folder, "lossbench", *arguments, "--rev", baselines.pop())
    for output in outputs:
        assert (folder / output).read_text() == committed[output], output


# What a run writes beside its declared outputs (timings, checkpoints, the live note) and
# the runs' own files, which are DVC's (dvc-remote/): git tracks none of them.
UNDECLARED = ["/data/checkpoints/", "/data/live/", "/data/timings/", "/data/runs/*/seed*/"]


@pytest.mark.fast
@pytest.mark.parametrize(
    "study", sorted(path.name for path in (PROJECT / "studies").iterdir() if path.is_dir())
)
def test_a_study_ignores_and_tracks_none_of_the_undeclared_files(study: str) -> None:
    """The project's .gitignore names them from its root only; each study's must too, or
    `git add` of a finished study commits a run's wall times (or, where DVC wrote no
    .gitignore for a new loss's runs, the runs themselves)."""
    folder = PROJECT / "studies" / study
    ignored = (folder / ".gitignore").read_text().splitlines()
    assert [line for line in UNDECLARED if line not in ignored] == []
    tracked = subprocess.run(
        ["git", "ls-files", *(f"studies/{study}{line}" for line in UNDECLARED)],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert tracked == []
