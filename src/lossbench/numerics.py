"""The CPU kernels torch uses, fixed so that every x86-64 CPU with AVX2 computes
the same bits, and a record of what was in force.

PyTorch picks its CPU kernels by what the CPU offers: ATen's vectorised
kernels, MKL's code branch and oneDNN's instruction set all go to AVX-512
where there is one, and each rounds differently. Pinned to AVX2 (with MKL's
strict mode, which makes its results independent of the CPU within that
branch), an AVX-512 machine trains bit for bit what an AVX2-only machine
trains (`../shared/numerics` fingerprints and `lossbench numerics`). All three
settings are read when torch first computes, so `pin_cpu_kernels` runs when
the lossbench package is imported (lossbench/__init__.py), before any
lossbench code computes anything.
"""

from __future__ import annotations

import os
import platform
from typing import Any

# Measured: these three together match across an AVX-512 Zen 4 and an AVX2-only
# Zen 3 EPYC (fingerprints in the README's "Same numbers on any machine").
PINNED_KERNELS = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2,STRICT",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}
X86_64 = frozenset({"x86_64", "AMD64"})


def pin_cpu_kernels() -> None:
    """Set the kernel choice for this process and the processes it starts.
    Only on x86-64: the settings name x86 instruction sets."""
    if platform.machine() in X86_64:
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
