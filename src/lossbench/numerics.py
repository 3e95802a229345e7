"""The CPU kernels torch uses, fixed so that every x86-64 CPU with AVX2 computes
the same bits, and a record of what was in force.

PyTorch picks its CPU kernels by what the CPU offers: ATen's vectorised
kernels, MKL's code branch and oneDNN's instruction set all go to AVX-512
where there is one, and each rounds differently. MKL also looks at the vendor:
a requested AVX2 branch is taken on Intel CPUs only (AMD ones get MKL's own
choice), so its one branch that gives the same bits on both is COMPATIBLE
(MKL's guide: "Intel and Intel compatible CPUs"). ATen and oneDNN pinned to
AVX2 and MKL to COMPATIBLE, AMD CPUs with and without AVX-512 and Intel CPUs
with AVX2 train the same bits (README, "Same numbers on any machine", also on
Intel with AVX-512; `lossbench numerics` checks a machine, tests/test_numerics.py
emulated Intel and AMD CPUs).
All three settings are read when torch first computes, so `pin_cpu_kernels`
runs when the lossbench package is imported (lossbench/__init__.py), before
any lossbench code computes anything.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

from lossbench.errors import shown

# Measured together: the same bits on an AVX-512 Zen 4, an AVX2-only Zen 3, an
# emulated Haswell and EPYC-Milan, and Zen 4 with MKL told it is an Intel CPU
# (README's "Same numbers on any machine"). With MKL_CBWR=AVX2,STRICT the Intel
# ones differed: MKL's SGEMM and vector exp/log took another branch there.
PINNED_KERNELS = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "COMPATIBLE",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}
X86_64 = frozenset({"x86_64", "AMD64"})


def pin_cpu_kernels() -> None:
    """Set the kernel choice for this process and the processes it starts, and
    say on stderr which of the user's own settings it replaced (the lossbench
    processes it starts inherit the pinned ones and say nothing).
    Only on x86-64: the settings name x86 instruction sets."""
    if platform.machine() not in X86_64:
        return
    replaced = [
        f"{name}={shown(os.environ[name])} with {value}"
        for name, value in PINNED_KERNELS.items()
        if os.environ.get(name, value) != value
    ]
    if replaced:
        print(
            f"note: lossbench replaces {', '.join(replaced)}, so that this machine computes the "
            'bits every x86-64 CPU with AVX2 computes (README, "Same numbers on any machine")',
            file=sys.stderr,
        )
    os.environ.update(PINNED_KERNELS)


def numerics_in_force(device: str) -> dict[str, Any]:
    """What decides the bits of a run here: torch's build, the kernel level ATen
    dispatches to, the pinned settings as set, and the device."""
    import torch

    return {
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "kernels": {name: os.environ.get(name, "native") for name in PINNED_KERNELS},
        "device": device,
    }
