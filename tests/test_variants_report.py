"""`lossbench variants-report`: claim 5 from a long-tailed and a noisy-label
experiment, each paired by seed with a clean run kept in another folder."""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import published_details, run_in, run_queue, write_params

from lossbench.claims import ClaimHalf, Evidence, noise_half
from lossbench.errors import DamagedInput
from lossbench.params import AnalysisParams
from lossbench.results import LossResult, VariantRun
from lossbench.variants_text import memorization_table, noise_markdown
from lossbench.verdicts import ClaimVerdict, Margin


def _details(root: Path, rev: str, name: str) -> dict[str, dict[str, float]]:
    text = run_in(root, "git", "show", f"{rev}:metrics/details/{name}.json").stdout
    per_seed: dict[str, dict[str, float]] = json.loads(text)["per_seed"]
    return per_seed


@pytest.mark.slow
def test_variants_are_paired_by_seed_with_the_clean_run(reproduced: Path, tmp_path: Path) -> None:
    project = reproduced  # the tiny project with its clean run committed
    clean = tmp_path / "clean"  # the clean run, as another study's folder
    shutil.copytree(project, clean, symlinks=True)
    # This study trains seed 1 only, of the clean run's two (a study's seeds may differ).
    params = yaml.safe_load((project / "params.yaml").read_text())
    write_params(project, params | {"seeds": [1]})
    run_in(project, "git", "commit", "-qam", "seed 1 only")
    for variant in ("+data.imbalance_ratio=4", "+data.label_noise=0.3"):  # not in the tiny params.yaml
        run_in(project, "dvc", "exp", "run", "--queue", "-S", variant)
    assert run_queue(project, jobs=2, expected=2).count("Success") == 2

    result = run_in(project, "lossbench", "variants-report", "--clean", "../clean")
    assert "claim 5 imbalance half" in result.stdout, result.stdout
    imbalance = pd.read_csv(project / "plots" / "imbalance.csv")
    noise = pd.read_csv(project / "plots" / "noise.csv")
    assert list(imbalance["imbalance_ratio"]) == [4.0] * 4 and list(noise["label_noise"]) == [0.3] * 4
    assert (imbalance["train_images"] < 300).all()  # the long tail keeps fewer than the 300 images

    # Each drop is the clean accuracy minus the noisy one, seed by seed, from the committed files.
    shown = json.loads(run_in(project, "dvc", "exp", "show", "--json").stdout)
    noisy_rev = next(
        rev["rev"]
        for commit in shown
        for exp in commit.get("experiments") or []
        for rev in exp["revs"]
        if rev["data"]["params"]["params.yaml"]["data"]["data"].get("label_noise") == 0.3
    )
    clean_ce = json.loads((clean / "metrics" / "details" / "ce.json").read_text())["per_seed"]
    noisy_ce = _details(project, noisy_rev, "ce")
    # Only the seeds both runs have are paired; a seed whose clean or noisy run stayed at
    # chance is left out (the tiny runs often are).
    assert sorted(clean_ce) == ["seed1", "seed2"] and sorted(noisy_ce) == ["seed1"]
    kept = [s for s in noisy_ce if not clean_ce[s]["at_chance"] and not noisy_ce[s]["at_chance"]]
    row = noise.loc[noise["loss"] == "CE"].iloc[0]
    assert row["seeds"] == len(kept)
    if kept:
        expected = sum(clean_ce[s]["final_test_acc"] - noisy_ce[s]["final_test_acc"] for s in kept) / len(
            kept
        )
        assert row["drop_mean"] == round(expected, 4)
    else:
        assert pd.isna(row["drop_mean"])
    report = (project / "plots" / "variants.md").read_text()
    assert "CE's drop − Focal (γ=2)'s" in report and "tail recall, Focal (γ=0.5) − CE" in report
    assert (project / "plots" / "variants.png").stat().st_size > 0

    # The memorization gauge: each loss's seed mean of what its seeds recorded on the flipped labels.
    memorization = pd.read_csv(project / "plots" / "memorization.csv")
    assert list(memorization["label_noise"]) == [0.3] * 4
    fitted = [noisy_ce[s]["flipped_train_acc_noisy"] for s in noisy_ce]
    assert memorization.loc[memorization["loss"] == "CE", "flipped_train_acc_noisy_mean"].item() == round(
        sum(fitted) / len(fitted), 4
    )
    assert "Memorization: the flipped training labels" in report


