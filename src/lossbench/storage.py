"""Where the pipeline keeps its files, and how it writes them.

Every file is written to a temporary name beside its target and renamed into
place, so an interrupted stage leaves the previous complete file or none.
"""

from __future__ import annotations

import csv
import json
import math
import os
import secrets
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from lossbench.errors import DamagedInput, MissingInput, OutputWriteError

# Paths relative to the project root; dvc.yaml names the same ones.
PREPARED_DIR = Path("data/prepared")
CLASS_COUNTS_FILE = Path("data/class_counts.json")
RUNS_DIR = Path("data/runs")  # train@NAME-SEED's outputs, all DVC-cached: see SeedRunFiles
CHECKPOINT_DIR = Path("data/checkpoints")  # per-epoch training state; not a DVC output
# The epochs so far of every seed in training, for `dvc plots show data/live`
# mid-run; a seed's file goes when its stage has written the seed. Not a DVC output.
LIVE_DIR = Path("data/live")
# Each seed's training time after every epoch (data/timings/NAME/seedN.csv),
# kept out of the DVC outputs so that they are the same on every rerun. Not a DVC output.
TIMINGS_DIR = Path("data/timings")
# publish@NAME copies each loss's run files here, for git and `dvc metrics/plots`.
METRICS_DIR = Path("metrics")  # the headline numbers per loss: DVC metrics
DETAILS_DIR = METRICS_DIR / "details"  # everything else, committed but not declared as metrics
HISTORY_DIR = Path("plots/history")
CONFUSION_DIR = Path("plots/confusion")  # actual vs predicted test class, first seed
CALIBRATION_DIR = Path("plots/calibration")  # reliability bins per seed
PLOTS_DIR = Path("plots")


@dataclass(frozen=True)
class SeedRunFiles:
    """What train@NAME-SEED writes, in one DVC-cached folder data/runs/NAME/seedSEED.

    One seed of one loss is the unit DVC caches: adding a seed trains only
    that seed, and DVC's run-cache (`dvc push --run-cache`, which carries only
    cached files) hands each finished seed to another machine.
    """

    folder: Path

    @classmethod
    def of(cls, root: Path, name: str, seed: int) -> SeedRunFiles:
        return cls(root / RUNS_DIR / name / f"seed{seed}")

    @property
    def model(self) -> Path:  # the finished network's state dict
        return self.folder / "model.pt"

    @property
    def metrics(self) -> Path:  # this seed's numbers, settings and classes
        return self.folder / "metrics.json"

    @property
    def history(self) -> Path:  # one row per epoch
        return self.folder / "history.csv"

    @property
    def calibration(self) -> Path:  # reliability bins
        return self.folder / "calibration.csv"

    @property
    def predictions(self) -> Path:  # actual and predicted class of every test image
        return self.folder / "predictions.csv"

    @property
    def fingerprint(self) -> Path:  # the params, data, code and numerics it was trained from
        return self.folder / "fingerprint.txt"


@dataclass(frozen=True)
class PublishedFiles:
    """What publish@NAME writes from a loss's seed runs, for git, `dvc
    metrics/plots` and every report (report, sweep-report, variants-report)."""

    headline: Path  # metrics/NAME.json: the few numbers `dvc metrics show` lists
    details: Path  # metrics/details/NAME.json: every seed's numbers, summaries, settings
    history: Path  # one row per seed and epoch
    calibration: Path  # one row per seed and confidence bin
    confusion: Path  # actual and predicted class, first seed

    @classmethod
    def of(cls, root: Path, name: str) -> PublishedFiles:
        return cls(
            root / METRICS_DIR / f"{name}.json",
            root / DETAILS_DIR / f"{name}.json",
            root / HISTORY_DIR / f"{name}.csv",
            root / CALIBRATION_DIR / f"{name}.csv",
            root / CONFUSION_DIR / f"{name}.csv",
        )

    def all(self) -> list[Path]:
        return [self.headline, self.details, self.history, self.calibration, self.confusion]


def _create_private_name(folder: Path, name: str) -> Path:
    """Create an empty file `.NAME.<random>.tmp` in folder, with the mode any
    new file gets (0666 less the user's umask), not mkstemp's 0600."""
    while True:
        candidate = folder / f".{name}.{secrets.token_hex(6)}.tmp"
        try:
            os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return candidate
        except FileExistsError:
            continue


