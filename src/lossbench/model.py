"""The study's network: two 3x3 convolutions and two linear layers, 9,986 parameters
on CIFAR-10 geometry."""

from __future__ import annotations

import torch
from torch import nn


def flatten_size(height: int, width: int) -> int:
    """Features after conv(3x3, no padding) -> pool 2 -> conv(3x3) -> pool 2, 8 channels."""
    out_h = ((height - 2) // 2 - 2) // 2
    out_w = ((width - 2) // 2 - 2) // 2
    if out_h < 1 or out_w < 1:
        raise ValueError(f"images of {height}x{width} are too small for the network (need >= 10x10)")
    return 8 * out_h * out_w


class ProtocolNet(nn.Module):
    def __init__(self, num_classes: int = 10, height: int = 32, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, kernel_size=3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(4, 8, kernel_size=3),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flatten_size(height, width), 32),
            nn.ReLU(),
            nn.Linear(32, num_classes),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.classifier(self.features(images))
        return logits
