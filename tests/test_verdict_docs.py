"""README and docs/claims-cifar10.md state only the verdicts the generated
summaries hold, in the one vocabulary, and never treat the detectable
difference as a bound."""

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from conftest import PROJECT

from lossbench.verdicts import CLAIM_VERDICT_WORDS, ClaimVerdict, all_of

STUDIES = PROJECT / "studies"
README = PROJECT / "README.md"
DOCS = PROJECT / "docs" / "claims-cifar10.md"
VERDICT = "|".join(CLAIM_VERDICT_WORDS)


def _summary(folder: Path) -> dict[str, str]:
    claims: dict[str, str] = json.loads((folder / "metrics" / "summary.json").read_text())["claims"]
    return claims


def _sweep_verdict() -> str:
    text = (STUDIES / "cifar10-gamma" / "plots" / "sweep.md").read_text()
    found = re.search(rf"^Claim 4, \*.*?\* \*\*({VERDICT})\.\*\*", text, re.MULTILINE)
    assert found is not None
    return found.group(1)


def _variant_halves() -> list[str]:
    text = (STUDIES / "cifar10-variants" / "plots" / "variants.md").read_text()
    halves = re.findall(rf"^\*\*(?:First|Second) half, [^*]*: ({VERDICT})\.\*\*", text, re.MULTILINE)
    assert len(halves) == 2
    return halves


def _cifar_verdicts() -> dict[str, str]:
    """Claims 1–3 from the JPEG study, 4 from the γ sweep, 5 from the variants study's two halves."""
    jpeg = _summary(STUDIES / "cifar10-jpeg")
    both = all_of([ClaimVerdict(half) for half in _variant_halves()]).value
    return {"1": jpeg["1"], "2": jpeg["2"], "3": jpeg["3"], "4": _sweep_verdict(), "5": both}


def test_readme_claims_table_states_the_generated_verdicts() -> None:
    rows = re.findall(
        r"^\| ([1-5]) \| \*([a-z ]+)\*:.*\| \*([a-z ]+)\*:.*\|$", README.read_text(), re.MULTILINE
    )
    assert [number for number, _, _ in rows] == ["1", "2", "3", "4", "5"]
    default, cifar = _summary(PROJECT), _cifar_verdicts()
    for number, stated_default, stated_cifar in rows:
        assert (number, stated_default) == (number, default[number])
        assert (number, stated_cifar) == (number, cifar[number])


def test_docs_state_the_generated_verdicts() -> None:
    text = DOCS.read_text()
    listed = dict(re.findall(rf"^([1-5])\. \*\*.* — \*({VERDICT})\*\.\*\*$", text, re.MULTILINE))
    assert listed == _summary(STUDIES / "cifar10-jpeg")
    headings = re.findall(
        rf"^### Claim (4|5, first half|5, second half): .* — \*({VERDICT})\*$", text, re.MULTILINE
    )
    assert headings == [
        ("4", _sweep_verdict()),
        *zip(["5, first half", "5, second half"], _variant_halves(), strict=True),
    ]


def test_docs_significance_table_is_the_generated_one() -> None:
    generated = pd.read_csv(STUDIES / "cifar10-jpeg" / "plots" / "significance.csv")
    section = DOCS.read_text().split("| first | second | mean difference |")[1].split("\n\n")[0]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in section.splitlines()[2:]]
    assert [(row[0], row[1], row[-1]) for row in rows] == list(
        zip(generated["first"], generated["second"], generated["verdict"], strict=True)
    )
    for row, holm in zip(rows, generated["p (Holm)"], strict=True):
        assert row[5] == ("< 0.0001" if holm < 0.0001 else f"{holm:.3g}")


GENERATED = [
    PROJECT / "plots" / "report.md",
    *sorted(STUDIES.glob("*/plots/report.md")),
    STUDIES / "cifar10-gamma" / "plots" / "sweep.md",
    STUDIES / "cifar10-variants" / "plots" / "variants.md",
]


@pytest.mark.parametrize("path", [README, DOCS, *GENERATED], ids=lambda path: str(path.relative_to(PROJECT)))
def test_no_sentence_treats_the_detectable_difference_as_a_bound(path: Path) -> None:
    text = path.read_text().lower()
    for words in (
        "rules out",
        "ruled out",
        "rule out",
        "would have detected",
        "could detect",
        "cannot be told",
    ):
        assert words not in text, words


def test_readme_calibration_table_states_the_generated_verdicts() -> None:
    """The README's table of ECE after temperature scaling: each loss's verdict against CE
    and its T are the default's summary.json `calibration`."""
    summary = json.loads((PROJECT / "metrics" / "summary.json").read_text())["calibration"]
    labels = {"Focal γ=2": "focal_high", "Focal γ=0.5": "focal_low", "CE": "ce", "MAE/L1": "mae"}
    rows = re.findall(
        r"^\| (Focal γ=2|Focal γ=0.5|CE|MAE/L1) \| ([0-9.]+) \| [^|]+\| [^|]+\| (.*) \|$",
        README.read_text(),
        re.MULTILINE,
    )
    assert sorted(label for label, _, _ in rows) == sorted(labels)
    for label, temperature, verdict in rows:
        name = labels[label]
        assert float(temperature) == pytest.approx(summary["temperature"][name], abs=0.06), label
        if name == summary["reference"]:
            assert verdict == "(the reference)"
        else:
            stated = re.match(r"\*([a-z ]+)\*", verdict)
            assert stated is not None, verdict
            assert summary["verdict_after"][name] == stated.group(1), label
