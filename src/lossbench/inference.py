"""What a network does on a whole, unaugmented image set: mean loss and
accuracy (after every epoch), and softmax probabilities (after the last)."""

from __future__ import annotations

import numpy as np
import torch

from lossbench.losses import PerSampleLoss


@torch.inference_mode()
def loss_and_accuracy(
    network: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    loss_fn: PerSampleLoss,
    batch_size: int,
) -> tuple[float, float]:
    """Mean loss and accuracy over a whole (normalised, unaugmented) set."""
    network.eval()
    loss_sum = torch.zeros((), device=images.device)
    correct = torch.zeros((), device=images.device, dtype=torch.int64)
    for start in range(0, len(labels), batch_size):
        logits = network(images[start : start + batch_size])
        targets = labels[start : start + batch_size]
        loss_sum += loss_fn(logits, targets).sum()
        correct += (logits.argmax(dim=1) == targets).sum()
    return loss_sum.item() / len(labels), correct.item() / len(labels)


@torch.inference_mode()
def test_probabilities(network: torch.nn.Module, images: torch.Tensor, batch_size: int) -> np.ndarray:
    """Softmax outputs (N, classes) in float64."""
    network.eval()
    chunks = [
        network(images[start : start + batch_size]).double().softmax(dim=1)
        for start in range(0, len(images), batch_size)
    ]
    return torch.cat(chunks).cpu().numpy()
