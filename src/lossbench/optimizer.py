"""The protocol's optimiser: SGD with momentum and weight decay, its rate cut by
a factor every few epochs, as torch.optim.SGD with StepLR computes it.

It calls torch's own update (`torch.optim.sgd.sgd`, the function the SGD class
calls) but is not the class: the class imports torch._dynamo on first use, 1.2 s
of every training process's 4 s start (measured). The update is the same call
with the same arguments, and the rate is multiplied by the factor at each
boundary as StepLR does, so the bits are the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch.optim.sgd import sgd


@dataclass
class StepDecaySGD:
    params: list[torch.nn.Parameter]
    lr: float
    momentum: float
    weight_decay: float
    step_epochs: int  # the rate is cut after every this many epochs
    decay_factor: float
    epochs_done: int = 0
    # Per parameter, made at its first update (torch's SGD keeps the same state).
    momentum_buffers: list[torch.Tensor | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.momentum_buffers = self.momentum_buffers or [None] * len(self.params)

    def zero_grad(self) -> None:
        for param in self.params:
            param.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One update of the parameters that have a gradient."""
        updated = [i for i, param in enumerate(self.params) if param.grad is not None]
        buffers = [self.momentum_buffers[i] for i in updated]
        sgd(
            [self.params[i] for i in updated],
            [self.params[i].grad for i in updated],  # type: ignore[misc]
            buffers,
            weight_decay=self.weight_decay,
            momentum=self.momentum,
            lr=self.lr,
            dampening=0.0,
            nesterov=False,
            maximize=False,
        )
        for i, buffer in zip(updated, buffers, strict=True):
            self.momentum_buffers[i] = buffer

    def end_epoch(self) -> None:
        """StepLR's step: the rate times the factor once each `step_epochs` epochs."""
        self.epochs_done += 1
        if self.epochs_done % self.step_epochs == 0:
            self.lr = self.lr * self.decay_factor

    def state_dict(self) -> dict[str, Any]:
        return {"lr": self.lr, "epochs_done": self.epochs_done, "momentum_buffers": self.momentum_buffers}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Raises KeyError, TypeError or ValueError when `saved` has another structure."""
        if not isinstance(saved, dict):
            raise TypeError("optimizer state is not a dict")
        lr, epochs_done, buffers = saved["lr"], saved["epochs_done"], saved["momentum_buffers"]
        if not isinstance(lr, float) or not isinstance(epochs_done, int) or not isinstance(buffers, list):
            raise TypeError("optimizer state has other types")
        if len(buffers) != len(self.params) or any(
            buffer is not None
            and (
                not isinstance(buffer, torch.Tensor)
                or buffer.shape != param.shape
                or buffer.dtype != param.dtype
            )
            for buffer, param in zip(buffers, self.params, strict=False)
        ):
            raise ValueError("optimizer state does not fit the network")
        self.lr, self.epochs_done = lr, epochs_done
        self.momentum_buffers = [  # loaded onto the CPU: moved to each parameter's device
            None if buffer is None else buffer.to(param.device)
            for buffer, param in zip(buffers, self.params, strict=True)
        ]
