"""SCE: symmetric cross-entropy (Wang et al., 2019, "Symmetric cross entropy for
robust learning with noisy labels"),

    SCE = alpha * CE + beta * RCE,   RCE = -sum_k p_k log q_k,

the reverse cross-entropy of the prediction p against the one-hot label q. Its
log 0 is taken as A = -4 (the paper's choice), so RCE = -A (1 - p_y).
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from lossbench.losses import LossKind, PerSampleLoss
from lossbench.strict import FLOAT32_MAX

if TYPE_CHECKING:
    import torch

LOG_ZERO = -4.0  # A, log 0 in the reverse cross-entropy (the paper's section 3.2)


def sce_loss(logits: torch.Tensor, targets: torch.Tensor, *, alpha: float, beta: float) -> torch.Tensor:
    log_p_y = logits.log_softmax(dim=1).gather(1, targets[:, None]).squeeze(1)
    # 1 - p_y as -expm1(log p_y): exact near p_y = 1.
    reverse = -LOG_ZERO * -log_p_y.expm1()
    return alpha * -log_p_y + beta * reverse


class SceLoss(LossKind):
    kind: Literal["sce"]
    # The paper's choice for CIFAR-10.
    alpha: float = Field(default=0.1, ge=0.0, le=FLOAT32_MAX)
    beta: float = Field(default=1.0, ge=0.0, le=FLOAT32_MAX)

    @model_validator(mode="after")
    def _not_both_zero(self) -> SceLoss:
        if self.alpha == 0 and self.beta == 0:
            raise ValueError("alpha and beta are both 0, which leaves no loss; give one > 0")
        return self

    def label(self) -> str:
        return f"SCE (α={self.alpha:g}, β={self.beta:g})"

    def per_sample_loss(self, device: torch.device) -> PerSampleLoss:
        return partial(sce_loss, alpha=self.alpha, beta=self.beta)
