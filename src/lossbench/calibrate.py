"""Stage calibrate@NAME: temperature scaling of every seed's finished network,
with no retraining.

Each seed's weights (data/runs/NAME/seedN/model.pt) are run once over the
prepared test set for their logits; `calibration.cross_fit` fits T on one
class-stratified half and scores the other, both ways. Writes, as one set:

- metrics/calibration/NAME.json: per seed, T of each half and every measure
  before and after scaling, with the floors of the ECEs (runfiles.LossCalibration);
- plots/calibration_scaled/NAME.csv: reliability bins per seed of every test
  image scaled by the T fitted on the other half (as plots/calibration/NAME.csv
  holds them before scaling).

The stage depends on what it computes with (the network's definition, the
normaliser, the calibration measures), not on training's code: adding it, or
changing it, leaves every train@NAME-SEED stage cached.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from rich.console import Console

from lossbench.calibration import FLOOR_DRAWS, cross_fit, stratified_halves
from lossbench.errors import DamagedInput, MissingInput
from lossbench.evaluation import ECE_BINS, calibration_bins
from lossbench.params import Params, loss_label, require_loss
from lossbench.runfiles import CalibrationFiles, LossCalibration, Measures, SeedCalibration
from lossbench.storage import PREPARED_DIR, PreparedData, SeedRunFiles, load_prepared, output_set

# A recomputed prediction may differ from the run's own where two classes tie to
# the last bit (another device or thread count); more than this share is another network.
MAX_DISAGREEMENT = 0.001


def test_logits(data: PreparedData, model: Path, threads: int, batch_size: int) -> np.ndarray:
    """The finished network's logits (N, classes) on the test set, in float64, on the CPU."""
    import torch

    from lossbench.augment import TestSet
    from lossbench.model import ProtocolNet

    torch.set_num_threads(threads)
    if not model.is_file():
        raise MissingInput(f"{model} is missing: run `dvc pull` for the runs' files, or `dvc repro`")
    try:
        with model.open("rb") as file:
            weights = torch.load(file, map_location="cpu", weights_only=True)
        network = ProtocolNet(len(data.classes), *data.test_images.shape[2:])
        network.load_state_dict(weights)
    except (pickle.UnpicklingError, RuntimeError, ValueError, KeyError, EOFError) as error:
        reason = str(error).splitlines()[0] if str(error) else error.__class__.__name__
        raise DamagedInput(
            f"{model}: not this network's weights ({reason}); run `dvc repro` to retrain"
        ) from None
    network = network.to(memory_format=torch.channels_last).eval()
    images = TestSet.from_prepared(data, torch.device("cpu")).images
    with torch.inference_mode():
        chunks = [
            network(images[start : start + batch_size]).double()
            for start in range(0, len(images), batch_size)
        ]
    return torch.cat(chunks).numpy()


def _check_predictions(logits: np.ndarray, data: PreparedData, files: SeedRunFiles) -> None:
    """The weights must reproduce the run's own test predictions: else they, or
    the prepared test set, are not the ones the run was scored on."""
    import pandas as pd

    index = {name: number for number, name in enumerate(data.classes)}
    recorded = pd.read_csv(files.predictions, dtype=str)["predicted"].map(index).to_numpy()
    if len(recorded) != len(logits):
        raise DamagedInput(f"{files.predictions}: {len(recorded)} predictions for {len(logits)} test images")
    differing = float(np.mean(recorded != logits.argmax(axis=1)))
    if differing > MAX_DISAGREEMENT:
        raise DamagedInput(
            f"{files.model}: predicts {differing:.1%} of the test images otherwise than the run "
            "recorded; the prepared test set or the weights changed: run `dvc repro`"
        )


def calibrate(params: Params, name: str, root: Path, console: Console) -> list[Path]:
    spec = require_loss(params, name)
    data = load_prepared(root / PREPARED_DIR)
    labels = data.test_labels
    half = stratified_halves(labels, params.calibration.split_seed)
    per_seed: dict[str, SeedCalibration] = {}
    bins: list[dict[str, object]] = []
    for seed in params.seeds:
        files = SeedRunFiles.of(root, name, seed)
        logits = test_logits(data, files.model, params.train.threads, params.train.test_batch_size)
        _check_predictions(logits, data, files)
        # The floors' draws: seeded by the split seed and the seed, the same for every loss.
        fitted = cross_fit(logits, labels, half, floor_seed=(params.calibration.split_seed, seed))
        per_seed[f"seed{seed}"] = SeedCalibration(
            temperatures=list(fitted.temperatures),
            before=Measures(**fitted.before.as_dict()),
            after=Measures(**fitted.after.as_dict()),
        )
        probabilities = np.exp(fitted.scaled)
        correct = probabilities.argmax(axis=1) == labels
        bins += [{"seed": seed} | row for row in calibration_bins(probabilities.max(axis=1), correct)]
    result = LossCalibration(
        loss=name,
        label=loss_label(spec),
        split_seed=params.calibration.split_seed,
        bins=ECE_BINS,
        floor_draws=FLOOR_DRAWS,
        half_sizes=[int(np.sum(half == k)) for k in (0, 1)],
        per_seed=per_seed,
    )
    written = CalibrationFiles.of(root, name)
    with output_set() as out:
        out.write_json(written.scores, result.model_dump(mode="json"))
        out.write_csv(written.scaled_reliability, bins)
    before = np.mean([seed.before.ece for seed in per_seed.values()])
    after = np.mean([seed.after.ece for seed in per_seed.values()])
    temperature = np.mean([np.mean(seed.temperatures) for seed in per_seed.values()])
    console.print(
        f"[bold]calibrate@{name}[/]: {len(per_seed)} seed(s), T {temperature:.3f}, ECE {before:.4f} → "
        f"{after:.4f} after scaling; wrote "
        + ", ".join(str(path.relative_to(root)) for path in written.all())
    )
    return written.all()
