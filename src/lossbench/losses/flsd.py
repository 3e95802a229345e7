"""Sample-dependent focal loss (Mukhoti et al., 2020, "Calibrating deep neural
networks using focal loss"): focal loss whose gamma depends on the sample's p_t,

    FL(p_t) = -(1 - p_t)^gamma_t log p_t,   gamma_t = gamma_hard if p_t < threshold else gamma_easy;

the defaults are their FLSD-53 (gamma 5 below p_t = 0.2, else 3).
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from lossbench.losses import LossKind, PerSampleLoss

if TYPE_CHECKING:
    import torch

# Floor for (1 - p_t), as in focal.py: (1 - p)^gamma has an infinite slope at p = 1 when gamma < 1.
MIN_ONE_MINUS_P = 1e-12


def flsd_loss(
    logits: torch.Tensor, targets: torch.Tensor, *, gamma_hard: float, gamma_easy: float, threshold: float
) -> torch.Tensor:
    log_p_t = logits.log_softmax(dim=1).gather(1, targets[:, None]).squeeze(1)
    # gamma_t is a step function of p_t: no gradient flows through the choice.
    hard = log_p_t.detach().exp() < threshold
    gamma = log_p_t.new_full(log_p_t.shape, gamma_hard).where(hard, gamma_easy)
    one_minus_p_t = (-log_p_t.expm1()).clamp(min=MIN_ONE_MINUS_P)
    return -one_minus_p_t.pow(gamma) * log_p_t


class FlsdLoss(LossKind):
    kind: Literal["flsd"]
    gamma_hard: float = Field(default=5.0, ge=0.0, le=100.0)  # where p_t < threshold
    gamma_easy: float = Field(default=3.0, ge=0.0, le=100.0)  # elsewhere
    threshold: float = Field(default=0.2, gt=0.0, lt=1.0)

    def label(self) -> str:
        return f"FLSD (γ={self.gamma_hard:g} if p_t<{self.threshold:g}, else {self.gamma_easy:g})"

    def per_sample_loss(self, device: torch.device) -> PerSampleLoss:
        return partial(
            flsd_loss, gamma_hard=self.gamma_hard, gamma_easy=self.gamma_easy, threshold=self.threshold
        )