def test_a_clean_run_of_another_protocol_is_refused_and_nothing_is_written(
    reproduced: Path, tmp_path: Path
) -> None:
    clean = tmp_path / "clean"
    shutil.copytree(reproduced, clean, symlinks=True)
    params = yaml.safe_load((clean / "params.yaml").read_text())
    params["train"]["lr"] = 0.05
    write_params(clean, params)
    refused = run_in(reproduced, "lossbench", "variants-report", "--clean", "../clean", check=False)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        "error: --clean ../clean: train.lr differs from this study's; the clean run must follow the same "
        "protocol (only its seeds may differ)"
    ]
    assert not (reproduced / "plots" / "variants.md").exists()

    # Right params, but results left from another protocol beside them.
    params["train"]["lr"] = 0.1
    write_params(clean, params)
    details = json.loads((clean / "metrics" / "details" / "ce.json").read_text())
    details["settings"]["lr"] = 0.05
    (clean / "metrics" / "details" / "ce.json").write_text(json.dumps(details))
    stale = run_in(reproduced, "lossbench", "variants-report", "--clean", "../clean", check=False)
    assert stale.returncode == 1
    assert stale.stderr.strip() == (
        "error: ../clean/metrics/details/ce.json: its results were trained with other lr than its params.yaml "
        "says; rerun that study"
    )
    assert not (reproduced / "plots" / "variants.md").exists()


def _half(cases: dict[str, list[float]]) -> ClaimHalf:
    """A half whose cases each compare focal with CE by these per-seed differences (four seeds)."""
    half = ClaimHalf(pd.DataFrame(), Evidence(Margin(0.01)))
    base = [0.50, 0.60, 0.55, 0.52]
    for case, shifts in cases.items():
        for index, shift in enumerate(shifts):
            noise = [0.002, -0.001, 0.0015, -0.0005]
            half.compare(
                case, f"{case} {index}", [b + shift + n for b, n in zip(base, noise, strict=True)], base
            )
    return half


@pytest.mark.fast
def test_a_half_of_claim_5_is_supported_only_when_every_case_is() -> None:
    higher, wide, lower = 0.05, 0.0, -0.05
    assert _half({"a": [higher, higher], "b": [higher]}).verdict()[0] is ClaimVerdict.SUPPORTED
    half = _half({"a": [higher, higher], "b": [higher, wide]})
    assert half.verdict()[0] is ClaimVerdict.PARTLY
    assert half.verdict()[1] == "a: supported; b: inconclusive"
    assert _half({"a": [higher], "b": [lower]}).verdict()[0] is ClaimVerdict.MIXED
    assert _half({"a": [wide], "b": [higher, lower]}).verdict()[0] is ClaimVerdict.CONTRADICTED
    assert _half({"a": [wide]}).verdict()[0] is ClaimVerdict.INCONCLUSIVE
    assert _half({}).verdict()[0] is ClaimVerdict.NOT_TESTABLE


def _result(name: str, spec: dict[str, object], accuracy: dict[int, float], seeds: list[int]) -> LossResult:
    """A loss's result from a details file whose seeds are in `accuracy`'s order, read in `seeds`' order."""
    details = published_details(
        name,
        spec,
        {
            seed: {"final_test_acc": value, "macro_f1": value, "per_class_recall": [value] * 10}
            for seed, value in accuracy.items()
        },
    )
    return LossResult.from_details(details, f"{name}.json", seeds)


