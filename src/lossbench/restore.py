"""Put a seed's previous run back when its training stage fails.

DVC deletes a stage's outputs before it runs the stage. `validate` refuses
every bad value that can be known in advance, but some failures cannot be
(the loss becomes nan, the disk fills, the run is stopped). The previous run is
still in DVC's cache, where dvc.lock records it, so it is copied back from
there with DVC's own cache and tree readers, and the workspace again matches
dvc.lock.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from lossbench.errors import DamagedInput
from lossbench.storage import SeedRunFiles


def locked_stages(root: Path) -> dict[str, Any]:
    """The stages dvc.lock records (none without a dvc.lock), by name."""
    lock_file = root / "dvc.lock"
    if not lock_file.is_file():
        return {}
    try:
        lock = YAML(typ="safe").load(lock_file.read_text(encoding="utf-8"))
    except (YAMLError, UnicodeDecodeError, RecursionError) as error:
        raise DamagedInput(
            f"{lock_file}: not readable YAML ({error.__class__.__name__}); `git checkout dvc.lock`"
        ) from None
    stages = lock.get("stages") if isinstance(lock, dict) else None
    return stages if isinstance(stages, dict) else {}


def recorded_hash(stages: dict[str, Any], name: str, seed: int) -> str | None:
    """The .dir hash dvc.lock's `stages` record for data/runs/NAME/seedN, if any."""
    stage = stages.get(f"train@{name}-{seed}", {})
    if not isinstance(stage, dict):
        return None
    folder = SeedRunFiles.of(Path(), name, seed).folder.as_posix()
    for out in stage.get("outs") or []:
        if isinstance(out, dict) and out.get("path") == folder and str(out.get("md5", "")).endswith(".dir"):
            return str(out["md5"])
    return None


def _copy_from_cache(root: Path, dir_hash: str, folder: Path) -> bool:
    """Build `folder` from the cached tree `dir_hash`; False if the cache lacks any of it."""
    from dvc.repo import Repo  # only on this failure path: importing DVC takes a second
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_data.hashfile.tree import Tree

    with Repo(Repo.find_root(str(root))) as repo:
        cache = repo.cache.local
        if not cache.exists(dir_hash):
            return False
        entries = Tree.load(cache, HashInfo("md5", dir_hash)).as_list()
        sources = [(Path(cache.oid_to_path(entry["md5"])), entry["relpath"]) for entry in entries]
    if not all(source.is_file() for source, _ in sources):
        return False
    building = folder.parent / f".{folder.name}.restoring"
    shutil.rmtree(building, ignore_errors=True)
    for source, relpath in sources:
        target = building / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)  # the cache's files are read-only; the copy is not
    building.rename(folder)
    return True


def another_runs_files(name: str, seed: int) -> str:
    """What to do when train@NAME-SEED's folder holds another run's files: such
    a folder comes from a copy, or from a DVC run-cache record that points at
    them, which a plain `dvc repro` would restore again. `-f` trains anew, but
    its record can land on the bad record's own name (training is byte for byte
    repeatable, and DVC names a record by its content) and leave it in place, so
    the records go first; the runs themselves stay in DVC's cache."""
    return (
        f"another run's files (copied, or restored from a DVC run-cache record that points at them): "
        f"`rm -rf .dvc/cache/runs` drops DVC's run-cache records (not the runs), then "
        f"`dvc repro -f train@{name}-{seed}` trains the seed again and records it anew "
        "(a plain `dvc repro` would restore the same record)"
    )


def restore_previous_run(root: Path, name: str, seed: int) -> str | None:
    """If data/runs/NAME/seedN is gone (DVC removed it before this run), copy it back
    from the DVC cache as dvc.lock records it. A one-line note of what was
    done, or None when nothing was missing or nothing was recorded."""
    folder = SeedRunFiles.of(root, name, seed).folder
    if folder.exists():
        return None  # not run by DVC, or it kept the folder: nothing was lost
    try:
        dir_hash = recorded_hash(locked_stages(root), name, seed)
        if dir_hash is None:
            return None
        if _copy_from_cache(root, dir_hash, folder):
            return (
                f"note: {folder} is back as dvc.lock records it (copied from the DVC cache); nothing is lost"
            )
        reason = "it is not in the DVC cache"
    except Exception as error:  # never hide the failure that brought us here
        reason = f"{error.__class__.__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    return f"note: could not put back the previous {folder} ({reason}); `dvc pull train@{name}-{seed}` fetches it from a remote"
