import copy
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_PARAMS, commit, lossbench, make_project, run_in, write_params

from lossbench.augment import Normalizer
from lossbench.errors import DamagedInput, ParamsError
from lossbench.losses import make_loss
from lossbench.losses.ce import CeLoss
from lossbench.losses.flsd import FlsdLoss
from lossbench.losses.focal import FocalLoss, focal_loss
from lossbench.losses.gce import GceLoss
from lossbench.losses.ls_ce import LsCeLoss
from lossbench.losses.mae import MaeLoss, mae_loss
from lossbench.losses.sce import SceLoss
from lossbench.model import ProtocolNet
from lossbench.storage import PreparedData, load_prepared, save_prepared

CPU = torch.device("cpu")


def ce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return make_loss("ce", CeLoss(kind="ce"), logits.shape[1], CPU)(logits, targets)


# Two classes, logits (0, ln 3): softmax = (0.25, 0.75).
LOGITS = torch.tensor([[0.0, math.log(3.0)]])
TARGET_0 = torch.tensor([0])


@pytest.mark.fast
def test_ce_by_hand() -> None:
    # p_t = 0.25 -> -ln 0.25 = ln 4
    assert ce_loss(LOGITS, TARGET_0).item() == pytest.approx(math.log(4.0), rel=1e-6)


@pytest.mark.fast
@pytest.mark.parametrize(
    ("gamma", "expected"), [(2.0, 0.75**2 * math.log(4.0)), (0.5, 0.75**0.5 * math.log(4.0))]
)
def test_focal_by_hand(gamma: float, expected: float) -> None:
    assert focal_loss(LOGITS, TARGET_0, gamma=gamma).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.fast
def test_focal_alpha_scalar_and_per_class() -> None:
    base = focal_loss(LOGITS, TARGET_0, gamma=2.0).item()
    scaled = focal_loss(LOGITS, TARGET_0, gamma=2.0, alpha=torch.tensor(0.25)).item()
    per_class = focal_loss(LOGITS, TARGET_0, gamma=2.0, alpha=torch.tensor([0.1, 0.9])).item()
    assert scaled == pytest.approx(0.25 * base, rel=1e-6)
    assert per_class == pytest.approx(0.1 * base, rel=1e-6)


@pytest.mark.fast
def test_focal_gamma_zero_equals_cross_entropy() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 10, generator=generator) * 3
    targets = torch.randint(0, 10, (64,), generator=generator)
    focal = focal_loss(logits, targets, gamma=0.0)
    torch.testing.assert_close(
        focal, F.cross_entropy(logits, targets, reduction="none"), rtol=1e-6, atol=1e-7
    )


@pytest.mark.fast
def test_mae_on_probabilities_by_hand() -> None:
    # |0.25 - 1| + |0.75 - 0| = 1.5, averaged over 2 classes
    assert mae_loss(LOGITS, TARGET_0).item() == pytest.approx(0.75, rel=1e-6)


@pytest.mark.fast
def test_mae_on_logits_by_hand() -> None:
    # |0.5 - 0| + |-1 - 1| = 2.5, averaged over 2 classes
    logits = torch.tensor([[0.5, -1.0]])
    assert mae_loss(logits, torch.tensor([1]), on_probs=False).item() == pytest.approx(1.25)


@pytest.mark.fast
def test_batch_mean_of_mae_is_mean_over_batch_and_classes() -> None:
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(8, 10, generator=generator)
    targets = torch.randint(0, 10, (8,), generator=generator)
    expected = F.l1_loss(logits.softmax(1), F.one_hot(targets, 10).float())
    assert mae_loss(logits, targets).mean().item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.fast
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
        GceLoss(kind="gce"),
        GceLoss(kind="gce", q=1e-3),
        SceLoss(kind="sce"),
        LsCeLoss(kind="ls_ce"),
        FlsdLoss(kind="flsd"),
        FlsdLoss(kind="flsd", gamma_hard=0.5, gamma_easy=0.1),
    ],
    ids=lambda spec: "-".join(str(value) for value in spec.model_dump().values()),
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


