"""MAE: mean absolute error between the softmax probabilities and the one-hot target.

Noise-robust (Ghosh et al., 2017, "Robust loss functions under label noise for
deep neural networks"): summed over the K possible labels it is the same, 2(K-1)/K,
for any output, so labels flipped uniformly do not move its minimum.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Literal

from lossbench.losses import LossKind, PerSampleLoss

if TYPE_CHECKING:
    import torch


def mae_loss(logits: torch.Tensor, targets: torch.Tensor, *, on_probs: bool = True) -> torch.Tensor:
    """Mean absolute error to the one-hot target, averaged over classes."""
    outputs = logits.softmax(dim=1) if on_probs else logits
    one_hot = outputs.new_zeros(outputs.shape).scatter_(1, targets[:, None], 1.0)
    return (outputs - one_hot).abs().mean(dim=1)


class MaeLoss(LossKind):
    kind: Literal["mae"]
    # probs: L1 between softmax probabilities and the one-hot target (the study's
    # form); logits: L1 on raw logits, which does not learn (kept as an option).
    input: Literal["probs", "logits"] = "probs"

    def label(self) -> str:
        return "MAE (L1)" if self.input == "probs" else "MAE (L1, logits)"

    def per_sample_loss(self, device: torch.device) -> PerSampleLoss:
        return partial(mae_loss, on_probs=self.input == "probs")