CE, FOCAL = {"kind": "ce"}, {"kind": "focal", "gamma": 2.0}


@pytest.mark.fast
def test_drops_are_paired_by_seed_whatever_the_order_in_the_files() -> None:
    seeds = [1, 2, 10]
    clean = {
        name: _result(name, spec, {10: 0.90, 1: 0.50, 2: 0.60}, seeds)
        for name, spec in (("ce", CE), ("focal", FOCAL))
    }
    # CE loses 5, 4 and 6 points on seeds 1, 2 and 10; focal loses 1 point on each.
    noisy = VariantRun(
        experiment="noisy",
        imbalance_ratio=1.0,
        label_noise=0.2,
        results={
            "ce": _result("ce", CE, {2: 0.56, 10: 0.84, 1: 0.45}, seeds),
            "focal": _result("focal", FOCAL, {1: 0.49, 10: 0.89, 2: 0.59}, seeds),
        },
        class_counts={},
    )
    half = noise_half([noisy], clean, AnalysisParams())
    ce = half.table[half.table["loss"] == "CE"].iloc[0]
    assert (round(ce["drop_mean"], 4), round(ce["drop_ci95_low"], 4), round(ce["drop_ci95_high"], 4)) == (
        0.05,
        0.0252,
        0.0748,
    )
    assert half.parts == [
        "20% noise, CE's drop − Focal (γ=2)'s: +4.0 points [+1.5, +6.5], p = 0.0202 (Wilcoxon 0.25): "
        "different (higher)"
    ]
    assert half.cases() == {"20% noise, Focal (γ=2)": ClaimVerdict.SUPPORTED}


@pytest.mark.fast
def test_a_details_file_without_a_seed_is_named() -> None:
    with pytest.raises(
        DamagedInput,
        match=r"^ce.json: per_seed has no seed3 \(seeds there: seed1, seed2\)$",
    ):
        _result("ce", CE, {1: 0.5, 2: 0.6}, [1, 2, 3])


def _with_flipped(name: str, spec: dict[str, object], fits: dict[int, tuple[object, object]]) -> LossResult:
    """A noisy run's result whose seeds record (accuracy on flipped labels, on true labels)."""
    details = published_details(
        name,
        spec,
        {
            seed: {"flipped_train_acc_noisy": noisy, "flipped_train_acc_true": true}
            for seed, (noisy, true) in fits.items()
        },
    )
    return LossResult.from_details(details, f"{name}.json", list(fits))


@pytest.mark.fast
def test_the_memorization_gauge_is_each_losss_seed_mean_and_sd() -> None:
    noisy = VariantRun(
        experiment="noisy",
        imbalance_ratio=1.0,
        label_noise=0.4,
        results={
            # CE fits 60%, 70%, 80% of the flipped labels; MAE 10%, 10%, 10%.
            "ce": _with_flipped("ce", CE, {1: (0.6, 0.2), 2: (0.7, 0.1), 3: (0.8, 0.1)}),
            "mae": _with_flipped("mae", {"kind": "mae"}, {1: (0.1, 0.7), 2: (0.1, 0.8), 3: (0.1, 0.9)}),
            "focal": _result("focal", FOCAL, {1: 0.5, 2: 0.5, 3: 0.5}, [1, 2, 3]),  # trained before the gauge
        },
        class_counts={},
    )
    table = memorization_table([noisy]).round(4)
    assert table.to_dict("records") == [
        {
            "label_noise": 0.4,
            "loss": "CE",
            "seeds": 3,
            "flipped_train_acc_noisy_mean": 0.7,
            "flipped_train_acc_noisy_std": 0.1,
            "flipped_train_acc_true_mean": 0.1333,
            "flipped_train_acc_true_std": 0.0577,
        },
        {
            "label_noise": 0.4,
            "loss": "MAE (L1)",
            "seeds": 3,
            "flipped_train_acc_noisy_mean": 0.1,
            "flipped_train_acc_noisy_std": 0.0,
            "flipped_train_acc_true_mean": 0.8,
            "flipped_train_acc_true_std": 0.1,
        },
    ]
    with pytest.raises(
        DamagedInput,
        match=r"^ce.json: per_seed.seed1.flipped_train_acc_true is a string \('0.2'\), not a number$",
    ):
        _with_flipped("ce", CE, {1: (0.6, "0.2")})
    damaged = VariantRun("noisy", 1.0, 0.4, {"ce": _with_flipped("ce", CE, {1: (0.6, None)})}, {})
    with pytest.raises(
        DamagedInput, match=r"^metrics/details/ce.json of noisy: per_seed flipped_train_acc_true "
    ):
        memorization_table([damaged])


