"""Stage validate: the pipeline's first stage, which every other stage follows.

DVC deletes a stage's outputs before it runs the stage's command, so a bad
value found by a later stage would already have cost the user that stage's
files. Here all of params.yaml is checked (and what can be checked of the
data against it) before any other stage runs. The stamp it writes never
changes, so passing validation reruns nothing downstream by itself; nor do the
digests of the losses' kind modules (data/loss_code), unless a kind's code changed,
nor the calibration settings (data/calibration_split.txt), unless they changed.

`check_before_training` is every check; `lossbench check` runs it too.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from rich.console import Console

from lossbench import imagefolder, synthetic
from lossbench.errors import DatasetUnavailable, OutputWriteError, ParamsError
from lossbench.losses import LossKind, kind_source
from lossbench.params import RAW_DIR, Params, check_classes, check_fits_in_memory
from lossbench.storage import output_set, write_text

STAMP_FILE = Path("data/validated.txt")
STAMP = "params.yaml passed `lossbench validate`\n"
# One file per loss naming its kind's module and that module's digest: train@NAME-SEED
# depends on data/loss_code/NAME.txt, because dvc.yaml cannot look up a loss's kind to
# name its module (DVC's templates do not nest). A kind's change reruns its losses only.
LOSS_CODE_DIR = Path("data/loss_code")
# The calibration settings, which calibrate depends on: a changed split seed
# reruns calibration, with no params key tracked that an older params.yaml lacks.
CALIBRATION_SETTINGS = Path("data/calibration_split.txt")
CIFAR10_CLASSES = 10
# cifar10.BATCH_FOLDER and ARCHIVE_NAME, named here so that `check` does not load torchvision.
CIFAR10_FILES = ("cifar-10-batches-py", "cifar-10-python.tar.gz")
# cifar10_jpeg.ARCHIVE_NAME: prepare checks its checksum; validate, that it is there.
CIFAR10_JPEG_ARCHIVE = "cifar10-jpeg.tar.gz"


def number_of_classes(params: Params, root: Path) -> int:
    if params.data.dataset == "synthetic":
        return len(synthetic.CLASSES)
    if params.data.dataset in ("cifar10", "cifar10_jpeg"):
        return CIFAR10_CLASSES
    return imagefolder.check_folders(params.data.imagefolder, root / RAW_DIR / "imagefolder")


def check_device(device: str) -> None:
    """train.device: cuda needs a CUDA device that torch can use (torch is imported only then)."""
    if device != "cuda":
        return
    import torch

    if not torch.cuda.is_available():
        raise ParamsError(
            "train.device: cuda, but torch finds no CUDA device on this machine; "
            "use auto (CUDA where there is one, else the CPU) or cpu"
        )


def check_raw_files(folder: Path) -> None:
    """Refuse what DVC cannot hash in data/raw/<dataset> (a dependency of validate
    and prepare): a FIFO blocks it forever, a link to /dev/zero reads forever, a
    socket or a broken link fails it. Links to folders are not followed (DVC skips them)."""
    if not folder.is_dir() or folder.is_symlink():
        return
    pending = [folder]
    while pending:
        current = pending.pop()
        for entry in imagefolder.list_folder(current):
            path = current / entry.name
            if entry.is_dir(follow_symlinks=False):
                pending.append(path)
            elif not entry.is_file(follow_symlinks=False) and not (
                entry.is_symlink() and os.path.isdir(path)
            ):
                kind = imagefolder.not_regular(path)
                if kind is not None:
                    raise DatasetUnavailable(
                        f"{imagefolder.shown_path(path)} is {kind}, not a regular file; DVC hashes "
                        f"every file in {imagefolder.shown_path(folder)} (a dependency of validate and "
                        "prepare) and hangs or fails on this one: remove it"
                    )


def missing_remote(root: Path) -> str | None:
    """A note when the project's default DVC remote is a local folder that does
    not exist: DVC reads a missing folder as an empty remote, so `dvc pull`
    fetches nothing and still says "Everything is up to date"."""
    if not (root / ".dvc").is_dir():
        return None
    from dvc.config import Config, ConfigError  # DVC resolves the url against its config file

    try:
        config = Config(dvc_dir=str(root / ".dvc"))
    except ConfigError:
        return None  # DVC itself names a broken config
    name = config["core"].get("remote")
    url = config["remote"].get(name, {}).get("url") if name else None
    if not url or "://" in url or Path(url).is_dir():
        return None
    shipped = Path(url).resolve() == (root / "dvc-remote").resolve()
    fix = (
        "`git checkout -- dvc-remote` brings back the shipped one"
        if shipped
        else f"create it, or point the remote elsewhere (`dvc remote modify {name} url ...`)"
    )
    return (
        f"note: the DVC remote {name!r} ({url}) does not exist: `dvc pull` fetches nothing from it "
        f'and still says "Everything is up to date"; {fix}'
    )


def check_data_present(params: Params, root: Path) -> None:
    """The dataset is where prepare will read it (imagefolder's folders are
    checked in number_of_classes; synthetic data is generated)."""
    raw = root / RAW_DIR / params.data.dataset
    if params.data.dataset == "cifar10_jpeg":
        archive = raw / CIFAR10_JPEG_ARCHIVE
        if not archive.is_file():
            raise DatasetUnavailable(
                f"{archive} is missing: it is part of the repository; `git checkout -- {archive}` restores it"
            )
    elif params.data.dataset == "cifar10" and not params.data.cifar10.download:
        folder, archive = (raw / name for name in CIFAR10_FILES)
        if not folder.is_dir() and not archive.is_file():
            raise DatasetUnavailable(
                f"CIFAR-10 not found: no {folder} and no {archive}, "
                "and data.cifar10.download is false: put one of them there, or set download: true"
            )


def check_before_training(params: Params, root: Path) -> int:
    """Every check validate makes, without writing its stamp: what can be known
    about params.yaml and the data before any stage runs. Returns the class count."""
    check_fits_in_memory(params)
    check_device(params.train.device)
    check_raw_files(root / RAW_DIR / params.data.dataset)
    check_data_present(params, root)
    num_classes = number_of_classes(params, root)
    if num_classes < 2:
        raise DatasetUnavailable(
            f"data.imagefolder: {num_classes} class folder found; a classifier needs at least 2"
        )
    for name, loss in params.losses.items():
        check_classes(name, loss, num_classes)
    return num_classes


def loss_code_stamp(name: str, loss: LossKind) -> str:
    """What data/loss_code/NAME.txt holds: the kind's module and its digest."""
    return (
        f"losses.{name}: kind {loss.kind}, lossbench/losses/{loss.kind}.py "
        f"sha256 {hashlib.sha256(kind_source(loss)).hexdigest()}\n"
    )


