"""Stage validate: the pipeline's first stage, which every other stage follows.

DVC deletes a stage's outputs before it runs the stage's command, so a bad
value found by a later stage would already have cost the user that stage's
files. Here all of params.yaml is checked (and what can be checked of the
data against it) before any other stage runs. The stamp it writes never
changes, so passing validation reruns nothing downstream by itself.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from lossbench import imagefolder, synthetic
from lossbench.errors import DatasetUnavailable
from lossbench.params import RAW_DIR, Params, check_alpha, check_fits_in_memory
from lossbench.storage import write_text

STAMP_FILE = Path("data/validated.txt")
STAMP = "params.yaml passed `lossbench validate`\n"
CIFAR10_CLASSES = 10


def number_of_classes(params: Params, root: Path) -> int:
    if params.data.dataset == "synthetic":
        return len(synthetic.CLASSES)
    if params.data.dataset == "cifar10":
        return CIFAR10_CLASSES
    config = params.data.imagefolder
    folder = config.root or config.train_root
    assert folder is not None  # params validation guarantees a source
    return len(imagefolder.class_names(root / RAW_DIR / "imagefolder" / folder))


def validate(params: Params, root: Path, console: Console) -> None:
    check_fits_in_memory(params)
    num_classes = number_of_classes(params, root)
    if num_classes < 2:
        raise DatasetUnavailable(
            f"data.imagefolder: {num_classes} class folder found; a classifier needs at least 2"
        )
    for name, loss in params.losses.items():
        check_alpha(name, loss, num_classes)
    write_text(root / STAMP_FILE, STAMP)
    console.print(
        f"[bold]validate[/]: params.yaml is valid: {params.data.dataset} data ({num_classes} classes), "
        f"{len(params.losses)} losses ({', '.join(params.losses)}), seeds {params.train.seeds}"
    )
