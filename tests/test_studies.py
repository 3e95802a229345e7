"""The committed study reports rebuild, in a fresh clone, from the experiments the
repository ships: each study's experiments.bundle holds its DVC experiments' git refs
(`git clone` does not copy refs/exps), and the reports need nothing else."""

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
