"""The files of a run's results, as strict models: a seed's run
(data/runs/NAME/seedN/metrics.json, train@NAME-SEED), a loss's details and
headline (metrics/details/NAME.json and metrics/NAME.json, publish@NAME) and
the class counts (data/class_counts.json, prepare). What a file holds is
declared once, checked when it is read, and a reader gets typed values,
never a dict it has to trust.

Below every analysis module (it imports only the params, errors and the
layout), so publish, which writes these files, and the reports, which read
them, share it without an import pointing up; apart from runfiles (the
calibration's files), so that a change to either leaves the other's stages
cached. A damaged file is named with the key and what is there instead, in
the same words whichever file it is (`damaged`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from pydantic import ConfigDict, ValidationError

from lossbench.errors import DamagedInput, MissingInput, shown
from lossbench.params import LOSS_KINDS, LossParams
from lossbench.strict import Strict

# --- a damaged file, in one set of words -----------------------------------------------------------


def kind_of(value: object) -> str:
    """What a JSON value is, for a message: 'null', "a string ('abc')", 'a list', ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"a string ({shown(repr(value))})"
    if isinstance(value, int | float):
        return f"the number {shown(value)}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def key_path(*parts: str | int) -> str:
    """'per_seed.seed1.per_class_recall[3]' for ('per_seed', 'seed1', 'per_class_recall', 3)."""
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    return path


# What a value of the wrong type should have been, by pydantic's error type.
WANTED = {
    "float_type": "a number",
    "int_type": "a whole number",
    "string_type": "text",
    "bool_type": "true or false",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "list_type": "a list",
}


def damaged(error: ValidationError, where: str, prefix: tuple[str | int, ...] = ()) -> DamagedInput:
    """The first problem pydantic found in a file (`where`), as one line naming
    the key and what is there instead: 'metrics.json: per_seed.seed1.ece is null, not a number'."""
    first = error.errors()[0]
    key = key_path(*prefix, *first["loc"])
    value = first.get("input")
    if first["type"] == "missing":
        problem = "is missing"
    elif first["type"] in WANTED:
        problem = f"is {kind_of(value)}, not {WANTED[first['type']]}"
    elif first["type"] == "finite_number":
        problem = f"is {value}, not a finite number"
    elif first["type"] == "extra_forbidden":
        problem = "is not a key of this file"
    else:
        problem = f"is {kind_of(value)}: {first['msg']}"
    return DamagedInput(f"{where}: {shown(key) if key else 'the file'} {problem}")


Model = TypeVar("Model", bound=Strict)


def parsed(model: type[Model], value: object, where: str) -> Model:
    """`value` (a file's parsed JSON) as `model`; a damaged one named (`damaged`)."""
    try:
        return model.model_validate(value)
    except ValidationError as error:
        raise damaged(error, where) from None


# --- one seed's run and a loss's details -----------------------------------------------------------


class SeedNumbers(Strict):
    """One seed's numbers: evaluation.seed_metrics (SEED_METRICS), the recall of
    each class, and with flipped labels inference.flipped_label_fit."""

    final_test_acc: float
    best_test_acc: float
    final_train_acc: float
    final_train_loss: float
    final_test_loss: float
    convergence_epoch: int
    plateau_epoch: int
    macro_f1: float
    ece: float
    nll: float
    brier: float
    at_chance: str | None  # why the run is at chance, or null
    per_class_recall: list[float]  # in the order of the run's classes
    flipped_train_acc_noisy: float | None = None  # only with label noise, in runs since it was recorded
    flipped_train_acc_true: float | None = None


class Numerics(Strict):
    """numerics.numerics_in_force: what a run was made under."""

    torch: str
    machine: str
    cpu_capability: str
    kernels: dict[str, str]
    device: str


