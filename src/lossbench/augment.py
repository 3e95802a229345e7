"""Whole-batch augmentation and normalisation on tensors.

Same distribution as the protocol's torchvision pipeline, RandomCrop(32,
padding=4) then RandomHorizontalFlip(0.5) then ToTensor and Normalize, but done
for a whole batch with one gather instead of per-image PIL calls.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
PADDING = 4


def pad_images(images: torch.Tensor) -> torch.Tensor:
    """Zero-pad uint8 images (N, C, H, W) by PADDING on each side, as RandomCrop's
    padding does on the PIL image (black pixels, normalised afterwards)."""
    return F.pad(images, (PADDING, PADDING, PADDING, PADDING))


def crop_and_flip(padded: torch.Tensor, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crops of the original size, each mirrored with probability 0.5.

    `padded` holds the whole padded training set; `index` picks the batch.
    Crop offsets are uniform on 0..2*PADDING in each axis, like RandomCrop's.
    """
    batch, channels = len(index), padded.shape[1]
    height, width = padded.shape[2] - 2 * PADDING, padded.shape[3] - 2 * PADDING
    device = padded.device
    top = torch.randint(0, 2 * PADDING + 1, (batch,), generator=generator, device=device)
    left = torch.randint(0, 2 * PADDING + 1, (batch,), generator=generator, device=device)
    flip = torch.rand(batch, generator=generator, device=device) < 0.5
    rows = top[:, None] + torch.arange(height, device=device)
    columns = torch.arange(width, device=device)
    # A flipped crop reads its columns right to left.
    cols = left[:, None] + torch.where(flip[:, None], width - 1 - columns, columns)
    return padded[
        index[:, None, None, None],
        torch.arange(channels, device=device)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


class Normalizer:
    """uint8 (N, C, H, W) -> float32, as ToTensor (/255) followed by Normalize(mean, std)."""

    def __init__(self, device: torch.device) -> None:
        std = torch.tensor(CIFAR10_STD, device=device)[None, :, None, None]
        mean = torch.tensor(CIFAR10_MEAN, device=device)[None, :, None, None]
        self.scale = 1.0 / (255.0 * std)
        self.shift = -mean / std

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return images.float() * self.scale + self.shift