def _dead(result: LossResult, *seeds: int) -> LossResult:
    """The same result with these seeds' runs marked as never having left chance."""
    per_seed = {
        seed: numbers | ({"at_chance": "never left chance"} if seed in seeds else {})
        for seed, numbers in result.per_seed.items()
    }
    return replace(result, per_seed=per_seed)


@pytest.mark.fast
def test_a_run_at_chance_clean_or_noisy_is_left_out_of_the_drops_it_is_in() -> None:
    """CE's clean seed 1 never learned (10%): its "drop" of -45 points is no effect of the
    noise. It leaves CE's drop and CE against focal; focal keeps all its seeds."""
    seeds = [1, 2, 3, 4]
    clean = {
        "ce": _dead(_result("ce", CE, {1: 0.10, 2: 0.60, 3: 0.62, 4: 0.58}, seeds), 1),
        "focal": _result("focal", FOCAL, {1: 0.55, 2: 0.60, 3: 0.61, 4: 0.57}, seeds),
    }
    noisy = VariantRun(
        experiment="noisy",
        imbalance_ratio=1.0,
        label_noise=0.2,
        results={
            # CE loses 5, 6, 4 points on seeds 2-4; focal 1 point on every seed
            "ce": _result("ce", CE, {1: 0.55, 2: 0.55, 3: 0.56, 4: 0.54}, seeds),
            "focal": _result("focal", FOCAL, {1: 0.54, 2: 0.59, 3: 0.60, 4: 0.56}, seeds),
        },
        class_counts={},
    )
    half = noise_half([noisy], clean, AnalysisParams())
    rows = half.table.set_index("loss")
    assert (rows.loc["CE", "seeds"], rows.loc["CE", "left_out"], round(rows.loc["CE", "drop_mean"], 4)) == (
        3,
        "1",
        0.05,
    )
    assert (rows.loc["Focal (γ=2)", "seeds"], rows.loc["Focal (γ=2)", "left_out"]) == (4, "–")
    assert half.parts[0].startswith("20% noise, CE's drop − Focal (γ=2)'s, without seed 1: +4.0 points")


@pytest.mark.fast
def test_a_loss_at_chance_on_every_clean_seed_shows_no_drop() -> None:
    seeds = [1, 2]
    mae = {"kind": "mae"}
    clean = {
        "ce": _result("ce", CE, {1: 0.60, 2: 0.62}, seeds),
        "mae": _dead(_result("mae", mae, {1: 0.10, 2: 0.10}, seeds), 1, 2),
    }
    noisy = VariantRun(
        "noisy",
        1.0,
        0.2,
        {
            "ce": _result("ce", CE, {1: 0.55, 2: 0.56}, seeds),
            "mae": _result("mae", mae, {1: 0.4, 2: 0.41}, seeds),
        },
        {},
    )
    half = noise_half([noisy], clean, AnalysisParams())
    row = noise_markdown(half.table).splitlines()[-1]
    assert [cell.strip() for cell in row.strip("|").split("|")][2:] == ["0", "1, 2", "–", "–", "–", "–", "–"]
    assert half.parts[0].endswith("without seeds 1, 2: no seed to pair: not testable")
