import math

import pytest
import torch
import torch.nn.functional as F

from lossbench.errors import ParamsError
from lossbench.losses import ce_loss, focal_loss, mae_loss, make_loss
from lossbench.params import CeLoss, FocalLoss, MaeLoss

CPU = torch.device("cpu")
# Two classes, logits (0, ln 3): softmax = (0.25, 0.75).
LOGITS = torch.tensor([[0.0, math.log(3.0)]])
TARGET_0 = torch.tensor([0])


def test_ce_by_hand() -> None:
    # p_t = 0.25 -> -ln 0.25 = ln 4
    assert ce_loss(LOGITS, TARGET_0).item() == pytest.approx(math.log(4.0), rel=1e-6)


@pytest.mark.parametrize(
    ("gamma", "expected"), [(2.0, 0.75**2 * math.log(4.0)), (0.5, 0.75**0.5 * math.log(4.0))]
)
def test_focal_by_hand(gamma: float, expected: float) -> None:
    assert focal_loss(LOGITS, TARGET_0, gamma=gamma).item() == pytest.approx(expected, rel=1e-6)


def test_focal_alpha_scalar_and_per_class() -> None:
    base = focal_loss(LOGITS, TARGET_0, gamma=2.0).item()
    scaled = focal_loss(LOGITS, TARGET_0, gamma=2.0, alpha=torch.tensor(0.25)).item()
    per_class = focal_loss(LOGITS, TARGET_0, gamma=2.0, alpha=torch.tensor([0.1, 0.9])).item()
    assert scaled == pytest.approx(0.25 * base, rel=1e-6)
    assert per_class == pytest.approx(0.1 * base, rel=1e-6)


def test_focal_gamma_zero_equals_cross_entropy() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 10, generator=generator) * 3
    targets = torch.randint(0, 10, (64,), generator=generator)
    focal = focal_loss(logits, targets, gamma=0.0)
    torch.testing.assert_close(
        focal, F.cross_entropy(logits, targets, reduction="none"), rtol=1e-6, atol=1e-7
    )


def test_mae_on_probabilities_by_hand() -> None:
    # |0.25 - 1| + |0.75 - 0| = 1.5, averaged over 2 classes
    assert mae_loss(LOGITS, TARGET_0).item() == pytest.approx(0.75, rel=1e-6)


def test_mae_on_logits_by_hand() -> None:
    # |0.5 - 0| + |-1 - 1| = 2.5, averaged over 2 classes
    logits = torch.tensor([[0.5, -1.0]])
    assert mae_loss(logits, torch.tensor([1]), on_probs=False).item() == pytest.approx(1.25)


def test_batch_mean_of_mae_is_mean_over_batch_and_classes() -> None:
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(8, 10, generator=generator)
    targets = torch.randint(0, 10, (8,), generator=generator)
    expected = F.l1_loss(logits.softmax(1), F.one_hot(targets, 10).float())
    assert mae_loss(logits, targets).mean().item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize(
    "spec",
    [
        MaeLoss(kind="mae"),
        MaeLoss(kind="mae", input="logits"),
        CeLoss(kind="ce"),
        FocalLoss(kind="focal", gamma=0.0),
        FocalLoss(kind="focal", gamma=0.1),
        FocalLoss(kind="focal", gamma=0.5),
        FocalLoss(kind="focal", gamma=2.0),
    ],
    ids=lambda spec: f"{spec.kind}-{getattr(spec, 'gamma', getattr(spec, 'input', ''))}",
)
def test_extreme_logits_keep_loss_and_gradients_finite(spec: object) -> None:
    loss_fn = make_loss("x", spec, 3, CPU)  # type: ignore[arg-type]
    # Confidently right (p_t rounds to 1), confidently wrong, and huge magnitudes.
    logits = torch.tensor([[1e4, -1e4, 0.0], [1e4, -1e4, 0.0], [-3e4, 3e4, 1.0]], requires_grad=True)
    targets = torch.tensor([0, 1, 2])
    loss = loss_fn(logits, targets)
    assert torch.isfinite(loss).all(), loss
    loss.mean().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all(), logits.grad


def test_focal_alpha_list_must_match_classes() -> None:
    spec = FocalLoss(kind="focal", gamma=2.0, alpha=[1.0, 2.0])
    with pytest.raises(ParamsError, match=r"losses\.focal_x\.alpha: 2 weights given but the dataset has 10"):
        make_loss("focal_x", spec, 10, CPU)
