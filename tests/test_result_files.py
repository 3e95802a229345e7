"""The result files' models (and runfiles' calibration model) against what the
pipeline writes: every file a real (tiny) pipeline writes parses under its
strict model, which names no key it does not write."""

from pathlib import Path

import pytest
from conftest import published_details

from lossbench.errors import DamagedInput
from lossbench.evaluation import SEED_METRICS
from lossbench.experiments import headline_of
from lossbench.jsonfile import read_json
from lossbench.params import load_params
from lossbench.result_files import (
    ClassCounts,
    Headline,
    LossDetails,
    SeedNumbers,
    SeedRunMetrics,
    Summary,
    parsed,
)
from lossbench.results import LossResult
from lossbench.runfiles import CalibrationFiles, read_calibration
from lossbench.storage import CLASS_COUNTS_FILE, PublishedFiles, SeedRunFiles


@pytest.mark.fast
def test_the_models_hold_every_number_a_seed_records() -> None:
    assert set(SEED_METRICS) <= set(SeedNumbers.model_fields)
    assert all(LossDetails.model_fields[key].annotation == Summary for key in SEED_METRICS)


def test_the_files_a_pipeline_writes_parse_under_their_models(reproduced: Path) -> None:
    params = load_params(reproduced / "params.yaml")
    for name, spec in params.losses.items():
        loss_settings = set(spec.model_dump(exclude_none=True)) - {"kind"}
        for seed in params.seeds:
            path = SeedRunFiles.of(reproduced, name, seed).metrics
            run = parsed(SeedRunMetrics, read_json(path), str(path))
            assert (run.loss, run.seeds, list(run.per_seed)) == (name, [seed], [f"seed{seed}"])
            assert set(run.settings.model_extra or {}) == loss_settings  # the loss's own, nothing else
        published = PublishedFiles.of(reproduced, name)
        details = parsed(LossDetails, read_json(published.details), str(published.details))
        assert details.seeds == params.seeds and details.settings.kind == spec.kind
        assert set(details.settings.model_extra or {}) == loss_settings
        headline = parsed(Headline, read_json(published.headline), str(published.headline))
        assert headline.test_acc == round(details.final_test_acc.mean, 4)
        calibration = read_calibration(CalibrationFiles.of(reproduced, name).scores)
        assert calibration.seeds() == params.seeds
    counts = parsed(ClassCounts, read_json(reproduced / CLASS_COUNTS_FILE), str(CLASS_COUNTS_FILE))
    assert counts.dataset == "synthetic" and len(counts.train) == 10


@pytest.mark.fast
def test_compare_reads_the_accuracy_of_a_headline_in_an_older_format() -> None:
    # Headlines of older commits had best_sd and no conv_ep: their accuracy is still shown.
    older = {
        "test_acc": 0.497,
        "test_sd": 0.013,
        "best_acc": 0.5,
        "best_sd": 0.01,
        "ece": 0.03,
        "at_chance": 0,
    }
    record = {"rev": "2f2062b" * 6, "name": None, "metrics": {"metrics/ce.json": {"data": older}}}
    assert headline_of(record, "ce") == (0.497, 0.013)
    with pytest.raises(DamagedInput, match=r"^metrics/ce.json of run 2f2062b: test_sd is missing$"):
        headline_of(record | {"metrics": {"metrics/ce.json": {"data": {"test_acc": 0.5}}}}, "ce")


@pytest.mark.fast
def test_a_key_the_format_does_not_have_is_named() -> None:
    # A hand edit or another version's file: refused by name, never read as if it were this format's.
    details = published_details("ce", {"kind": "ce"}, {1: {}, 2: {}})
    details["per_seed"]["seed2"]["final_tset_acc"] = 0.5
    with pytest.raises(
        DamagedInput, match=r"^ce.json: per_seed.seed2.final_tset_acc is not a key of this file$"
    ):
        LossResult.from_details(details, "ce.json")
