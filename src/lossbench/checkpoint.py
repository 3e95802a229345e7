"""Per-epoch training state of one seed, and the fingerprint that decides
whether a saved state may be resumed.

A checkpoint is loaded with torch's weights_only unpickler (no code runs),
and anything that does not restore cleanly — an unreadable file, another
structure, a CUDA generator state on a CPU-only machine — is ignored with one
line, and the seed starts over.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from rich.console import Console

from lossbench.losses import kind_source
from lossbench.optimizer import StepDecaySGD
from lossbench.params import Params
from lossbench.storage import CHECKPOINT_DIR, write_with


def checkpoint_path(root: Path, name: str, seed: int) -> Path:
    return root / CHECKPOINT_DIR / name / f"seed-{seed}.pt"


def inputs_digest(prepared_dir: Path, code: list[ModuleType]) -> bytes:
    """sha256 of the prepared data's bytes and of the training code's source."""
    digest = hashlib.sha256()
    for path in sorted(prepared_dir.iterdir()):
        with path.open("rb") as handle:
            digest.update(path.name.encode() + hashlib.file_digest(handle, "sha256").digest())
    for module in code:
        digest.update(Path(module.__file__ or "").read_bytes())
    return digest.digest()


def run_fingerprint(params: Params, name: str, seed: int, inputs: bytes) -> str:
    """What a checkpoint must match to be resumed: the training params, this
    loss's entry, the seed, the data and code (`inputs_digest`) and the code of
    this loss's kind (no other kind's, as in dvc.yaml)."""
    settings = {
        "train": params.train.model_dump(mode="json", exclude={"seeds"}),
        "loss": params.losses[name].model_dump(mode="json"),
        "seed": seed,
    }
    kind = hashlib.sha256(kind_source(params.losses[name])).digest()
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode() + inputs + kind).hexdigest()


@dataclass
class TrainingState:
    """What is saved after every epoch, and what one seed's training mutates."""

    network: torch.nn.Module
    optimizer: StepDecaySGD  # its rate schedule included
    generator: torch.Generator
    history: list[dict[str, Any]]

    def save(self, path: Path, fingerprint: str) -> None:
        state = {
            "fingerprint": fingerprint,
            "model": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "history": self.history,
        }
        write_with(path, partial(torch.save, state))

    def restore(self, saved: dict[str, Any]) -> None:
        """Load a saved state; raises (KeyError, TypeError, ValueError,
        RuntimeError) when it has another structure."""
        history = saved["history"]
        if not isinstance(history, list) or not all(isinstance(record, dict) for record in history):
            raise TypeError("history is not a list of records")
        self.network.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.generator.set_state(saved["generator"])
        self.history = history


def load_saved(path: Path, fingerprint: str, console: Console) -> dict[str, Any] | None:
    """The saved state at `path` if it exists, reads and matches `fingerprint`."""
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any unreadable file is just not resumable
        console.print(f"  ignoring checkpoint {path}: unreadable ({error.__class__.__name__})", markup=False)
        return None
    if not isinstance(saved, dict):
        console.print(
            f"  ignoring checkpoint {path}: not a lossbench checkpoint ({type(saved).__name__})", markup=False
        )
        return None
    if saved.get("fingerprint") != fingerprint:
        console.print(f"  ignoring checkpoint {path}: made with other params, data or code", markup=False)
        return None
    return saved