def write_loss_code(params: Params, folder: Path) -> None:
    """Every loss's stamp (only the changed ones are rewritten, so DVC sees the others unchanged),
    and no stamp of a loss params.yaml no longer has."""
    stamps = {folder / f"{name}.txt": loss_code_stamp(name, loss) for name, loss in params.losses.items()}
    with output_set() as files:
        for path, text in stamps.items():
            if not path.is_file() or path.read_bytes() != text.encode():
                files.write_text(path, text)
    for path in folder.glob("*.txt"):
        if path not in stamps:
            try:
                path.unlink()
            except OSError as error:
                raise OutputWriteError(f"could not remove {path}: {error.strerror or error}") from None


def write_calibration_settings(params: Params, path: Path) -> None:
    """Rewritten only when it changes (DVC refuses a tracked params key that is missing)."""
    text = f"split_seed: {params.calibration.split_seed}\n"
    if not path.is_file() or path.read_text() != text:
        write_text(path, text)


def validate(params: Params, root: Path, console: Console) -> None:
    num_classes = check_before_training(params, root)
    write_loss_code(params, root / LOSS_CODE_DIR)
    write_calibration_settings(params, root / CALIBRATION_SETTINGS)
    write_text(root / STAMP_FILE, STAMP)
    console.print(
        f"[bold]validate[/]: params.yaml is valid: {params.data.dataset} data ({num_classes} classes), "
        f"{len(params.losses)} loss{'' if len(params.losses) == 1 else 'es'} ({', '.join(params.losses)}), "
        f"seeds {params.seeds}"
    )
