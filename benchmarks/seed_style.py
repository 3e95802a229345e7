"""The protocol trained the way the seed study did it: the speed baseline.

Per-image PIL transforms (torchvision's RandomCrop, RandomHorizontalFlip,
ToTensor, Normalize), a DataLoader with 2 worker processes, and `.item()` on
every batch; the test set is evaluated after every epoch. Same network (NCHW,
torch's default thread count), optimiser, schedule, batch sizes and loss as
lossbench's engine. `benchmarks/speed.py` runs it next to the engine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from lossbench.augment import CIFAR10_MEAN, CIFAR10_STD
from lossbench.model import ProtocolNet
from lossbench.storage import PreparedData


class ImageArrayDataset(Dataset[tuple[torch.Tensor, int]]):
    """uint8 images (N, C, H, W) served one PIL image at a time, as torchvision's CIFAR10 does."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: transforms.Compose) -> None:
        self.images = np.ascontiguousarray(images.transpose(0, 2, 3, 1))  # HWC for PIL
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image: torch.Tensor = self.transform(Image.fromarray(self.images[index]))
        return image, int(self.labels[index])


@dataclass(frozen=True)
class SeedStyleEpoch:
    epoch: int
    seconds: float
    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float


def train_seed_style(data: PreparedData, seed: int, epochs: int) -> list[SeedStyleEpoch]:
    """Cross-entropy training of the protocol network, one record per epoch."""
    torch.manual_seed(seed)
    normalize = transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD)
    train_transform = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            normalize,
        ]
    )
    test_transform = transforms.Compose([transforms.ToTensor(), normalize])
    train_loader = DataLoader(
        ImageArrayDataset(data.train_images, data.train_labels, train_transform),
        batch_size=128,
        shuffle=True,
        num_workers=2,
    )
    test_loader = DataLoader(
        ImageArrayDataset(data.test_images, data.test_labels, test_transform),
        batch_size=128,
        shuffle=False,
        num_workers=2,
    )
    network = ProtocolNet(len(data.classes))
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.5)

    records = []
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        network.train()
        running_loss, correct, seen = 0.0, 0, 0
        for images, labels in train_loader:
            optimizer.zero_grad()
            outputs = network(images)
            loss = criterion(outputs, labels)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            running_loss += loss.item() * len(labels)
            correct += (outputs.argmax(1) == labels).sum().item()
            seen += len(labels)
        scheduler.step()

        network.eval()
        test_loss, test_correct = 0.0, 0
        with torch.no_grad():
            for images, labels in test_loader:
                outputs = network(images)
                test_loss += criterion(outputs, labels).item() * len(labels)
                test_correct += (outputs.argmax(1) == labels).sum().item()
        n_test = len(test_loader.dataset)  # type: ignore[arg-type]
        records.append(
            SeedStyleEpoch(
                epoch=epoch,
                seconds=time.perf_counter() - started,
                train_loss=running_loss / seen,
                train_acc=correct / seen,
                test_loss=test_loss / n_test,
                test_acc=test_correct / n_test,
            )
        )
    return records


if __name__ == "__main__":
    from lossbench.storage import PREPARED_DIR, load_prepared

    for record in train_seed_style(load_prepared(PREPARED_DIR), seed=1, epochs=2):
        print(record)
