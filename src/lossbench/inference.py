"""What a network does on a whole, unaugmented image set: mean loss and
accuracy (after every epoch), softmax probabilities (after the last), and how
many flipped training labels it learnt (after the last, with label noise)."""

from __future__ import annotations

import numpy as np
import torch

from lossbench.augment import Normalizer
from lossbench.losses import PerSampleLoss
from lossbench.storage import PreparedData


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


def flipped_label_fit(
    network: torch.nn.Module, data: PreparedData, device: torch.device, batch_size: int
) -> dict[str, float]:
    """How far the finished network memorised flipped labels (data.label_noise): on the
    training images whose label was flipped, unaugmented, its accuracy against the
    flipped labels it was trained on and against their true labels. Empty without flips."""
    if data.train_true_labels is None:
        return {}
    flipped = np.flatnonzero(data.train_labels != data.train_true_labels)
    if not len(flipped):
        return {}
    images = Normalizer(device)(torch.from_numpy(data.train_images[flipped]).to(device))
    predicted = test_probabilities(
        network, images.contiguous(memory_format=torch.channels_last), batch_size
    ).argmax(axis=1)
    return {
        "flipped_train_acc_noisy": float(np.mean(predicted == data.train_labels[flipped])),
        "flipped_train_acc_true": float(np.mean(predicted == data.train_true_labels[flipped])),
    }
