"""Is the synthetic stand-in a convnet problem? A linear softmax classifier on
the same prepared pixels, trained with the protocol's optimiser and schedule.

    python benchmarks/linear_baseline.py        # after `dvc repro prepare`

Prints the linear model's test accuracy next to the CE network's from
metrics/details/ce.json. Augmentation is left out: it only helps a model that can use it.
"""

from __future__ import annotations

import json

import torch
from torch import nn

from lossbench.augment import Normalizer
from lossbench.storage import DETAILS_DIR, PREPARED_DIR, load_prepared


def main() -> None:
    torch.manual_seed(1)
    data = load_prepared(PREPARED_DIR)
    normalize = Normalizer(torch.device("cpu"))
    train_x = normalize(torch.from_numpy(data.train_images)).flatten(1)
    test_x = normalize(torch.from_numpy(data.test_images)).flatten(1)
    train_y, test_y = torch.from_numpy(data.train_labels), torch.from_numpy(data.test_labels)
    model = nn.Linear(train_x.shape[1], len(data.classes))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.5)
    generator = torch.Generator().manual_seed(1)
    for _ in range(30):
        order = torch.randperm(len(train_y), generator=generator)
        for start in range(0, len(order), 128):
            index = order[start : start + 128]
            loss = nn.functional.cross_entropy(model(train_x[index]), train_y[index])
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
        scheduler.step()
    with torch.inference_mode():
        linear_train = (model(train_x).argmax(1) == train_y).float().mean().item()
        linear_test = (model(test_x).argmax(1) == test_y).float().mean().item()
    network = json.loads((DETAILS_DIR / "ce.json").read_text())
    print(f"linear softmax on pixels: train {linear_train:.4f}  test {linear_test:.4f}")
    print(
        f"protocol network, CE:     train {network['final_train_acc']['mean']:.4f}  "
        f"test {network['final_test_acc']['mean']:.4f} (mean of seeds {network['seeds']})"
    )


if __name__ == "__main__":
    main()
