"""The study's losses, each returning one loss value per sample.

Training takes the mean; evaluation sums over the test set. Per-sample values
keep both exact whatever the batch size.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F

from lossbench.params import CeLoss, FocalLoss, LossParams, MaeLoss, check_alpha

PerSampleLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Floor for (1 - p_t) in focal loss. (1 - p)^γ has an infinite slope at p = 1
# when γ < 1, so a fully confident logit would give an infinite gradient times a
# zero one (NaN). Below the floor the factor is constant, where the true
# gradient is negligible anyway.
FOCAL_MIN_ONE_MINUS_P = 1e-12


def mae_loss(logits: torch.Tensor, targets: torch.Tensor, *, on_probs: bool = True) -> torch.Tensor:
    """Mean absolute error to the one-hot target, averaged over classes."""
    outputs = logits.softmax(dim=1) if on_probs else logits
    one_hot = F.one_hot(targets, num_classes=logits.shape[1]).to(outputs.dtype)
    return (outputs - one_hot).abs().mean(dim=1)


def ce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, targets, reduction="none")


def focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    gamma: float,
    alpha: torch.Tensor | None = None,
) -> torch.Tensor:
    """FL(p_t) = -alpha_t (1 - p_t)^gamma log p_t  (Lin et al., 2017), multi-class."""
    log_p_t = logits.log_softmax(dim=1).gather(1, targets[:, None]).squeeze(1)
    # 1 - p_t computed as -expm1(log p_t): exact near p_t = 1, where 1 - exp() cancels.
    one_minus_p_t = (-torch.expm1(log_p_t)).clamp(min=FOCAL_MIN_ONE_MINUS_P)
    loss = -one_minus_p_t.pow(gamma) * log_p_t
    if alpha is not None:
        loss = loss * (alpha[targets] if alpha.ndim else alpha)
    return loss


def make_loss(name: str, spec: LossParams, num_classes: int, device: torch.device) -> PerSampleLoss:
    """The per-sample loss function for the `losses.NAME` entry of params.yaml."""
    if isinstance(spec, MaeLoss):
        return partial(mae_loss, on_probs=spec.input == "probs")
    if isinstance(spec, CeLoss):
        return ce_loss
    assert isinstance(spec, FocalLoss)
    check_alpha(name, spec, num_classes)
    alpha = None
    if isinstance(spec.alpha, list):
        alpha = torch.tensor(spec.alpha, dtype=torch.float32, device=device)
    elif spec.alpha is not None:
        alpha = torch.tensor(float(spec.alpha), dtype=torch.float32, device=device)
    return partial(focal_loss, gamma=spec.gamma, alpha=alpha)
