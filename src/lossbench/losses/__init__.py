"""The study's losses: one module per kind, each returning one loss value per sample.

Training takes the mean; evaluation sums over the test set. Per-sample values
keep both exact whatever the batch size.

A kind is the module lossbench/losses/KIND.py, found by its file name: it
defines one `LossKind` subclass (the settings of `losses.NAME` in params.yaml
with `kind: KIND`, parsed by params.py) and its formula. A kind's module imports
no other kind's, so a train stage's code is this file and its own kind's module
(dvc.yaml): adding or changing a kind reruns only the losses of that kind.
Modules here import torch only when a loss is made: params are checked without it.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, get_args

from lossbench.strict import Strict

if TYPE_CHECKING:
    import torch

    PerSampleLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
else:
    PerSampleLoss = Callable


class LossKind(Strict):
    """The settings of one loss in params.yaml; a kind's module subclasses it with `kind: Literal[KIND]`."""

    kind: str

    def label(self) -> str:
        """How reports name the loss with these settings, e.g. 'Focal (γ=0.5)'."""
        raise NotImplementedError

    def check_classes(self, name: str, num_classes: int) -> None:
        """Raise ParamsError if a per-class setting does not fit the dataset's classes (none by default)."""

    def per_sample_loss(self, device: torch.device) -> PerSampleLoss:
        """The function from (logits, targets) to one loss value per sample."""
        raise NotImplementedError


@cache
def kinds() -> dict[str, type[LossKind]]:
    """Every loss kind, by name: the modules of this package, each named for the kind it defines."""
    found: dict[str, type[LossKind]] = {}
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        defined = [
            value
            for value in vars(module).values()
            if isinstance(value, type) and issubclass(value, LossKind) and value.__module__ == module.__name__
        ]
        if len(defined) != 1 or get_args(defined[0].model_fields["kind"].annotation) != (module_info.name,):
            raise TypeError(
                f"{module.__name__} must define one LossKind subclass with kind: Literal[{module_info.name!r}]"
            )
        found[module_info.name] = defined[0]
    return found


def is_kind_module(module_name: str) -> bool:
    """True for a kind's module (lossbench.losses.KIND), which only its own losses' training runs."""
    return module_name.startswith(f"{__name__}.")


def kind_source(spec: LossKind) -> bytes:
    """The source of the module that defines `spec`'s kind: all of that kind's own code."""
    return Path(str(sys.modules[type(spec).__module__].__file__)).read_bytes()


def make_loss(name: str, spec: LossKind, num_classes: int, device: torch.device) -> PerSampleLoss:
    """The per-sample loss function for the `losses.NAME` entry of params.yaml."""
    spec.check_classes(name, num_classes)
    return spec.per_sample_loss(device)
