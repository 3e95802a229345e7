"""Focal loss (Lin et al., 2017, "Focal loss for dense object detection"), multi-class."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, field_validator

from lossbench.errors import ParamsError
from lossbench.losses import LossKind, PerSampleLoss
from lossbench.strict import FLOAT32_MAX

if TYPE_CHECKING:
    import torch

# Floor for (1 - p_t) in focal loss. (1 - p)^γ has an infinite slope at p = 1
# when γ < 1, so a fully confident logit would give an infinite gradient times a
# zero one (NaN). Below the floor the factor is constant, where the true
# gradient is negligible anyway.
FOCAL_MIN_ONE_MINUS_P = 1e-12


def focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    gamma: float,
    alpha: torch.Tensor | None = None,
) -> torch.Tensor:
    """FL(p_t) = -alpha_t (1 - p_t)^gamma log p_t."""
    log_p_t = logits.log_softmax(dim=1).gather(1, targets[:, None]).squeeze(1)
    # 1 - p_t computed as -expm1(log p_t): exact near p_t = 1, where 1 - exp() cancels.
    one_minus_p_t = (-log_p_t.expm1()).clamp(min=FOCAL_MIN_ONE_MINUS_P)
    loss = -one_minus_p_t.pow(gamma) * log_p_t
    if alpha is not None:
        loss = loss * (alpha[targets] if alpha.ndim else alpha)
    return loss


class FocalLoss(LossKind):
    kind: Literal["focal"]
    gamma: float = Field(ge=0.0, le=100.0)
    # None: no weighting. A number scales every sample; a list gives one weight
    # per class (its length is checked against the dataset's classes).
    alpha: float | list[Annotated[float, Field(gt=0.0, le=FLOAT32_MAX)]] | None = None

    @field_validator("alpha")
    @classmethod
    def _alpha_positive(cls, value: float | list[float] | None) -> float | list[float] | None:
        if isinstance(value, float | int) and not 0 < value <= FLOAT32_MAX:
            raise ValueError(
                "alpha must be > 0 (and fit a float32), a list of per-class weights > 0, or null"
            )
        return value

    def label(self) -> str:
        label = f"Focal (γ={self.gamma:g}"
        if isinstance(self.alpha, float | int):
            label += f", α={self.alpha:g}"
        elif self.alpha is not None:
            label += ", α per class"
        return label + ")"

    def check_classes(self, name: str, num_classes: int) -> None:
        """A per-class alpha needs one weight per class of the dataset."""
        if isinstance(self.alpha, list) and len(self.alpha) != num_classes:
            raise ParamsError(
                f"losses.{name}.alpha: {len(self.alpha)} weights given but the dataset has "
                f"{num_classes} classes; give one weight per class, a single number, or null"
            )

    def per_sample_loss(self, device: torch.device) -> PerSampleLoss:
        import torch

        alpha = None
        if isinstance(self.alpha, list):
            alpha = torch.tensor(self.alpha, dtype=torch.float32, device=device)
        elif self.alpha is not None:
            alpha = torch.tensor(float(self.alpha), dtype=torch.float32, device=device)
        return partial(focal_loss, gamma=self.gamma, alpha=alpha)
