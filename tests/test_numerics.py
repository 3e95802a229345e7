"""Portable numerics: pinned CPU kernels, recorded with every run, and a self-check."""

import json
import subprocess
import sys
from pathlib import Path

from conftest import TINY_PARAMS, lossbench, write_params

from lossbench.numerics import PINNED_KERNELS


def _numerics_with(aten_capability: str) -> subprocess.CompletedProcess[str]:
    """`lossbench numerics` with ATen's kernel level changed after the pin, before torch computes."""
    program = (
        "import os, sys, lossbench; "
        f"os.environ['ATEN_CPU_CAPABILITY'] = {aten_capability!r}; "
        "sys.argv = ['lossbench', 'numerics']; "
        "from lossbench.cli import main; main()"
    )
    return subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=300)


def test_this_machine_reproduces_the_committed_numerics(tmp_path: Path) -> None:
    result = lossbench(tmp_path, "numerics")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("numerics: this machine reproduces the committed results bit for bit")
    assert "ATen AVX2 kernels" in result.stdout


def test_other_kernels_are_told_apart_and_named() -> None:
    result = _numerics_with("default")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "computes other bits than the committed results" in result.stdout
    assert "ATen runs DEFAULT kernels, not the pinned AVX2" in result.stdout
    assert "differs in: init, mae, ce, focal" in result.stdout  # the initial weights already differ


def test_every_run_records_the_numerics_it_was_made_under(tmp_path: Path) -> None:
    params = {**TINY_PARAMS, "losses": {"ce": {"kind": "ce"}}, "machine": {"workers": 2}}
    params["train"] = {**TINY_PARAMS["train"], "epochs": 1}  # type: ignore[dict-item]
    write_params(tmp_path, params)
    assert lossbench(tmp_path, "prepare").returncode == 0
    assert lossbench(tmp_path, "train", "ce", "1").returncode == 0
    numerics = json.loads((tmp_path / "data/runs/ce/seed1/metrics.json").read_text())["settings"]["numerics"]
    assert numerics["kernels"] == PINNED_KERNELS
    assert numerics["cpu_capability"] == "AVX2" and numerics["device"] == "cpu"
    assert numerics["torch"].startswith("2.")


def test_the_report_names_the_numerics_and_runs_made_under_other_ones(reproduced: Path) -> None:
    report = (reproduced / "plots" / "report.md").read_text()
    assert "Numerics: torch 2." in report and ", AVX2 kernels (pinned), cpu." in report
    metrics_file = reproduced / "metrics" / "details" / "ce.json"
    metrics = json.loads(metrics_file.read_text())
    metrics["settings"]["numerics"] |= {
        "cpu_capability": "AVX512",
        "kernels": dict.fromkeys(PINNED_KERNELS, "native"),
    }
    metrics_file.write_text(json.dumps(metrics))
    result = lossbench(reproduced, "report")
    assert result.returncode == 0, result.stderr
    line = (
        "Runs made under different numerics (their numbers are not bit-comparable, and are compared anyway): "
    )
    assert f"note: {line}" in result.stdout
    assert "ce: torch 2." in result.stdout and "AVX512 kernels (native), cpu" in result.stdout
    assert "mae, focal_low, focal_high: torch 2." in result.stdout
    assert line in (reproduced / "plots" / "report.md").read_text()
