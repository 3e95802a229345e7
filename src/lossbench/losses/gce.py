"""GCE: generalized cross-entropy (Zhang & Sabuncu, 2018, "Generalized cross entropy
loss for training deep neural networks with noisy labels"), the L_q loss

    L = (1 - p_y^q) / q,

which tends to CE as q -> 0 and is 1 - p_y (MAE's gradient direction) at q = 1.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from lossbench.losses import LossKind, PerSampleLoss

if TYPE_CHECKING:
    import torch


def gce_loss(logits: torch.Tensor, targets: torch.Tensor, *, q: float) -> torch.Tensor:
    log_p_y = logits.log_softmax(dim=1).gather(1, targets[:, None]).squeeze(1)
    # 1 - p_y^q as -expm1(q log p_y): exact where p_y^q is near 1.
    return -(q * log_p_y).expm1() / q


class GceLoss(LossKind):
    kind: Literal["gce"]
    q: float = Field(default=0.7, gt=0.0, le=1.0)  # the paper's choice for CIFAR-10

    def label(self) -> str:
        return f"GCE (q={self.q:g})"

    def per_sample_loss(self, device: torch.device) -> PerSampleLoss:
        return partial(gce_loss, q=self.q)
