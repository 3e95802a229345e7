"""The runs variants-report compares: the study's experiments that follow its
protocol and change only the data variant (`variant_runs`), and the clean
runs of the same protocol in another folder (`clean_runs`). A run whose
results are not of its params (staleness.stale_settings) is left out or refused."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from lossbench.errors import MissingInput, ParamsError
from lossbench.experiments import flatten, json_at, params_of, run_name, study_prefix
from lossbench.jsonfile import read_json
from lossbench.params import MachineParams, Params, load_params, loss_label
from lossbench.results import CLEAN_DATA, LossResult, VariantRun, checked_class_counts, with_unique_labels
from lossbench.staleness import stale_settings
from lossbench.storage import CLASS_COUNTS_FILE, DETAILS_DIR


def _protocol(params: Params) -> Params:
    """Params with the data variant and the machine set aside: what must match."""
    return params.model_copy(
        update={"data": params.data.model_copy(update=CLEAN_DATA), "machine": MachineParams()}
    )


@dataclass
class VariantRuns:
    """The study's finished runs of one data variant each, and the runs left out, each with why."""

    runs: list[VariantRun] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)


def variant_runs(params: Params, root: Path, records: list[dict[str, Any]]) -> VariantRuns:
    """The study's runs that follow its protocol and change only the data
    variant, each once, with every loss's results; the others are named."""
    prefix = study_prefix(root)
    found = VariantRuns()
    by_variant: dict[tuple[float, float], VariantRun] = {}
    for record in records:
        name = run_name(record)
        try:
            run_params = Params.model_validate(params_of(record, prefix))
        except ValidationError:
            continue  # not this study's params (an older commit's format)
        variant = (run_params.data.imbalance_ratio, run_params.data.label_noise)
        if variant == tuple(CLEAN_DATA.values()):
            continue
        if _protocol(run_params) != _protocol(params):
            found.left_out.append(f"{name} (another protocol)")
            continue
        if variant[0] > 1 and variant[1] > 0:
            found.left_out.append(f"{name} (long-tailed and noisy at once)")
            continue
        details = {loss: json_at(root, record, f"{DETAILS_DIR}/{loss}.json") for loss in params.losses}
        counts = json_at(root, record, str(CLASS_COUNTS_FILE))
        if counts is None or any(value is None for value in details.values()):
            continue  # no results (a commit where it was not run)
        counts = checked_class_counts(counts, f"{CLASS_COUNTS_FILE} of run {name}")
        results = {
            loss: LossResult.from_details(value, f"{DETAILS_DIR}/{loss}.json of {name}", params.seeds)
            for loss, value in details.items()
        }
        results = dict(zip(results, with_unique_labels(list(results.values())), strict=True))
        stale = any(stale_settings(run_params, loss, result) for loss, result in results.items())
        if stale or (counts.get("imbalance_ratio"), counts.get("label_noise")) != variant:
            found.left_out.append(f"{name} (its results are not of its params: rerun it)")
            continue
        run = VariantRun(name, variant[0], variant[1], results, counts)
        earlier = by_variant.setdefault(variant, run)
        if earlier is not run and any(
            earlier.results[loss].per_seed != result.per_seed for loss, result in results.items()
        ):
            raise MissingInput(
                f"runs {earlier.experiment} and {name} both ran imbalance {variant[0]:g}, noise {variant[1]:g} "
                "with different results (other code?); remove one (`dvc exp remove`) or check --all-commits and --rev"
            )
    found.runs = sorted(by_variant.values(), key=lambda run: (run.imbalance_ratio, run.label_noise))
    return found


def clean_runs(params: Params, clean_root: Path) -> dict[str, LossResult]:
    """Each loss's clean results on this study's seeds, from clean_root, which must run
    this study's protocol on clean data, with this study's loss names and seeds among its own."""
    if not (clean_root / "params.yaml").is_file():
        raise ParamsError(f"--clean {clean_root}: no params.yaml there; give the clean study's folder")
    clean = load_params(clean_root / "params.yaml")
    here, there = (flatten(_protocol(p).model_dump(mode="json")) for p in (params, clean))
    differ = sorted(
        key for key in here if key.startswith(("data.", "train.")) and here[key] != there.get(key)
    )
    if differ:
        raise ParamsError(
            f"--clean {clean_root}: {', '.join(differ)} {'differs' if len(differ) == 1 else 'differ'} from this "
            "study's; the clean run must follow the same protocol (only its seeds may differ)"
        )
    if (clean.data.imbalance_ratio, clean.data.label_noise) != tuple(CLEAN_DATA.values()):
        raise ParamsError(f"--clean {clean_root}: its data.imbalance_ratio or data.label_noise is set")
    missing_seeds = sorted(set(params.seeds) - set(clean.seeds))
    if missing_seeds:
        raise ParamsError(f"--clean {clean_root}: has no run for seed(s) {missing_seeds}")
    runs = {}
    for name, spec in params.losses.items():
        if clean.losses.get(name) != spec:
            raise ParamsError(f"--clean {clean_root}: losses.{name} is not this study's {loss_label(spec)}")
        path = clean_root / DETAILS_DIR / f"{name}.json"
        if not path.is_file():
            raise MissingInput(f"{path} is missing: run that study first")
        runs[name] = LossResult.from_details(read_json(path), str(path), params.seeds)
        # The results must be of the params beside them, not left from an older run.
        stale = sorted(key for key, _, _ in stale_settings(clean, name, runs[name]))
        if stale:
            raise MissingInput(
                f"{path}: its results were trained with other {', '.join(stale)} than its params.yaml says; "
                "rerun that study"
            )
    return dict(zip(runs, with_unique_labels(list(runs.values())), strict=True))
