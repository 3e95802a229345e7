"""Portable numerics: pinned CPU kernels, recorded with every run, and a self-check."""

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_PARAMS, lossbench, write_params

from lossbench.numerics import PINNED_KERNELS, X86_64

# `lossbench numerics` as `python -m lossbench numerics` runs it, after one line (stderr)
# on the CPU as the process sees it: MKL's own vendor test (which decides MKL's code
# branch) and the instruction sets torch finds. The cycle collector is off from the start,
# as the command has it for its start-up (lossbench.__main__).
NUMERICS_ON_THE_CPU_SEEN = """
import gc
gc.disable()
import ctypes, sys
from pathlib import Path
import lossbench
import torch.cpu
mkl = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
found = torch.cpu.get_capabilities()
print(f"cpu: intel {mkl.mkl_serv_intel_cpu_true()}, avx2 {found['avx2']}, avx512 {found['avx512_f']}", file=sys.stderr)
sys.argv = ["lossbench", "numerics"]
from lossbench.__main__ import main
main()
"""


def _numerics_with(aten_capability: str) -> subprocess.CompletedProcess[str]:
    """`lossbench numerics` with ATen's kernel level changed after the pin, before torch computes."""
    program = (
        "import os, sys, lossbench; "
        f"os.environ['ATEN_CPU_CAPABILITY'] = {aten_capability!r}; "
        "sys.argv = ['lossbench', 'numerics']; "
        "from lossbench.__main__ import main; main()"
    )
    return subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=300)


def test_this_machine_reproduces_the_committed_numerics(tmp_path: Path) -> None:
    result = lossbench(tmp_path, "numerics")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("numerics: this machine reproduces the committed results bit for bit")
    assert "ATen AVX2 kernels" in result.stdout
    assert "note:" not in result.stderr  # the settings this process inherits are the pinned ones


def test_kernel_settings_of_the_user_are_replaced_and_the_user_is_told(tmp_path: Path) -> None:
    users = {"ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AUTO\x1b[2J", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    result = lossbench(tmp_path, "numerics", env=users)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("numerics: this machine reproduces the committed results bit for bit")
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1, result.stderr
    note = notes[0]
    assert f"ATEN_CPU_CAPABILITY=avx512 with {PINNED_KERNELS['ATEN_CPU_CAPABILITY']}" in note
    assert f"MKL_CBWR=AUTO\\x1b[2J with {PINNED_KERNELS['MKL_CBWR']}" in note  # escaped, not sent
    assert "ONEDNN_MAX_CPU_ISA" not in note  # set to the pinned value already
    assert "\x1b" not in result.stderr


def test_other_kernels_are_told_apart_and_named() -> None:
    result = _numerics_with("default")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "computes other bits than the committed results" in result.stdout
    assert "ATen runs DEFAULT kernels, not the pinned AVX2" in result.stdout
    assert "differs in: init, mae, ce, focal" in result.stdout  # the initial weights already differ


# QEMU's models of an Intel and an AMD CPU with AVX2. QEMU emulates no AVX-512, so this
# machine's own run (test_this_machine_reproduces_…, AVX-512 here) covers that.
EMULATED_CPUS = {"Haswell": "intel 1", "EPYC-Milan": "intel 0"}


@pytest.mark.slow  # about 40 s of CPU: torch's import alone is 22 s under emulation
@pytest.mark.skipif(platform.machine() not in X86_64, reason="the pinned kernels are x86-64's")
@pytest.mark.parametrize("cpu", EMULATED_CPUS)
def test_emulated_intel_and_amd_cpus_reproduce_the_committed_numerics(cpu: str) -> None:
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        missing = "qemu-x86_64 is missing: `bash .ci/setup` installs it (Debian's qemu-user)"
        if os.environ.get("CI", "").lower() in {"true", "1"}:
            pytest.fail(missing)
        pytest.skip(missing)
    result = subprocess.run(
        [qemu, "-cpu", cpu, sys.executable, "-c", NUMERICS_ON_THE_CPU_SEEN],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert f"cpu: {EMULATED_CPUS[cpu]}, avx2 True, avx512 False" in result.stderr, result.stderr
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("numerics: this machine reproduces the committed results bit for bit")


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
