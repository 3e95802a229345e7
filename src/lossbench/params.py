"""params.yaml, parsed and validated in one place into typed objects.

Every CLI command, and the pipeline's first stage (`validate`), calls
`load_params` before doing any work, so a typo or an out-of-range value ends
the run with one message naming the key, not a traceback halfway through
training, and before DVC removes any stage's outputs.

The file is read the way DVC reads it (ruamel.yaml, YAML 1.2, duplicate keys
refused), so lossbench and dvc.lock never disagree on a value: under YAML 1.1
`epochs: 010` would be 8 here and 10 for DVC.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Annotated, Literal, Union

from pydantic import Field, ValidationError, field_validator, model_validator
from ruamel.yaml import YAML
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import YAMLError

from lossbench.crop import padded
from lossbench.errors import ParamsError, file_kind, read_utf8, shown, shown_repr
from lossbench.losses import LossKind, kinds
from lossbench.strict import FLOAT32_MAX, Strict

# A loss name becomes a DVC stage name (train@NAME), a parameter path
# (losses.NAME), and file names (data/runs/NAME, metrics/NAME.json). So it is a
# letter then letters, digits, '_' or '-', short enough for any file system.
# \A and \Z, not ^ and $: `$` also matches before a trailing newline.
MAX_LOSS_NAME = 64
LOSS_NAME_PATTERN = re.compile(rf"\A[A-Za-z][A-Za-z0-9_-]{{0,{MAX_LOSS_NAME - 1}}}\Z")
# Names of files the report writes beside the per-loss files.
RESERVED_LOSS_NAMES = frozenset({"summary"})
# Seeds go to torch.manual_seed and numpy, which take non-negative 64-bit integers.
MAX_SEED = 2**63 - 1
# Each seed is a training stage per loss: 1,000 seeds of 4 losses are 4,000 stages.
MAX_SEEDS = 1_000
MAX_THREADS = 1024

# Where each dataset's raw files live, relative to the project root. The
# prepare stage depends on data/raw/<dataset>, so DVC sees any change there.
RAW_DIR = PurePosixPath("data/raw")


class SyntheticParams(Strict):
    # Sized so the default study (4 losses x 4 seeds x 30 epochs) runs in under
    # 5 minutes on 2 cores; CIFAR-10 itself is 50,000 / 10,000.
    train_size: int = Field(default=12000, ge=10)
    test_size: int = Field(default=3000, ge=10)
    # Std of the per-pixel Gaussian noise, in units of the 0..255 range / 255.
    noise: float = Field(default=0.2, ge=0.0, le=1.0)


class Cifar10JpegParams(Strict):
    # A fixed, class-balanced subset of the JPEG copy shipped in data/raw/cifar10_jpeg:
    # the first N images of each class in file-name order. The default is the size of
    # the synthetic set (12,000 / 3,000); 5,000 and 1,000 are the whole set.
    train_per_class: int = Field(default=1200, ge=1, le=5000)
    test_per_class: int = Field(default=300, ge=1, le=1000)


class Cifar10Params(Strict):
    # The archive or the extracted cifar-10-batches-py/ lives in data/raw/cifar10.
    download: bool = True


def _inside_raw_folder(value: str | None) -> str | None:
    """A folder relative to data/raw/imagefolder that stays inside it."""
    if value is None:
        return None
    path = PurePosixPath(value)
    if not value.strip() or path.is_absolute() or ".." in path.parts or "\\" in value:
        raise ValueError(
            f"{value!r} must be a folder inside {RAW_DIR / 'imagefolder'}, given relative to it "
            "(no absolute path, no '..'): DVC tracks that folder, so a change to the images reruns prepare"
        )
    return value


class ImageFolderParams(Strict):
    # Either `root` (one folder per class, split into train/test by
    # test_fraction) or both `train_root` and `test_root` (each one folder per
    # class). All are relative to data/raw/imagefolder.
    root: str | None = None
    train_root: str | None = None
    test_root: str | None = None
    image_size: int = Field(default=32, ge=10, le=512)
    test_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    # Unreadable images are listed and skipped; more than this fraction stops the stage.
    max_bad_fraction: float = Field(default=0.05, ge=0.0, lt=1.0)

    @field_validator("root", "train_root", "test_root")
    @classmethod
    def _relative(cls, value: str | None) -> str | None:
        return _inside_raw_folder(value)


class DataParams(Strict):
    dataset: Literal["cifar10_jpeg", "synthetic", "cifar10", "imagefolder"] = "cifar10_jpeg"
    # Seeds everything random about the data: synthetic images, the imagefolder
    # split, which images the imbalance keeps and which labels the noise flips.
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    # Long-tailed training set (CIFAR-10-LT profile): the largest class keeps all
    # its images, the smallest 1/imbalance_ratio of them. 1 = off. Test set untouched.
    imbalance_ratio: float = Field(default=1.0, ge=1.0)
    # Fraction of training labels replaced by a uniformly random other class. Test labels stay clean.
    label_noise: float = Field(default=0.0, ge=0.0, lt=1.0)
    cifar10_jpeg: Cifar10JpegParams = Cifar10JpegParams()
    synthetic: SyntheticParams = SyntheticParams()
    cifar10: Cifar10Params = Cifar10Params()
    imagefolder: ImageFolderParams = ImageFolderParams()

    @model_validator(mode="after")
    def _imagefolder_has_one_source(self) -> DataParams:
        folders = self.imagefolder
        if self.dataset != "imagefolder":
            return self
        split = folders.train_root or folders.test_root
        if folders.root and split:
            raise ValueError(
                "data.imagefolder: give either `root` (split by test_fraction) or `train_root` and "
                "`test_root`, not both"
            )
        if not (folders.root or (folders.train_root and folders.test_root)):
            raise ValueError(
                "data.imagefolder needs `root` (split by test_fraction) or both `train_root` and `test_root`"
            )
        return self


class TrainParams(Strict):
    epochs: int = Field(default=30, ge=1, le=100_000)
    batch_size: int = Field(default=128, ge=1)
    test_batch_size: int = Field(default=128, ge=1)
    lr: float = Field(default=0.1, gt=0.0, le=FLOAT32_MAX)
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(default=0.0, ge=0.0, le=FLOAT32_MAX)
    # StepLR: multiply the learning rate by lr_decay_factor every lr_step_epochs.
    lr_step_epochs: int = Field(default=5, ge=1)
    lr_decay_factor: float = Field(default=0.5, gt=0.0, le=1.0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Intra-op threads per seed for torch on CPU. CPU results depend on the
    # thread count (reduction order), so it is a fixed number by default and
    # the metrics are the same on any machine; the cores are filled by training
    # seeds side by side (machine.workers). 0 = torch's default (every core;
    # results then depend on the machine).
    threads: int = Field(default=1, ge=0, le=MAX_THREADS)

    @model_validator(mode="before")
    @classmethod
    def _seeds_moved(cls, values: object) -> object:
        if isinstance(values, dict) and "seeds" in values:
            raise ValueError(
                "the seed list is now top-level `seeds:`, not train.seeds (each seed is its own stage)"
            )
        return values


# Each loss kind's settings are defined beside its formula, in lossbench/losses/KIND.py
# (adding a kind there changes no file another kind's training depends on); they
# are parsed here, with the rest of params.yaml, as one union told apart by `kind`.
LOSS_KINDS = kinds()
if TYPE_CHECKING:
    LossParams = LossKind
else:
    LossParams = Annotated[Union[tuple(LOSS_KINDS.values())], Field(discriminator="kind")]  # noqa: UP007


def check_classes(name: str, loss: LossKind, num_classes: int) -> None:
    """A loss's per-class settings (focal's alpha list) must fit the dataset's classes."""
    loss.check_classes(name, num_classes)


