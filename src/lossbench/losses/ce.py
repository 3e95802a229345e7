"""CE: cross-entropy, -log p_y."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Literal

from lossbench.losses import LossKind, PerSampleLoss

if TYPE_CHECKING:
    import torch


class CeLoss(LossKind):
    kind: Literal["ce"]

    def label(self) -> str:
        return "CE"

    def per_sample_loss(self, device: torch.device) -> PerSampleLoss:
        from torch.nn.functional import cross_entropy

        return partial(cross_entropy, reduction="none")
