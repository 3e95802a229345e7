"""The numerics runs were made under (torch build, CPU kernels, device), as
data: which runs share which, so that results of unlike machines are never
pooled unsaid. A report decides from `RunNumerics.consistent` and writes
`RunNumerics.text()`; it never reads its own sentence back.
"""

from __future__ import annotations

from dataclasses import dataclass

from lossbench.numerics import PINNED_KERNELS


def numerics_of(settings: object) -> str:
    """The numerics a run was made under, from its recorded settings, in words."""
    recorded = settings.get("numerics") if isinstance(settings, dict) else None
    if not isinstance(recorded, dict):
        return "not recorded (made before runs recorded their numerics)"
    kernels = recorded.get("kernels")
    if kernels == PINNED_KERNELS:
        choice = "pinned"
    elif isinstance(kernels, dict) and set(kernels.values()) == {"native"}:
        choice = "native"
    else:
        choice = "set as " + (
            ", ".join(f"{name}={value}" for name, value in kernels.items())
            if isinstance(kernels, dict)
            else str(kernels)
        )
    return (
        f"torch {recorded.get('torch')}, {recorded.get('cpu_capability')} kernels ({choice}), "
        f"{recorded.get('device')}"
    )


@dataclass(frozen=True)
class RunNumerics:
    """Runs grouped by the numerics they were made under (`numerics_of`), in first-seen order."""

    groups: dict[str, list[str]]  # numerics in words -> the runs made under them

    @classmethod
    def of(cls, made_under: dict[str, str]) -> RunNumerics:
        """From each run's numerics in words."""
        groups: dict[str, list[str]] = {}
        for run, numerics in made_under.items():
            groups.setdefault(numerics, []).append(run)
        return cls(groups)

    @property
    def consistent(self) -> bool:
        """Every run made under the same numerics: their numbers are bit-comparable."""
        return len(self.groups) == 1

    def text(self) -> str:
        """One sentence: the numerics every run shares, or which runs were made under which."""
        if self.consistent:
            return f"Numerics: {next(iter(self.groups))}."
        return (
            "Runs made under different numerics (their numbers are not bit-comparable, and are compared "
            "anyway): "
            + "; ".join(f"{', '.join(runs)}: {numerics}" for numerics, runs in self.groups.items())
            + "."
        )