def _temporary_beside(target: Path) -> Path:
    """A new empty temporary file in target's folder, after removing any left
    there by a killed write (one writer per target, so none is in use)."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        for leftover in target.parent.glob(f".{target.name}.*.tmp"):
            leftover.unlink()
        return _create_private_name(target.parent, target.name)
    except OSError as error:
        raise OutputWriteError(f"could not write {target}: {error.strerror or error}") from None


def _write_failed(target: Path, error: OSError | RuntimeError) -> OutputWriteError:
    # RuntimeError: torch.save reports a full disk as a C++ stream error.
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error).splitlines()[0]
    return OutputWriteError(f"could not write {target}: {reason}; the previous version, if any, is unchanged")


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path in target's folder; rename it onto target on success.

    A failed write leaves the previous target untouched and no temporary file;
    a killed one may leave a temporary, which the next write to the same
    target removes.
    """
    temporary = _temporary_beside(target)
    try:
        yield temporary
        os.replace(temporary, target)
    except (OSError, RuntimeError) as error:
        raise _write_failed(target, error) from None
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def write_text(target: Path, text: str) -> None:
    with atomic_path(target) as temporary:
        temporary.write_text(text, encoding="utf-8")


def _json_text(payload: Any) -> str:
    return json.dumps(payload, indent=2, ensure_ascii=False) + "\n"


def write_json(target: Path, payload: Any) -> None:
    write_text(target, _json_text(payload))


def _write_csv_file(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None) -> None:
    """`rows` under a header of `columns` (default: the first row's keys).
    None and NaN are an empty cell, as pandas writes and reads a missing number."""
    if columns is None:
        if not rows:
            raise ValueError(f"{path}: no rows, so the columns must be given")
        columns = list(rows[0])
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows({key: _cell(value) for key, value in row.items()} for row in rows)


