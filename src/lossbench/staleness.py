"""Whether a result is stale: trained with other loss or training settings
than the params beside it give. One rule (`stale_settings`) for the report,
which notes it, and the reports across experiments, which refuse the run.
"""

from __future__ import annotations

from typing import Any

from lossbench.params import Params
from lossbench.results import LossResult
from lossbench.storage import RUNS_DIR

# Recorded as the machine resolved them ('auto' as the device used, 0 threads as
# the count used), so never equal to params.yaml's: not compared.
RESOLVED_SETTINGS = {"device", "threads"}

Change = tuple[str, object, object]  # (setting, trained with, params.yaml now)


def settings_now(params: Params, name: str) -> dict[str, object]:
    """What params.yaml gives loss `name` and its training, as a run records it."""
    return params.losses[name].model_dump() | params.train.model_dump(exclude=RESOLVED_SETTINGS)


def stale_settings(params: Params, name: str, result: LossResult) -> list[Change]:
    """(key, trained with, now) for each setting that `params` gives loss `name`
    and its training, and each setting of the loss `result` was trained with,
    that differ. A setting the run did not record, or params do not give,
    counts as unset."""
    now = settings_now(params, name)
    trained: dict[str, Any] = result.run["settings"] | result.spec.model_dump()
    keys = dict.fromkeys([*result.spec.model_dump(), *now])
    return [(key, trained.get(key), now.get(key)) for key in keys if trained.get(key) != now.get(key)]


def _setting(value: object) -> str:
    if value is None:
        return "unset"
    return f"{value:g}" if isinstance(value, float) else str(value)


def trained_but(changed: list[Change]) -> str:
    """'was trained with gamma 2 but params.yaml now says gamma 3' for `stale_settings`."""
    return (
        "was trained with "
        + ", ".join(f"{key} {_setting(before)}" for key, before, _ in changed)
        + " but params.yaml now says "
        + ", ".join(f"{key} {_setting(now)}" for key, _, now in changed)
    )


def trained_otherwise(params: Params, result: LossResult) -> str | None:
    """A note when a run was trained with other loss or training settings than
    params.yaml now gives it (edited since, and not rerun), else None."""
    changed = stale_settings(params, result.name, result)
    if not changed:
        return None
    return f"note: {RUNS_DIR / result.name} {trained_but(changed)}; labelled as trained — run `dvc repro`"
