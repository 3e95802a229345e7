"""Stage calibrate: temperature scaling of every loss's and seed's finished
network, with no retraining.

Each seed's weights (data/runs/NAME/seedN/model.pt) are run once over the
prepared test set for their logits; `calibration.cross_fit` fits T on one
class-stratified half and scores the other, both ways. Writes, for every
loss in params.yaml, as one set (the folders are the stage's: DVC empties them
before it runs, so a removed loss leaves no file behind):

- metrics/calibration/NAME.json: per seed, T of each half and every measure
  before and after scaling, with the floors of the ECEs (runfiles.LossCalibration);
- plots/calibration_scaled/NAME.csv: reliability bins per seed of every test
  image scaled by the T fitted on the other half (as plots/calibration/NAME.csv
  holds them before scaling).

The stage depends on what it computes with (the network's definition, the
normaliser, the calibration measures), not on training's code: adding it, or
changing it, leaves every train@NAME-SEED stage cached. One stage for every loss, not
one per loss: its cost is importing torch (2 s), its work a fraction of that.
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
from lossbench.runfiles import (
    CALIBRATION_DIR,
    SCALED_RELIABILITY_DIR,
    CalibrationFiles,
    LossCalibration,
    Measures,
    SeedCalibration,
)
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
    try:
        recorded = pd.read_csv(files.predictions, dtype=str)["predicted"].map(index).to_numpy()
    except (ValueError, KeyError) as error:  # empty, not CSV, no `predicted` column
        raise DamagedInput(
            f"{files.predictions}: not the run's test predictions ({str(error).splitlines()[0]}); "
            "run `dvc repro` to retrain"
        ) from None
    if len(recorded) != len(logits):
        raise DamagedInput(f"{files.predictions}: {len(recorded)} predictions for {len(logits)} test images")
    differing = float(np.mean(recorded != logits.argmax(axis=1)))
    if differing > MAX_DISAGREEMENT:
        raise DamagedInput(
            f"{files.model}: predicts {differing:.1%} of the test images otherwise than the run "
            "recorded; the prepared test set or the weights changed: run `dvc repro`"
        )


def calibrate_loss(
    params: Params, name: str, root: Path, data: PreparedData
) -> tuple[LossCalibration, list[dict[str, object]]]:
    """One loss's seeds scaled: its calibration file's contents and its reliability bins after scaling."""
    spec = require_loss(params, name)
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
    calibration = LossCalibration(
        loss=name,
        label=loss_label(spec),
        split_seed=params.calibration.split_seed,
        bins=ECE_BINS,
        floor_draws=FLOOR_DRAWS,
        half_sizes=[int(np.sum(half == k)) for k in (0, 1)],
        per_seed=per_seed,
    )
    return calibration, bins


def calibrate(params: Params, root: Path, console: Console) -> list[Path]:
    """Every loss's seeds scaled; the files written as one set."""
    data = load_prepared(root / PREPARED_DIR)
    found = {name: calibrate_loss(params, name, root, data) for name in params.losses}
    written = [CalibrationFiles.of(root, name) for name in params.losses]
    with output_set() as out:
        for files, (calibration, bins) in zip(written, found.values(), strict=True):
            out.write_json(files.scores, calibration.model_dump(mode="json"))
            out.write_csv(files.scaled_reliability, bins)
    for name, (calibration, _) in found.items():
        seeds = calibration.per_seed.values()
        # the median, as in the summaries: a run at chance fits T at its bound (100)
        temperature = np.median([T for seed in seeds for T in seed.temperatures])
        before, after = (np.mean([getattr(seed, side).ece for seed in seeds]) for side in ("before", "after"))
        console.print(
            f"[bold]calibrate[/]: {name}, {len(seeds)} seed(s), median T {temperature:.3f}, ECE {before:.4f} → "
            f"{after:.4f} after scaling",
            highlight=False,
        )
    console.print(f"  wrote {CALIBRATION_DIR}/ and {SCALED_RELIABILITY_DIR}/, one file per loss in each")
    return [path for files in written for path in files.all()]
