"""One loss's finished run as the report reads it (data/runs/NAME), and the
seed arithmetic every comparison shares."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lossbench.errors import MissingInput
from lossbench.params import LossParams, Params, loss_label
from lossbench.storage import RunFiles


@dataclass(frozen=True)
class LossResult:
    name: str
    label: str
    spec: LossParams
    per_seed: dict[int, dict[str, Any]]  # seed -> that seed's numbers (evaluation.SEED_METRICS, ...)
    history: pd.DataFrame  # one row per seed and epoch
    calibration: pd.DataFrame  # one row per seed and confidence bin
    run: dict[str, Any]  # the rest of data/runs/NAME/metrics.json: settings, sizes, classes

    @property
    def seeds(self) -> list[int]:
        return list(self.per_seed)

    def values(self, key: str) -> list[float]:
        """One number per seed, in seed order."""
        return [float(numbers[key]) for numbers in self.per_seed.values()]

    def mean(self, key: str) -> float:
        return float(np.mean(self.values(key)))

    def at_chance(self) -> dict[int, str]:
        """Seeds whose run never left chance or collapsed to it, and which."""
        return {seed: numbers["at_chance"] for seed, numbers in self.per_seed.items() if numbers["at_chance"]}

    def only(self, seeds: list[int]) -> LossResult:
        """The same result restricted to `seeds`."""
        return replace(
            self,
            per_seed={seed: self.per_seed[seed] for seed in seeds},
            history=self.history[self.history["seed"].isin(seeds)],
            calibration=self.calibration[self.calibration["seed"].isin(seeds)],
        )


def load_results(params: Params, root: Path) -> list[LossResult]:
    results = []
    for name, spec in params.losses.items():
        run = RunFiles.of(root, name)
        paths = [run.metrics, run.history, run.calibration, run.confusion]
        for path in paths:
            if not path.is_file():
                raise MissingInput(f"{path} is missing: run `dvc repro train@{name}` first")
        metrics = json.loads(run.metrics.read_text())
        if metrics.get("seeds") != params.train.seeds:
            raise MissingInput(
                f"{run.metrics} holds seeds {metrics.get('seeds')}, params.yaml asks for {params.train.seeds}: "
                f"run `dvc repro train@{name}` first"
            )
        per_seed = {seed: metrics["per_seed"][f"seed{seed}"] for seed in metrics["seeds"]}
        rest = {key: value for key, value in metrics.items() if key != "per_seed"}
        history, calibration = pd.read_csv(run.history), pd.read_csv(run.calibration)
        results.append(LossResult(name, loss_label(spec), spec, per_seed, history, calibration, rest))
    return results


def without_chance_runs(results: list[LossResult]) -> tuple[list[LossResult], list[int]]:
    """Every result restricted to the seeds on which no loss stayed at chance
    (pairs stay pairs), and the seeds dropped."""
    dropped = sorted({seed for result in results for seed in result.at_chance()})
    kept = [seed for seed in results[0].seeds if seed not in dropped]
    return [result.only(kept) for result in results], dropped
