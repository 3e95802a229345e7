"""JSON files of runs and studies, read checked.

Every JSON file goes through `parse_json`, which refuses NaN and infinities
(Python's json reads `NaN` and `Infinity` as numbers); what it holds is then
checked against its model (runfiles), or for a params file of another run
value by value (`Field`): a damaged file stops the command with one line
naming the file and the key, never a traceback or a verdict computed from
nonsense.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lossbench.errors import DamagedInput, read_utf8, shown
from lossbench.result_files import kind_of


class _NotFinite:
    """Stands in, while a file is checked, for a NaN or an infinity read from it."""

    def __init__(self, text: str) -> None:
        self.text = text


def _float(text: str) -> float | _NotFinite:
    value = float(text)  # 1e999 reads as inf
    return value if math.isfinite(value) else _NotFinite(text)


def _first_not_finite(value: Any, key: str = "") -> tuple[str, str] | None:
    """(key path, the text in the file) of the first non-finite number in value."""
    if isinstance(value, _NotFinite):
        return key, value.text
    children: Any = ()
    if isinstance(value, dict):
        children = ((_join(key, str(name)), item) for name, item in value.items())
    elif isinstance(value, list):
        children = ((f"{key}[{index}]", item) for index, item in enumerate(value))
    for child_key, item in children:
        found = _first_not_finite(item, child_key)
        if found is not None:
            return found
    return None


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def parse_json(text: str, where: str) -> Any:
    """JSON text as Python values; NaN, Infinity and out-of-range numbers refused.
    `where` names the file in messages (e.g. 'metrics/details/ce.json of run lt10')."""
    try:
        value = json.loads(text, parse_constant=_NotFinite, parse_float=_float)
        found = _first_not_finite(value)
    except json.JSONDecodeError as error:
        problem = "empty" if not text.strip() else f"not valid JSON ({error.msg}, line {error.lineno})"
        raise DamagedInput(f"{where} is {problem}: truncated or not written by lossbench?") from None
    except RecursionError:
        raise DamagedInput(f"{where} is nested too deeply: not written by lossbench?") from None
    if found is not None:
        key, number = found
        raise DamagedInput(f"{where}: {shown(key) or 'the file'} is {shown(number)}, not a finite number")
    return value


def read_json(path: Path, where: str | None = None) -> Any:
    """A JSON file on disk, through `parse_json`."""
    text = read_utf8(path, where or str(path), DamagedInput, "damaged or not written by lossbench?")
    return parse_json(text, where or str(path))


@dataclass(frozen=True)
class Field:
    """One value of a JSON file, with where it is (the file, the key path in it):
    each accessor returns it as the type asked for, or raises DamagedInput
    naming the file, the key and what is there instead."""

    value: Any
    where: str  # the file, e.g. data/runs/ce/metrics.json
    key: str = ""  # the key path inside it; '' for the whole file

    def damaged(self, problem: str) -> DamagedInput:
        return DamagedInput(f"{self.where}: {shown(self.key) if self.key else 'the file'} {problem}")

    def _wrong(self, wanted: str) -> DamagedInput:
        return self.damaged(f"is {kind_of(self.value)}, not {wanted}")

    def mapping(self) -> dict[str, Any]:
        if not isinstance(self.value, dict):
            raise self._wrong("an object")
        return self.value

    def get(self, name: str) -> Field | None:
        mapping = self.mapping()
        return Field(mapping[name], self.where, _join(self.key, name)) if name in mapping else None

    def child(self, name: str) -> Field:
        found = self.get(name)
        if found is None:
            raise DamagedInput(f"{self.where}: {shown(_join(self.key, name))} is missing")
        return found

    def items(self) -> list[Field]:
        if not isinstance(self.value, list):
            raise self._wrong("a list")
        return [Field(item, self.where, f"{self.key}[{index}]") for index, item in enumerate(self.value)]

    def number(self) -> float:
        if isinstance(self.value, bool) or not isinstance(self.value, int | float):
            raise self._wrong("a number")
        try:
            number = float(self.value)
        except OverflowError:
            raise self.damaged("is too large a number") from None
        if not math.isfinite(number):
            raise self.damaged(f"is {number}, not a finite number")
        return number

    def integer(self) -> int:
        if isinstance(self.value, bool) or not isinstance(self.value, int):
            raise self._wrong("a whole number")
        return self.value

    def text(self) -> str:
        if not isinstance(self.value, str):
            raise self._wrong("text")
        return self.value
