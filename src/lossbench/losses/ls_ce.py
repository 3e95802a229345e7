"""CE with label smoothing (Szegedy et al., 2016; Müller et al., 2019): cross-entropy
against the target (1 - eps) * one_hot + eps / K,

    L = (1 - eps) * (-log p_y) + eps * mean_k(-log p_k).
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from lossbench.losses import LossKind, PerSampleLoss

if TYPE_CHECKING:
    import torch


def ls_ce_loss(logits: torch.Tensor, targets: torch.Tensor, *, label_smoothing: float) -> torch.Tensor:
    log_p = logits.log_softmax(dim=1)
    log_p_y = log_p.gather(1, targets[:, None]).squeeze(1)
    return (1 - label_smoothing) * -log_p_y + label_smoothing * -log_p.mean(dim=1)


class LsCeLoss(LossKind):
    kind: Literal["ls_ce"]
    # eps, the probability spread evenly over all classes (Müller et al. use 0.1).
    label_smoothing: float = Field(default=0.1, gt=0.0, lt=1.0)

    def label(self) -> str:
        return f"CE + LS (ε={self.label_smoothing:g})"

    def per_sample_loss(self, device: torch.device) -> PerSampleLoss:
        return partial(ls_ce_loss, label_smoothing=self.label_smoothing)
