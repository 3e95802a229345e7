"""StepDecaySGD against torch.optim.SGD with StepLR: the same bits, step by step,
across rate cuts and a save and restore in the middle."""

import io

import pytest
import torch

from lossbench.optimizer import StepDecaySGD

SETTINGS = {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4}


def _network() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))


def _backward(network: torch.nn.Module, step: int) -> None:
    generator = torch.Generator().manual_seed(step)
    inputs, targets = torch.randn(8, 6, generator=generator), torch.randint(0, 3, (8,), generator=generator)
    torch.nn.functional.cross_entropy(network(inputs), targets).backward()


def test_the_same_bits_as_torchs_sgd_with_step_lr_through_a_save_and_restore() -> None:
    reference, ours = _network(), _network()
    sgd = torch.optim.SGD(reference.parameters(), **SETTINGS)
    schedule = torch.optim.lr_scheduler.StepLR(sgd, step_size=2, gamma=0.3)
    optimizer = StepDecaySGD(list(ours.parameters()), **SETTINGS, step_epochs=2, decay_factor=0.3)
    step = 0
    for epoch in range(7):
        if epoch == 3:  # as a resumed run: a fresh optimiser given the saved state
            file = io.BytesIO()  # through a file, as a checkpoint is
            torch.save(optimizer.state_dict(), file)
            file.seek(0)
            saved = torch.load(file, map_location="cpu", weights_only=True)
            optimizer = StepDecaySGD(list(ours.parameters()), **SETTINGS, step_epochs=2, decay_factor=0.3)
            optimizer.load_state_dict(saved)
        assert optimizer.lr == sgd.param_groups[0]["lr"], epoch
        for _ in range(3):
            step += 1
            for network, zero_grad in ((reference, sgd.zero_grad), (ours, optimizer.zero_grad)):
                zero_grad()
                _backward(network, step)
            sgd.step()
            optimizer.step()
            for mine, theirs in zip(ours.parameters(), reference.parameters(), strict=True):
                assert torch.equal(mine, theirs), (epoch, step)
        schedule.step()
        optimizer.end_epoch()
    assert optimizer.lr == sgd.param_groups[0]["lr"] == pytest.approx(0.1 * 0.3**3)


@pytest.mark.parametrize(
    ("saved", "error"),
    [
        ({"lr": 0.1, "epochs_done": 0}, KeyError),
        ({"lr": "0.1", "epochs_done": 0, "momentum_buffers": []}, TypeError),
        ({"lr": 0.1, "epochs_done": 0, "momentum_buffers": [None]}, ValueError),
        ({"lr": 0.1, "epochs_done": 0, "momentum_buffers": [torch.zeros(2), None, None, None]}, ValueError),
        (
            {
                "lr": 0.1,
                "epochs_done": 0,
                "momentum_buffers": [torch.zeros(5, 6, dtype=torch.int64)] + [None] * 3,
            },
            ValueError,
        ),
        (torch.zeros(3), TypeError),
    ],
)
def test_a_saved_state_of_another_structure_is_refused(saved: object, error: type) -> None:
    optimizer = StepDecaySGD(list(_network().parameters()), **SETTINGS, step_epochs=2, decay_factor=0.3)
    with pytest.raises(error):
        optimizer.load_state_dict(saved)
    assert optimizer.lr == 0.1 and optimizer.momentum_buffers == [None] * 4  # unchanged
