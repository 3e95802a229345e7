"""What the runs were made under, as data the reports decide from, and the sentence they write."""

import pytest

from lossbench.numerics import PINNED_KERNELS
from lossbench.run_numerics import RunNumerics, numerics_of

pytestmark = pytest.mark.fast

CPU = {"torch": "2.5.0", "cpu_capability": "AVX2", "kernels": PINNED_KERNELS, "device": "cpu"}


def test_runs_under_one_numerics_are_consistent() -> None:
    made_under = RunNumerics.of({"ce": numerics_of({"numerics": CPU}), "mae": numerics_of({"numerics": CPU})})
    assert made_under.consistent
    assert made_under.groups == {"torch 2.5.0, AVX2 kernels (pinned), cpu": ["ce", "mae"]}
    assert made_under.text() == "Numerics: torch 2.5.0, AVX2 kernels (pinned), cpu."


def test_runs_under_different_numerics_are_named_by_group() -> None:
    native = CPU | {"kernels": dict.fromkeys(PINNED_KERNELS, "native"), "cpu_capability": "AVX512"}
    made_under = RunNumerics.of(
        {"a": numerics_of({"numerics": CPU}), "b": numerics_of({"numerics": native}), "c": numerics_of({})}
    )
    assert not made_under.consistent
    assert made_under.text() == (
        "Runs made under different numerics (their numbers are not bit-comparable, and are compared anyway): "
        "a: torch 2.5.0, AVX2 kernels (pinned), cpu; b: torch 2.5.0, AVX512 kernels (native), cpu; "
        "c: not recorded (made before runs recorded their numerics)."
    )