def check_loss_name(name: str) -> None:
    """Raise ValueError unless `name` can be a stage, parameter path and file name."""
    if "." in name:
        raise ValueError(
            f"loss name {shown_repr(name)} contains '.', which DVC cannot address as a "
            f"parameter path (losses.{shown(name)}); use e.g. {shown_repr(name.replace('.', '_'))}"
        )
    if not LOSS_NAME_PATTERN.match(name):
        raise ValueError(
            f"loss name {shown_repr(name)} is not allowed: use a letter, then letters, digits, '_' or '-', "
            f"at most {MAX_LOSS_NAME} characters"
        )
    if name.lower() in RESERVED_LOSS_NAMES:
        raise ValueError(f"loss name {name!r} is taken by a file the report writes; choose another")


class MachineParams(Strict):
    # Seeds a training stage trains at once, one process each (0 = as many as
    # the cores hold at train.threads each; 1 for a tiny seed, lookahead.py).
    # Results never depend on it, so no
    # stage tracks it: changing it reruns nothing and keeps the run-cache.
    workers: int = Field(default=0, ge=0, le=MAX_THREADS)


class AnalysisParams(Strict):
    # Equivalence margins: two settings whose paired difference's 90% interval
    # lies inside ±margin are called equivalent (TOST at 5%). Accuracy-like
    # measures (accuracy, recall, macro-F1, an accuracy drop) are fractions:
    # 0.01 is one percentage point. Only the reports read these, and no stage
    # tracks them: DVC refuses a tracked key missing from params.yaml.
    accuracy_margin: float = Field(default=0.01, gt=0, le=1)
    ece_margin: float = Field(default=0.01, gt=0, le=1)  # expected calibration error, a fraction too
    epoch_margin: float = Field(default=2.0, gt=0, le=1000)


