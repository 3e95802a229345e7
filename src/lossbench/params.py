"""params.yaml, parsed and validated in one place into typed objects.

Every CLI command calls `load_params` before doing any work, so a typo or an
out-of-range value ends the run with one message naming the key, not a
traceback halfway through training.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lossbench.errors import ParamsError

# DVC addresses params with dots (`losses.ce.gamma`), so a loss name may not
# contain one; stage names (`train@NAME`) and file names come from it too.
LOSS_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


class Strict(BaseModel):
    # Unknown keys are errors: a mistyped `epohcs` must not be silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class SyntheticParams(Strict):
    train_size: int = Field(default=10000, ge=10)
    test_size: int = Field(default=2000, ge=10)
    # Std of the per-pixel Gaussian noise, in units of the 0..255 range / 255.
    noise: float = Field(default=0.2, ge=0.0, le=1.0)


class Cifar10Params(Strict):
    # A folder holding (or to receive) `cifar-10-batches-py/`.
    root: str = "data/raw"
    download: bool = True


class ImageFolderParams(Strict):
    # Either `root` (one folder per class, split into train/test by
    # test_fraction) or both `train_root` and `test_root` (each one folder per class).
    root: str | None = None
    train_root: str | None = None
    test_root: str | None = None
    image_size: int = Field(default=32, ge=10, le=512)
    test_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    # Unreadable images are listed and skipped; more than this fraction stops the stage.
    max_bad_fraction: float = Field(default=0.05, ge=0.0, lt=1.0)


class DataParams(Strict):
    dataset: Literal["synthetic", "cifar10", "imagefolder"] = "synthetic"
    # Seeds everything random about the data: synthetic images, the imagefolder
    # split, which images the imbalance keeps and which labels the noise flips.
    seed: int = 0
    # Long-tailed training set (CIFAR-10-LT profile): the largest class keeps all
    # its images, the smallest 1/imbalance_ratio of them. 1 = off. Test set untouched.
    imbalance_ratio: float = Field(default=1.0, ge=1.0)
    # Fraction of training labels replaced by a uniformly random other class. Test labels stay clean.
    label_noise: float = Field(default=0.0, ge=0.0, lt=1.0)
    synthetic: SyntheticParams = SyntheticParams()
    cifar10: Cifar10Params = Cifar10Params()
    imagefolder: ImageFolderParams = ImageFolderParams()

    @model_validator(mode="after")
    def _imagefolder_has_a_source(self) -> DataParams:
        folders = self.imagefolder
        if self.dataset == "imagefolder" and not (folders.root or (folders.train_root and folders.test_root)):
            raise ValueError(
                "data.imagefolder needs `root` (split by test_fraction) or both `train_root` and `test_root`"
            )
        return self


class TrainParams(Strict):
    epochs: int = Field(default=30, ge=1)
    batch_size: int = Field(default=128, ge=1)
    test_batch_size: int = Field(default=128, ge=1)
    lr: float = Field(default=0.1, gt=0.0)
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    # StepLR: multiply the learning rate by lr_decay_factor every lr_step_epochs.
    lr_step_epochs: int = Field(default=5, ge=1)
    lr_decay_factor: float = Field(default=0.5, gt=0.0, le=1.0)
    # Every training stage trains every seed; the report compares losses seed by seed.
    seeds: list[int] = Field(default=[1, 2, 3], min_length=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Intra-op threads for torch on CPU. CPU results depend on the thread count
    # (reduction order), so it is a fixed number by default: `dvc repro` and
    # `lossbench repro --jobs N` then give the same metrics on any machine.
    # 0 = torch's default (one per core; `lossbench repro` splits the cores).
    threads: int = Field(default=1, ge=0)

    @field_validator("seeds")
    @classmethod
    def _seeds_distinct(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError("seeds must be distinct")
        return seeds


class MaeLoss(Strict):
    kind: Literal["mae"]
    # probs: L1 between softmax probabilities and the one-hot target (the study's
    # form); logits: L1 on raw logits, which does not learn (kept as an option).
    input: Literal["probs", "logits"] = "probs"


class CeLoss(Strict):
    kind: Literal["ce"]


class FocalLoss(Strict):
    kind: Literal["focal"]
    gamma: float = Field(ge=0.0, le=100.0)
    # None: no weighting. A number scales every sample; a list gives one weight
    # per class (its length is checked against the dataset's classes).
    alpha: float | list[Annotated[float, Field(gt=0.0)]] | None = None

    @field_validator("alpha")
    @classmethod
    def _alpha_positive(cls, value: float | list[float] | None) -> float | list[float] | None:
        if isinstance(value, float | int) and value <= 0:
            raise ValueError("alpha must be > 0, a list of per-class weights > 0, or null")
        return value


LossParams = Annotated[MaeLoss | CeLoss | FocalLoss, Field(discriminator="kind")]


class Params(Strict):
    data: DataParams = DataParams()
    train: TrainParams = TrainParams()
    losses: dict[str, LossParams]

    @field_validator("losses")
    @classmethod
    def _loss_names_addressable(cls, losses: dict[str, LossParams]) -> dict[str, LossParams]:
        if not losses:
            raise ValueError("at least one loss is required")
        for name in losses:
            if "." in name:
                raise ValueError(
                    f"loss name {name!r} contains '.', which DVC cannot address as a "
                    f"parameter path (losses.{name}); use e.g. {name.replace('.', '_')!r}"
                )
            if not LOSS_NAME_PATTERN.match(name):
                raise ValueError(
                    f"loss name {name!r} is not allowed: use a letter, then letters, digits, '_' or '-'"
                )
        return losses


def loss_label(loss: LossParams) -> str:
    """Human label built from the live params, e.g. 'Focal (γ=0.5)'."""
    if isinstance(loss, MaeLoss):
        return "MAE (L1)" if loss.input == "probs" else "MAE (L1, logits)"
    if isinstance(loss, CeLoss):
        return "CE"
    label = f"Focal (γ={loss.gamma:g}"
    if isinstance(loss.alpha, float | int):
        label += f", α={loss.alpha:g}"
    elif loss.alpha is not None:
        label += ", α per class"
    return label + ")"


def _format_validation_error(error: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid parameters"]
    for item in error.errors():
        parts = [str(part) for part in item["loc"]]
        # Pydantic puts the loss kind after the loss name (losses.NAME.focal.gamma);
        # drop it so the path reads as in params.yaml.
        if parts[:1] == ["losses"] and len(parts) >= 3 and parts[2] in ("mae", "ce", "focal"):
            del parts[2]
        if item["type"] in ("union_tag_invalid", "union_tag_not_found"):
            parts.append("kind")
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key (check its spelling)"
        elif item["type"] == "missing":
            message = "required key is missing"
        elif item["type"] == "union_tag_invalid":
            message = "unknown loss kind; allowed: mae, ce, focal"
        elif item["type"] == "union_tag_not_found":
            message = "missing 'kind'; allowed: mae, ce, focal"
        lines.append(f"  {'.'.join(parts) or '(top level)'}: {message}")
    return "\n".join(lines)


def parse_params(raw: object, source: str = "params.yaml") -> Params:
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping with 'data', 'train' and 'losses'")
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        raise ParamsError(_format_validation_error(error, source)) from None


def load_params(path: Path = Path("params.yaml")) -> Params:
    if not path.is_file():
        raise ParamsError(f"{path}: file not found (run from the project root or pass --params)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML: {error}") from None
    return parse_params(raw, str(path))
