"""The base of every params model: strict types, no unknown keys, no inf or nan.

Apart from params.py so that a loss kind's module (lossbench/losses/KIND.py),
which params.py reads, can define its settings on the same base.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

# The network trains in float32: a larger learning rate, decay or weight cannot even be applied.
FLOAT32_MAX = 3.4028234663852886e38


class Strict(BaseModel):
    # Unknown keys are errors: a mistyped `epohcs` must not be silently ignored.
    # inf and nan are never meaningful here (`.inf` is valid YAML for a float).
    # strict: `true` is not the seed 1, "2" is not the integer 2, 1.5 is not an epoch
    # count (an integer is still a valid float).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)