class CalibrationParams(Strict):
    # Temperature scaling without a peek at the scored images (the calibrate
    # stage): T is fitted on one class-stratified half of the test set and
    # scored on the other, then the halves swap. This seed draws the halves
    # and seeds the simulated floor of the calibration error.
    split_seed: int = Field(default=0, ge=0, le=MAX_SEED)


class Params(Strict):
    data: DataParams = DataParams()
    train: TrainParams = TrainParams()
    # Every loss trains every seed, each seed its own stage (dvc.yaml reads the
    # list, so params.yaml must give it); the report compares losses seed by
    # seed. Why four by default: the comment beside `seeds` in params.yaml.
    seeds: list[Annotated[int, Field(ge=0, le=MAX_SEED)]] = Field(min_length=1, max_length=MAX_SEEDS)
    machine: MachineParams = MachineParams()
    analysis: AnalysisParams = AnalysisParams()
    calibration: CalibrationParams = CalibrationParams()
    losses: dict[str, LossParams]

    @field_validator("seeds")
    @classmethod
    def _seeds_distinct(cls, seeds: list[int]) -> list[int]:
        repeated = sorted({seed for seed in seeds if seeds.count(seed) > 1})
        if repeated:
            which = ", ".join(map(str, repeated))
            raise ValueError(
                f"seeds must be distinct; {which} {'is' if len(repeated) == 1 else 'are'} given more than once"
            )
        return seeds

    @field_validator("losses", mode="before")
    @classmethod
    def _loss_names_addressable(cls, losses: object) -> object:
        # Before the entries are parsed, so a bad name is reported as such, once.
        if not isinstance(losses, dict):
            return losses
        if not losses:
            raise ValueError("at least one loss is required")
        seen: dict[str, str] = {}
        for name in losses:
            check_loss_name(str(name))
            other = seen.setdefault(str(name).lower(), str(name))
            if other != name:
                raise ValueError(
                    f"loss names {other!r} and {name!r} differ only in case; their files would "
                    "overwrite each other on macOS and Windows"
                )
        return losses


def require_loss(params: Params, name: str) -> LossParams:
    if name not in params.losses:
        quoted = name if name.isprintable() else repr(name)
        raise ParamsError(
            f"losses.{shown(quoted)}: no such loss in params.yaml; defined: {', '.join(params.losses)}"
        )
    return params.losses[name]


def loss_label(loss: LossKind) -> str:
    """Human label of a loss's settings, e.g. 'Focal (γ=0.5)' (the report passes what a run was trained with)."""
    return loss.label()


