"""`lossbench numerics`: will this machine reproduce the committed results bit for bit?

Runs the project's own training path on a tiny fixed input — synthetic images,
the batch augmentation, the protocol network, each loss kind, SGD with
momentum and weight decay, the step schedule, and the test-set evaluation —
on one thread, and compares SHA-256 digests of the weights and test
probabilities with the ones committed here. A machine that matches computes
every committed run's numbers exactly.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from rich.console import Console

from lossbench.augment import TestSet, TrainingSet
from lossbench.inference import test_probabilities
from lossbench.losses import make_loss
from lossbench.losses.ce import CeLoss
from lossbench.losses.focal import FocalLoss
from lossbench.losses.mae import MaeLoss
from lossbench.numerics import numerics_in_force
from lossbench.params import LossParams, TrainParams
from lossbench.storage import PreparedData
from lossbench.synthetic import CLASSES, generate
from lossbench.train import new_state, train_epoch

LOSSES: dict[str, LossParams] = {
    "mae": MaeLoss(kind="mae"),
    "ce": CeLoss(kind="ce"),
    "focal": FocalLoss(kind="focal", gamma=2.0, alpha=0.25),
}
# The studies' batch sizes (128), each pass ending in a partial batch as theirs do, two
# epochs so that the schedule steps once; small enough to run in half a minute under
# an emulated CPU (tests/test_numerics.py), where training runs 30 to 40 times slower.
PROTOCOL = TrainParams(epochs=2, batch_size=128, lr=0.1, weight_decay=5e-4, lr_step_epochs=1)
TRAIN_IMAGES, TEST_IMAGES = 320, 200

# Made with `lossbench numerics --print` on an AMD EPYC Zen 4, where the committed results
# are made; emulated Intel and AMD CPUs give the same (tests/test_numerics.py).
REFERENCE_TORCH = "2.15.0+cu132"
REFERENCE = {
    "init": "3848c8160a3eb461",
    "mae": "838197ecc0bfb951",
    "ce": "79e37930dcb79efc",
    "focal": "3c0bdf8fe3c91b40",
}


def _digest(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def fingerprints() -> dict[str, str]:
    """Digest of the initial weights, and per loss kind of the trained weights
    together with the test probabilities."""
    torch.set_num_threads(1)
    device = torch.device("cpu")
    train_images, train_labels = generate("train", TRAIN_IMAGES, 0, 0.2)
    test_images, test_labels = generate("test", TEST_IMAGES, 0, 0.2)
    data = PreparedData(train_images, train_labels, test_images, test_labels, CLASSES)
    training, test = TrainingSet.from_prepared(data, device), TestSet.from_prepared(data, device)
    found: dict[str, str] = {}
    for name, spec in LOSSES.items():
        state = new_state(PROTOCOL, 1, training, device)
        weights = state.network.state_dict()
        found.setdefault("init", _digest(*(weights[key].numpy() for key in sorted(weights))))
        loss_fn = make_loss(name, spec, len(CLASSES), device)
        for _ in range(PROTOCOL.epochs):
            train_epoch(
                state.network, state.optimizer, training, loss_fn, state.generator, PROTOCOL.batch_size
            )
            state.optimizer.end_epoch()
        weights = state.network.state_dict()
        probabilities = test_probabilities(state.network, test.images, PROTOCOL.test_batch_size)
        found[name] = _digest(*(weights[key].numpy() for key in sorted(weights)), probabilities)
    return found


def numerics_check(console: Console, print_reference: bool = False) -> bool:
    """One line: does this machine match the committed reference? True if it does."""
    found = fingerprints()
    in_force = numerics_in_force("cpu")
    described = f"torch {in_force['torch']}, {in_force['machine']}, ATen {in_force['cpu_capability']} kernels"
    if print_reference:
        console.print(f'REFERENCE_TORCH = "{in_force["torch"]}"\nREFERENCE = {found!r}', markup=False)
        return True
    if found == REFERENCE:
        console.print(f"numerics: this machine reproduces the committed results bit for bit ({described})")
        return True
    differing = [name for name in found if REFERENCE.get(name) != found[name]]
    why = (
        f"another torch build than the reference's {REFERENCE_TORCH}"
        if in_force["torch"] != REFERENCE_TORCH
        else f"ATen runs {in_force['cpu_capability']} kernels, not the pinned AVX2"
        if in_force["cpu_capability"] != "AVX2"
        else "the same kernel settings, yet other bits"
    )
    console.print(
        f"numerics: this machine computes other bits than the committed results ({described}; "
        f"{why}; differs in: {', '.join(differing)}); its runs will differ from the committed ones",
        markup=False,
    )
    return False