class RunSettings(Strict):
    """What a run was trained with: train's settings as resolved (`device`,
    `threads`), the dataset, the numerics; and the loss's own settings (its
    kind's), which `loss_of` checks."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False, strict=True)

    kind: str
    epochs: int
    batch_size: int
    test_batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    lr_step_epochs: int
    lr_decay_factor: float
    device: str
    threads: int
    dataset: str
    numerics: Numerics


def loss_of(settings: RunSettings, where: str) -> LossParams:
    """The loss a run was trained with, from its recorded settings."""
    model = LOSS_KINDS.get(settings.kind)
    if model is None:
        raise DamagedInput(
            f"{where}: settings.kind is {shown(repr(settings.kind))}, not one of {', '.join(LOSS_KINDS)}"
        )
    recorded = (settings.model_extra or {}) | {"kind": settings.kind}
    try:
        return model.model_validate({key: recorded[key] for key in model.model_fields if key in recorded})
    except ValidationError as error:
        first = error.errors()[0]
        if first["type"] in WANTED and len(first["loc"]) == 1:
            raise damaged(error, where, ("settings",)) from None  # 'settings.gamma is null, not a number'
        key = key_path(*first["loc"])
        raise DamagedInput(
            f"{where}: settings do not describe a {settings.kind} loss ({shown(key)}: {first['msg']})"
        ) from None


class SeedRunMetrics(Strict):
    """data/runs/NAME/seedN/metrics.json: what seed_run.evaluate_seed writes, a run of one seed."""

    loss: str
    label: str
    seeds: list[int]
    classes: list[str]
    per_seed: dict[str, SeedNumbers]  # "seed1": ...
    train_samples: int
    test_samples: int
    settings: RunSettings


class Summary(Strict):
    """stats.summarize: a number's seed mean, sd and 95% interval of the mean (null for one seed)."""

    mean: float
    std: float
    ci95_low: float | None
    ci95_high: float | None
    n: int


class LossDetails(Strict):
    """metrics/details/NAME.json: what publish.details writes, a loss's seeds gathered."""

    loss: str
    label: str
    seeds: list[int]
    final_test_acc: Summary
    best_test_acc: Summary
    final_train_acc: Summary
    final_train_loss: Summary
    final_test_loss: Summary
    convergence_epoch: Summary
    plateau_epoch: Summary
    macro_f1: Summary
    ece: Summary
    nll: Summary
    brier: Summary
    per_class_recall: dict[str, float]  # class -> seed mean
    at_chance: dict[str, str]  # "seed2" -> why, for each seed at chance
    classes: list[str]
    train_samples: int
    test_samples: int
    settings: RunSettings
    per_seed: dict[str, SeedNumbers]


def seed_numbers(
    per_seed: dict[str, SeedNumbers], where: str, seeds: Sequence[int] | None, classes: int
) -> dict[int, SeedNumbers]:
    """A run's `per_seed`, by seed number: the seeds given, in that order (so
    that results pair by seed), or every one there, each with a recall for
    each of the run's classes."""
    found = {}
    for key in per_seed:
        number = key.removeprefix("seed")
        if not key.startswith("seed") or not number.isdigit():
            raise DamagedInput(f"{where}: per_seed has the entry {shown(repr(key))}; every entry is seed<N>")
        found[int(number)] = per_seed[key]
    if not found:
        raise DamagedInput(f"{where}: per_seed names no seed")
    for seed in seeds if seeds is not None else []:
        if seed not in found:
            raise DamagedInput(
                f"{where}: per_seed has no seed{seed} (seeds there: {', '.join(per_seed) or 'none'})"
            )
    for seed, numbers in found.items():
        if len(numbers.per_class_recall) != classes:
            raise DamagedInput(
                f"{where}: {key_path('per_seed', f'seed{seed}', 'per_class_recall')} has "
                f"{len(numbers.per_class_recall)} values for {classes} classes"
            )
    return {seed: found[seed] for seed in (seeds if seeds is not None else found)}


def listed_seeds(listed: list[int], seeds: Sequence[int] | None, where: str, stage: str) -> None:
    """A run's `seeds` must be `seeds` when given: else it is another run's, or stale."""
    if seeds is not None and listed != list(seeds):
        raise MissingInput(
            f"{where} holds seeds {listed}, params.yaml asks for {list(seeds)}: run `dvc repro {stage}` first"
        )


class Headline(Strict):
    """metrics/NAME.json: what publish.headline writes, the few numbers `dvc metrics show` lists."""

    test_acc: float
    test_sd: float
    best_acc: float
    ece: float
    conv_ep: float
    at_chance: int


class HeadlineAccuracy(Strict):
    """What `lossbench compare` reads of a headline at any commit: the test
    accuracy's seed mean and sd. The file's other keys have changed over its
    history (best_sd, conv_ep); these two have not."""

    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False, strict=True)

    test_acc: float
    test_sd: float


class ClassCounts(Strict):
    """data/class_counts.json: what prepare writes, the training (and test) images per class."""

    dataset: str
    # The data variant; optional, as the reader before this model had them.
    imbalance_ratio: float | None = None
    label_noise: float | None = None
    labels_flipped: int | None = None
    train: dict[str, int]
    test: dict[str, int]