@pytest.mark.fast
def test_focal_alpha_list_must_match_classes() -> None:
    spec = FocalLoss(kind="focal", gamma=2.0, alpha=[1.0, 2.0])
    with pytest.raises(ParamsError, match=r"losses\.focal_x\.alpha: 2 weights given but the dataset has 10"):
        make_loss("focal_x", spec, 10, CPU)


# --- the kinds beyond mae, ce and focal, against their papers' formulas ---------------------------
# LOGITS with target 0: p_y = 0.25, the other class 0.75.


@pytest.mark.fast
@pytest.mark.parametrize(
    ("q", "expected"),
    [
        (0.7, 0.8872414),  # (1 - 0.25^0.7) / 0.7 = (1 - 0.3789291) / 0.7
        (1.0, 0.75),  # 1 - p_y
        (0.5, 1.0),  # (1 - 0.5) / 0.5
        (1e-6, math.log(4.0)),  # q -> 0: CE
    ],
)
def test_gce_by_hand(q: float, expected: float) -> None:
    """Zhang & Sabuncu (2018), eq. 6: L_q = (1 - p_y^q) / q."""
    loss = make_loss("gce", GceLoss(kind="gce", q=q), 2, CPU)
    assert loss(LOGITS, TARGET_0).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.fast
def test_sce_by_hand() -> None:
    """Wang et al. (2019): alpha CE + beta RCE, RCE = -sum_k p_k log q_k with log 0 = A = -4:
    -(0.25 * log 1 + 0.75 * -4) = 3; CE = ln 4."""
    loss = make_loss("sce", SceLoss(kind="sce"), 2, CPU)
    assert loss(LOGITS, TARGET_0).item() == pytest.approx(0.1 * math.log(4.0) + 1.0 * 3.0, rel=1e-6)
    only_rce = make_loss("sce", SceLoss(kind="sce", alpha=0.0, beta=2.0), 2, CPU)
    assert only_rce(LOGITS, TARGET_0).item() == pytest.approx(6.0, rel=1e-6)
    # Three classes, p = (0.2, 0.3, 0.5), label 2: RCE = -(0.2 * -4 + 0.3 * -4) = 2.
    logits = torch.tensor([[math.log(0.2), math.log(0.3), math.log(0.5)]])
    rce = make_loss("sce", SceLoss(kind="sce", alpha=0.0, beta=1.0), 3, CPU)
    assert rce(logits, torch.tensor([2])).item() == pytest.approx(2.0, rel=1e-6)


@pytest.mark.fast
def test_label_smoothed_ce_by_hand() -> None:
    """Target (1 - eps) one_hot + eps / K; eps = 0.1, K = 2: -(0.95 ln 0.25 + 0.05 ln 0.75) = 1.3313627."""
    loss = make_loss("ls", LsCeLoss(kind="ls_ce", label_smoothing=0.1), 2, CPU)
    assert loss(LOGITS, TARGET_0).item() == pytest.approx(1.3313627, rel=1e-6)
    # The same as torch's own label smoothing, on many samples.
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(64, 10, generator=generator) * 3
    targets = torch.randint(0, 10, (64,), generator=generator)
    expected = F.cross_entropy(logits, targets, reduction="none", label_smoothing=0.3)
    smoothed = make_loss("ls", LsCeLoss(kind="ls_ce", label_smoothing=0.3), 10, CPU)
    torch.testing.assert_close(smoothed(logits, targets), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.fast
def test_flsd_53_by_hand() -> None:
    """Mukhoti et al. (2020): gamma 5 where p_t < 0.2, else 3. p_t = 0.25: 0.75^3 ln 4 = 0.5848428;
    p_t = 0.1: 0.9^5 ln 10 = 1.3596528."""
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, math.log(9.0)]], requires_grad=True)
    targets = torch.tensor([0, 0])
    loss = make_loss("flsd", FlsdLoss(kind="flsd"), 2, CPU)(logits, targets)
    torch.testing.assert_close(loss, torch.tensor([0.5848428, 1.3596528]), rtol=1e-6, atol=0)
    # gamma_t is a constant per sample: the gradient is focal loss's at that gamma.
    loss.sum().backward()
    assert logits.grad is not None
    for row, gamma in ((0, 3.0), (1, 5.0)):
        fixed = logits.detach()[row : row + 1].clone().requires_grad_()
        focal_loss(fixed, targets[:1], gamma=gamma).sum().backward()
        torch.testing.assert_close(logits.grad[row : row + 1], fixed.grad)