def _cell(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def write_csv(target: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> None:
    write_with(target, partial(_write_csv_file, rows=rows, columns=columns))


def write_with(target: Path, writer: Callable[[Path], object]) -> None:
    """Let a library write (torch.save, savefig, to_csv) to a temporary path first."""
    with atomic_path(target) as temporary:
        writer(temporary)


class OutputSet:
    """Files a stage writes as one set (see `output_set`)."""

    def __init__(self) -> None:
        self._written: list[tuple[Path, Path]] = []  # (temporary, target)

    def write_with(self, target: Path, writer: Callable[[Path], object]) -> None:
        temporary = _temporary_beside(target)
        self._written.append((temporary, target))
        try:
            writer(temporary)
        except (OSError, RuntimeError) as error:
            raise _write_failed(target, error) from None

    def write_text(self, target: Path, text: str) -> None:
        self.write_with(target, lambda path: path.write_text(text, encoding="utf-8"))

    def write_json(self, target: Path, payload: Any) -> None:
        self.write_text(target, _json_text(payload))

    def write_csv(
        self, target: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None
    ) -> None:
        self.write_with(target, partial(_write_csv_file, rows=rows, columns=columns))

    def _discard(self) -> None:
        for temporary, _ in self._written:
            if os.path.exists(temporary):
                os.unlink(temporary)

    def _move_into_place(self) -> None:
        # Every target is checked before the first rename: a folder in a file's
        # place would otherwise fail its rename after others had replaced theirs.
        for _, target in self._written:
            if target.is_dir() and not target.is_symlink():
                raise OutputWriteError(
                    f"could not write {target}: a folder is in its place (remove or rename it); "
                    "no file of the set was replaced"
                )
        for temporary, target in self._written:
            try:
                os.replace(temporary, target)
            except OSError as error:
                raise _write_failed(target, error) from None


@contextmanager
def output_set() -> Iterator[OutputSet]:
    """Write several files as a set: each goes to a temporary file beside its
    target, and only when every one is complete are they renamed into place,
    one rename each (no copying). A failure or an interruption while writing
    (full disk, a drawing error, Ctrl-C) leaves every previous file as it was.

        with output_set() as files:
            files.write_json(SUMMARY, summary)
            files.write_with(FIGURE, lambda path: figure.savefig(path, format="png"))
    """
    files = OutputSet()
    try:
        yield files
    except BaseException:
        files._discard()
        raise
    try:
        files._move_into_place()
    finally:
        files._discard()


@dataclass(frozen=True)
class PreparedData:
    """What every dataset reader returns and the prepare stage saves: uint8
    images (N, 3, H, W), int64 labels, class names (and, not saved, the input
    files that could not be read). With data.label_noise, train_labels are the
    flipped ones that training sees and train_true_labels the labels before."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: tuple[str, ...]
    skipped: tuple[str, ...] = ()
    train_true_labels: np.ndarray | None = None  # saved only when labels were flipped

    def class_counts(self) -> dict[str, dict[str, int]]:
        def counts(labels: np.ndarray) -> dict[str, int]:
            per_class = np.bincount(labels, minlength=len(self.classes))
            return {name: int(count) for name, count in zip(self.classes, per_class, strict=True)}

        return {"train": counts(self.train_labels), "test": counts(self.test_labels)}


_ARRAYS = ("train_images", "train_labels", "test_images", "test_labels")
TRUE_LABELS = "train_true_labels"


def save_prepared(data: PreparedData, folder: Path) -> None:
    """Write the prepared folder as a whole: build it beside the target, then
    swap it in, so training never sees new train arrays beside old test ones."""
    building = folder.parent / f".{folder.name}.building"
    replaced = folder.parent / f".{folder.name}.replaced"
    try:
        for leftover in (building, replaced):  # from a run that was killed
            if leftover.exists():
                shutil.rmtree(leftover)
        building.mkdir(parents=True)
        for name in (*_ARRAYS, TRUE_LABELS):
            if getattr(data, name) is not None:
                with (building / f"{name}.npy").open("wb") as handle:
                    np.save(handle, getattr(data, name))
        (building / "classes.json").write_text(json.dumps(list(data.classes)) + "\n", encoding="utf-8")
        if folder.exists():
            folder.rename(replaced)
        building.rename(folder)
        if replaced.exists():
            shutil.rmtree(replaced)
    except OSError as error:
        if replaced.exists() and not folder.exists():
            replaced.rename(folder)  # put the previous data back
        shutil.rmtree(building, ignore_errors=True)
        raise OutputWriteError(
            f"could not write {folder}: {error.strerror or error}; the previous version, if any, is unchanged"
        ) from None


def load_prepared(folder: Path) -> PreparedData:
    """The prepare stage's arrays, checked: a damaged or foreign file is named
    here, not found out as a crash in the middle of training."""
    missing = [f"{name}.npy" for name in _ARRAYS if not (folder / f"{name}.npy").is_file()]
    if missing or not (folder / "classes.json").is_file():
        raise MissingInput(
            f"{folder}: prepared data incomplete (missing {', '.join(missing) or 'classes.json'}); "
            "run `dvc repro prepare`"
        )
    arrays = {name: _load_array(folder / f"{name}.npy") for name in _ARRAYS}
    classes_file = folder / "classes.json"
    try:
        classes = json.loads(classes_file.read_text(encoding="utf-8"))
    except (ValueError, OSError) as error:
        raise _damaged(classes_file, f"not readable JSON ({error.__class__.__name__})") from None
    if not (isinstance(classes, list) and len(classes) >= 2 and all(isinstance(c, str) for c in classes)):
        raise _damaged(classes_file, "expected a list of at least 2 class names")
    for side in ("train", "test"):
        images, labels = arrays[f"{side}_images"], arrays[f"{side}_labels"]
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise _damaged(
                folder / f"{side}_images.npy",
                f"expected uint8 images (N, 3, H, W), found {images.dtype} {images.shape}",
            )
        if labels.dtype != np.int64 or labels.shape != (len(images),):
            raise _damaged(
                folder / f"{side}_labels.npy",
                f"expected {len(images)} int64 labels, found {labels.dtype} {labels.shape}",
            )
        if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
            raise _damaged(
                folder / f"{side}_labels.npy",
                f"labels must be 0..{len(classes) - 1} "
                f"(one per class in classes.json), found {labels.min()}..{labels.max()}",
            )
    true_labels = None
    if (folder / f"{TRUE_LABELS}.npy").is_file():
        true_labels = _load_array(folder / f"{TRUE_LABELS}.npy")
        train_labels = arrays["train_labels"]
        if true_labels.dtype != np.int64 or true_labels.shape != train_labels.shape:
            raise _damaged(
                folder / f"{TRUE_LABELS}.npy",
                f"expected {len(train_labels)} int64 labels, found {true_labels.dtype} {true_labels.shape}",
            )
        if len(true_labels) and (true_labels.min() < 0 or true_labels.max() >= len(classes)):
            raise _damaged(folder / f"{TRUE_LABELS}.npy", f"labels must be 0..{len(classes) - 1}")
    return PreparedData(
        arrays["train_images"],
        arrays["train_labels"],
        arrays["test_images"],
        arrays["test_labels"],
        tuple(classes),
        train_true_labels=true_labels,
    )


def _load_array(path: Path) -> np.ndarray:
    try:
        array: np.ndarray = np.load(path, allow_pickle=False)  # never unpickle: no code runs
        return array
    except (ValueError, OSError, EOFError) as error:
        # ValueError also covers an object array, which only pickle could load.
        raise _damaged(path, f"not a numeric .npy array ({str(error).splitlines()[0]})") from None


def _damaged(path: Path, what: str) -> DamagedInput:
    return DamagedInput(f"{path}: {what}; run `dvc repro prepare` to write it again")