BOUNDS = {
    "less_than_equal": ("le", "less than or equal to"),
    "greater_than_equal": ("ge", "greater than or equal to"),
    "less_than": ("lt", "less than"),
    "greater_than": ("gt", "greater than"),
}


# Pydantic's error types for a value of the wrong type in strict mode.
STRICT_TYPES = frozenset({"int_type", "float_type", "bool_type"})


def _strict_input(value: bool | str, kind: str) -> str:
    """What a strict field was given instead: a boolean, a quoted number or
    `true` (what the field takes, in quotes), or other text ('two')."""
    if isinstance(value, bool):
        return "a boolean"
    if kind == "bool_type":
        looks_right = value.strip().lower() in ("true", "false")
    else:
        try:
            float(value)
            looks_right = True
        except ValueError:
            looks_right = False
    return "a quoted string" if looks_right else f"text ({shown_repr(value, 40)})"


def _format_validation_error(error: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid parameters"]
    for item in error.errors():
        parts = [str(part) for part in item["loc"]]
        # Pydantic puts the loss kind after the loss name (losses.NAME.focal.gamma);
        # drop it so the path reads as in params.yaml.
        if parts[:1] == ["losses"] and len(parts) >= 3 and parts[2] in LOSS_KINDS:
            del parts[2]
        if item["type"] in ("union_tag_invalid", "union_tag_not_found"):
            parts.append("kind")
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key (check its spelling)"
        elif item["type"] == "missing":
            message = "required key is missing"
        elif item["type"] == "union_tag_invalid":
            message = f"unknown loss kind; allowed: {', '.join(LOSS_KINDS)}"
        elif item["type"] == "union_tag_not_found":
            message = f"missing 'kind'; allowed: {', '.join(LOSS_KINDS)}"
        elif item["type"] in STRICT_TYPES and isinstance(item["input"], bool | str):
            # Strict types: say why `true` or "2" is not taken (the value itself may be long).
            message += f", not {_strict_input(item['input'], item['type'])}"
        elif item["type"] in BOUNDS and isinstance(
            limit := item.get("ctx", {}).get(BOUNDS[item["type"]][0]), float
        ):
            message = f"Input should be {BOUNDS[item['type']][1]} {limit:.8g}"  # not 39 digits of FLOAT32_MAX
        # repr() keeps a newline or other control character in a key visible; shown() keeps it short.
        path = shown(".".join(part if part.isprintable() else repr(part) for part in parts), 120)
        lines.append(f"  {path or '(top level)'}: {message}")
    return "\n".join(lines)


def parse_params(raw: object, source: str = "params.yaml") -> Params:
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping with 'data', 'train' and 'losses'")
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        raise ParamsError(_format_validation_error(error, source)) from None


# More values than any params file needs. YAML anchors and aliases can make a
# short file stand for millions of values (a "billion laughs" file); DVC
# expands them before any stage runs, so only `lossbench check` can warn.
MAX_VALUES = 100_000
# Larger than any params file needs (the default is 3 KB), and small enough to
# refuse before parsing: ruamel.yaml reads about 10,000 values a second here,
# so a file of a million seeds would take minutes and a gigabyte to refuse.
MAX_YAML_BYTES = 128 * 1024


def _count_values(document: object, limit: int) -> int:
    """Values in the document as expanded (an aliased list counts at every use),
    counting stops past `limit` (a recursive alias never ends)."""
    count, pending = 0, [document]
    while pending and count <= limit:
        node = pending.pop()
        count += 1
        if isinstance(node, dict):
            pending += [*node.keys(), *node.values()]
        elif isinstance(node, list):
            pending += node
    return count


def _regular_file_size(path: Path) -> int:
    """The size of `path`, refused unless it is a regular file (a FIFO would
    block its reader, /dev/zero never ends). Nothing is opened."""
    try:
        status = os.stat(path)  # follows a link: a link to a regular file is one
    except FileNotFoundError:
        raise ParamsError(f"{shown(path)}: file not found") from None
    except OSError as error:
        raise ParamsError(f"{shown(path)}: cannot read it ({error.strerror or error})") from None
    if not stat.S_ISREG(status.st_mode):
        raise ParamsError(f"{shown(path)}: {file_kind(status.st_mode)}, not a regular file; give a YAML file")
    return status.st_size


def read_yaml(path: Path) -> object:
    """A YAML file as DVC reads it: YAML 1.2, duplicate keys refused."""
    size = _regular_file_size(path)
    if size > MAX_YAML_BYTES:
        raise ParamsError(
            f"{shown(path)}: {size:,} bytes; a params file is at most {MAX_YAML_BYTES // 1024} KiB "
            f"(the default is 3 KB). Too many seeds or losses? `seeds` takes at most {MAX_SEEDS:,} "
            "(each is a training stage per loss)"
        )
    text = read_utf8(path, str(path), ParamsError)
    try:
        document = YAML(typ="safe").load(text)
    except DuplicateKeyError as error:
        # ruamel's message quotes both values; a params value is not echoed.
        key = str(error.problem).split('"')[1] if str(error.problem).count('"') >= 2 else "?"
        mark = error.problem_mark
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ParamsError(f"{path}: not valid YAML: found duplicate key {shown_repr(key)}{at}") from None
    except RecursionError:
        raise ParamsError(f"{path}: not valid params: nested too deeply for a params file") from None
    except YAMLError as error:
        # ruamel's message spans lines; its first line and the mark say enough.
        where = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        at = f" (line {where.line + 1}, column {where.column + 1})" if where is not None else ""
        raise ParamsError(f"{path}: not valid YAML: {shown(problem, 200)}{at}") from None
    # Within MAX_YAML_BYTES, only aliases can make this many values (a value takes 2 bytes or more).
    if _count_values(document, MAX_VALUES) > MAX_VALUES:
        raise ParamsError(
            f"{path}: expands to more than {MAX_VALUES:,} values (YAML anchors and aliases repeat what they "
            "point to); a params file needs far fewer. Write the values out. Note: `dvc repro` expands "
            "every alias before any stage runs, which can take minutes and gigabytes"
        )
    return document


# Bytes per image while preparing (uint8 arrays) and per training process (the
# padded float pixel table of a training image, or a normalised test image,
# plus its uint8 copy). Measured sizes of the tensors in prepare and train.
PREPARED_BYTES_PER_IMAGE = 3 * 32 * 32
TRAIN_BYTES_PER_IMAGE = 3 * padded(32) * padded(32) * 4 + PREPARED_BYTES_PER_IMAGE
TEST_BYTES_PER_IMAGE = 3 * 32 * 32 * 4 + PREPARED_BYTES_PER_IMAGE


def physical_memory() -> int:
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def check_fits_in_memory(params: Params, available: int | None = None) -> None:
    """Refuse synthetic sizes whose tensors cannot fit in this machine's memory.

    The other datasets have a fixed or on-disk size; the synthetic sizes are
    just numbers, and a typo of a few zeros would otherwise end in an
    out-of-memory kill after minutes of work.
    """
    if params.data.dataset != "synthetic":
        return
    sizes = params.data.synthetic
    needed = max(
        (sizes.train_size + sizes.test_size) * PREPARED_BYTES_PER_IMAGE,
        sizes.train_size * TRAIN_BYTES_PER_IMAGE + sizes.test_size * TEST_BYTES_PER_IMAGE,
    )
    available = physical_memory() if available is None else available
    if needed > available:
        raise ParamsError(
            f"data.synthetic.train_size / test_size: {sizes.train_size} + {sizes.test_size} images "
            f"would need about {_gib(needed)} of memory to train on; this machine has {_gib(available)}"
        )


def _gib(size: int) -> str:
    return f"{size / 2**30:,.1f} GiB"


def load_params(path: Path = Path("params.yaml")) -> Params:
    if not (path.exists() or path.is_symlink()):
        raise ParamsError(f"{path}: file not found (run from the project root or pass --params)")
    return parse_params(read_yaml(path), str(path))