@pytest.mark.fast
def test_ce_is_torchs_cross_entropy_bit_for_bit() -> None:
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(256, 10, generator=generator) * 4
    targets = torch.randint(0, 10, (256,), generator=generator)
    assert torch.equal(ce_loss(logits, targets), F.cross_entropy(logits, targets, reduction="none"))


# --- a loss kind is its own module: adding one reruns no other loss's training -------------------

BRIER_KIND = """\"\"\"Brier score: a kind added to the project, for the test.\"\"\"

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from lossbench.losses import LossKind, PerSampleLoss

if TYPE_CHECKING:
    import torch


def brier_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    probs = logits.softmax(dim=1)
    return (probs - probs.new_zeros(probs.shape).scatter_(1, targets[:, None], 1.0)).square().sum(dim=1)


class BrierLoss(LossKind):
    kind: Literal["brier"]

    def label(self) -> str:
        return "Brier"

    def per_sample_loss(self, device: torch.device) -> PerSampleLoss:
        return brier_loss
"""


def _ran(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


@pytest.mark.slow
def test_adding_a_loss_kind_reruns_no_other_loss(tmp_path: Path) -> None:
    params = copy.deepcopy(TINY_PARAMS)
    params["seeds"] = [1]
    params["train"] = {**params["train"], "epochs": 1}  # type: ignore[dict-item]
    params["losses"] = {"ce": {"kind": "ce"}, "focal_low": {"kind": "focal", "gamma": 0.5}}
    root = make_project(tmp_path / "project", params)
    # The project's own copy of the code is the code that runs (and that dvc.yaml names).
    env = {"PYTHONPATH": str(root / "src")}
    run_in(root, "dvc", "repro", env=env)
    commit(root)
    trained = ["train@ce-1", "train@focal_low-1"]

    # A new kind: its module and a loss of that kind. No trained stage is stale. (The new
    # loss first, and two workers: training it, the stage would also train ahead the
    # seeds after it that it takes for stale, which none is.)
    (root / "src" / "lossbench" / "losses" / "brier.py").write_text(BRIER_KIND)
    params["losses"] = {"brier": {"kind": "brier"}, **params["losses"]}  # type: ignore[dict-item]
    params["machine"] = {"workers": 2}
    write_params(root, params)
    stale = json.loads(run_in(root, "dvc", "status", "--json", env=env).stdout)
    assert not set(trained) & set(stale), stale
    assert "train@brier-1" in stale
    assert _ran(run_in(root, "dvc", "repro", env=env).stdout) == [
        "validate",
        "train@brier-1",
        "publish@brier",
        "calibrate",
        "report",
    ]
    assert "Brier" in (root / "plots" / "report.md").read_text()
    assert not list((root / "data" / "checkpoints").rglob("*.pt")), "a cached seed was trained ahead"
    assert run_in(root, "dvc", "status", "--json", env=env).stdout.strip() == "{}"

    # A change to a kind's code reruns the losses of that kind only.
    focal = root / "src" / "lossbench" / "losses" / "focal.py"
    focal.write_text(focal.read_text() + "\n# changed\n")
    assert _ran(run_in(root, "dvc", "repro", env=env).stdout) == [
        "validate",
        "train@focal_low-1",
        "publish@focal_low",
        "calibrate",
        "report",
    ]


# --- the memorization gauge under label noise ---------------------------------------------------


def test_a_run_with_flipped_labels_reports_how_many_of_them_it_learnt(tmp_path: Path) -> None:
    params = copy.deepcopy(TINY_PARAMS)
    params["data"] = {**params["data"], "label_noise": 0.4}  # type: ignore[dict-item]
    params["seeds"] = [1]
    params["losses"] = {"ce": {"kind": "ce"}}
    write_params(tmp_path, params)
    for command in (["validate"], ["prepare"], ["train", "ce", "1"]):
        result = lossbench(tmp_path, *command)
        assert result.returncode == 0, result.stderr
    numbers = json.loads((tmp_path / "data/runs/ce/seed1/metrics.json").read_text())["per_seed"]["seed1"]

    # The same fractions, computed here from the saved network and the prepared data.
    data = load_prepared(tmp_path / "data" / "prepared")
    assert data.train_true_labels is not None
    flipped = np.flatnonzero(data.train_labels != data.train_true_labels)
    assert len(flipped) == round(0.4 * 300)
    network = ProtocolNet(len(data.classes), 32, 32)
    network.load_state_dict(torch.load(tmp_path / "data/runs/ce/seed1/model.pt", weights_only=True))
    with torch.inference_mode():
        images = Normalizer(CPU)(torch.from_numpy(data.train_images[flipped]))
        predicted = network.eval()(images).argmax(dim=1).numpy()
    assert numbers["flipped_train_acc_noisy"] == pytest.approx(
        np.mean(predicted == data.train_labels[flipped])
    )
    assert numbers["flipped_train_acc_true"] == pytest.approx(
        np.mean(predicted == data.train_true_labels[flipped])
    )
    assert numbers["flipped_train_acc_noisy"] + numbers["flipped_train_acc_true"] <= 1
    # publish carries them to the loss's details, where variants-report reads them.
    assert lossbench(tmp_path, "publish", "ce").returncode == 0
    details = json.loads((tmp_path / "metrics/details/ce.json").read_text())["per_seed"]["seed1"]
    assert {key: details[key] for key in numbers} == numbers

    # Clean labels: no true labels kept, no gauge.
    params["data"]["label_noise"] = 0.0  # type: ignore[index]
    write_params(tmp_path, params)
    assert lossbench(tmp_path, "prepare").returncode == 0
    assert not (tmp_path / "data/prepared/train_true_labels.npy").exists()


@pytest.mark.fast
def test_damaged_true_labels_are_named(tmp_path: Path) -> None:
    images = np.zeros((4, 3, 32, 32), dtype=np.uint8)
    labels = np.array([0, 1, 0, 1], dtype=np.int64)
    data = PreparedData(images, labels, images, labels, ("a", "b"), train_true_labels=labels[::-1].copy())
    save_prepared(data, tmp_path / "prepared")
    loaded = load_prepared(tmp_path / "prepared")
    assert loaded.train_true_labels is not None and list(loaded.train_true_labels) == [1, 0, 1, 0]
    np.save(tmp_path / "prepared" / "train_true_labels.npy", np.array([0, 99, 0, 1], dtype=np.int64))
    with pytest.raises(DamagedInput, match=r"train_true_labels.npy: labels must be 0..1"):
        load_prepared(tmp_path / "prepared")
    np.save(tmp_path / "prepared" / "train_true_labels.npy", np.array([0, 1], dtype=np.int64))
    with pytest.raises(
        DamagedInput, match=r"train_true_labels.npy: expected 4 int64 labels, found int64 \(2,\)"
    ):
        load_prepared(tmp_path / "prepared")
