"""Faults and bad input: what the user sees, and that nothing is lost or half-written."""

import copy
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
import yaml
from conftest import (
    ANSI,
    TINY_PARAMS,
    commit,
    lossbench,
    make_project,
    prepared_in,
    run_in,
    start_in,
    start_repro_until_a_checkpoint,
    write_params,
)
from rich.console import Console

from lossbench.checkpoint import run_fingerprint
from lossbench.params import load_params
from lossbench.train import DeviceData, SeedJob, train_seed


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file of the project but DVC's and git's own bookkeeping."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not {".git", ".dvc"} & set(path.relative_to(root).parts)
    }


def edit_params(root: Path, change: object) -> dict[str, object]:
    params = yaml.safe_load((root / "params.yaml").read_text())
    change(params)  # type: ignore[operator]
    write_params(root, params)
    return params


# --- params never reach a shell, and bad params cost no file under `dvc repro` ---------------

SHELL_PAYLOADS = [
    "x;touch PWNED;",
    "$(touch PWNED)",
    "`touch PWNED`",
    "x' ; touch PWNED ; '",
    'x"\ntouch PWNED\n"',
]


@pytest.mark.parametrize("payload", SHELL_PAYLOADS)
def test_a_loss_name_never_reaches_a_shell(reproduced: Path, payload: str) -> None:
    before = snapshot(reproduced)
    edit_params(reproduced, lambda p: p["losses"].__setitem__(payload, {"kind": "ce"}))
    result = run_in(reproduced, "dvc", "repro", check=False)
    assert result.returncode != 0
    assert not list(reproduced.rglob("PWNED")) and not Path("PWNED").exists()
    errors = [line for line in result.stderr.splitlines() if line.startswith("  losses")]
    assert errors == [
        f"  losses: Value error, loss name {payload!r} is not allowed: use a letter, then "
        "letters, digits, '_' or '-', at most 64 characters"
    ], result.stderr
    assert {k: v for k, v in snapshot(reproduced).items() if k != "params.yaml"} == {
        k: v for k, v in before.items() if k != "params.yaml"
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.__setitem__("losses", {}), "losses: Value error, at least one loss is required"),
        (lambda p: p["data"]["synthetic"].__setitem__("noise", 2.0), "data.synthetic.noise: Input should be"),
        (lambda p: p["train"].__setitem__("epochs", 0), "train.epochs: Input should be greater than"),
        (
            lambda p: p["losses"]["focal_low"].__setitem__("alpha", [1.0, 2.0]),
            "losses.focal_low.alpha: 2 weights",
        ),
    ],
    ids=["no losses", "bad data value", "bad train value", "alpha for 2 classes"],
)
def test_bad_params_under_dvc_repro_change_no_file(reproduced: Path, change: object, message: str) -> None:
    edit_params(reproduced, change)
    before = snapshot(reproduced)
    result = run_in(reproduced, "dvc", "repro", check=False)
    assert result.returncode != 0 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(reproduced) == before


def test_a_failed_prepare_leaves_the_previous_prepared_data_whole(tmp_path: Path) -> None:
    # The test set is larger than the training set here, so a size limit lets
    # the new training arrays be written and stops at the test images.
    params = changed_sizes(train_size=100, test_size=300)
    write_params(tmp_path, params)
    assert lossbench(tmp_path, "prepare").returncode == 0
    before = snapshot(tmp_path)
    params["data"]["seed"] = 7  # type: ignore[index]
    write_params(tmp_path, params)
    limited = lossbench(tmp_path, "prepare", preexec_fn=lambda: _file_size_limit(500_000))
    assert limited.returncode == 1 and "could not write data/prepared" in limited.stderr, limited.stderr
    assert (
        "the previous version, if any, is unchanged" in limited.stderr and "Traceback" not in limited.stderr
    )
    assert {k: v for k, v in snapshot(tmp_path).items() if k != "params.yaml"} == {
        k: v for k, v in before.items() if k != "params.yaml"
    }
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["class_counts.json", "prepared"]


def changed_sizes(train_size: int, test_size: int) -> dict[str, object]:
    params = copy.deepcopy(TINY_PARAMS)
    params["data"]["synthetic"].update(train_size=train_size, test_size=test_size)  # type: ignore[index]
    return params


def _file_size_limit(size: int) -> None:
    """In the child: writes beyond `size` bytes fail with EFBIG, as on a full disk."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))


def test_files_are_written_with_the_users_umask(tmp_path: Path) -> None:
    write_params(tmp_path, changed_sizes(100, 50))
    old = os.umask(0o022)
    try:
        assert lossbench(tmp_path, "prepare").returncode == 0
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "data").rglob("*") if p.is_file()}
    assert modes and set(modes.values()) == {0o644}, modes
    assert (tmp_path / "plots" / "samples.png").stat().st_mode & 0o777 == 0o644


# --- training: errors, checkpoints, interruptions -------------------------------------------


def test_train_without_prepared_data_names_the_stage(tmp_path: Path) -> None:
    write_params(tmp_path, TINY_PARAMS)
    result = lossbench(tmp_path, "train", "ce", "1")
    assert result.returncode == 1 and "run `dvc repro prepare`" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_loss_name_for_train(tmp_path: Path) -> None:
    write_params(tmp_path, TINY_PARAMS)
    result = lossbench(tmp_path, "train", "nope", "1")
    assert result.returncode == 1
    assert (
        "losses.nope: no such loss in params.yaml; defined: mae, ce, focal_low, focal_high" in result.stderr
    )


def _temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*.tmp") if ".dvc" not in p.parts]


@pytest.fixture(scope="module")
def prepared_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    params = changed_sizes(600, 100)
    params["train"].update(epochs=40)  # type: ignore[attr-defined]
    params["seeds"] = [1, 2]
    params["machine"] = {"workers": 2}  # the worker pool, whatever the machine's cores
    return prepared_in(tmp_path_factory.mktemp("prepared"), params)


@pytest.fixture
def prepared(tmp_path: Path, prepared_template: Path) -> Path:
    """Tiny prepared data, and params for a CE training of two seeds, one worker process each."""
    shutil.copytree(prepared_template, tmp_path, dirs_exist_ok=True)
    return tmp_path


@pytest.fixture(scope="module")
def uninterrupted(
    prepared_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, object], list[str]]:
    """The results of the `prepared` training run straight through."""
    root = tmp_path_factory.mktemp("uninterrupted")
    shutil.copytree(prepared_template, root, dirs_exist_ok=True)
    _train_every_seed(root, [1, 2])
    return _results(root)


def _train_every_seed(root: Path, seeds: list[int]) -> list[str]:
    """Each seed's stage in turn, as `dvc repro` runs them; their outputs."""
    outputs = []
    for seed in seeds:
        result = lossbench(root, "train", "ce", str(seed))
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    return outputs


@pytest.mark.slow
def test_seeds_trained_ahead_never_change_the_results(prepared: Path) -> None:
    edit_params(
        prepared,
        lambda p: p["train"].update(epochs=3) or p.update(seeds=[1, 2, 3], losses={"ce": {"kind": "ce"}}),
    )
    runs = {}
    # What each stage trains ahead: on 2 workers, seed 2 with seed 1; seed 3 has no one left to pair with.
    ahead = {1: ["", "", ""], 2: ["ce seed 2", "", ""], 3: ["ce seed 2, ce seed 3", "", ""]}
    for workers in (1, 2, 3):
        shutil.rmtree(prepared / "data" / "runs", ignore_errors=True)
        edit_params(prepared, lambda p, workers=workers: p.update(machine={"workers": workers}))
        outputs = _train_every_seed(prepared, [1, 2, 3])
        for output, trained_ahead in zip(outputs, ahead[workers], strict=True):
            assert (f"training ahead on idle cores: {trained_ahead}\n" in output) == bool(trained_ahead), (
                output
            )
        runs[workers] = _results(prepared)
    assert runs[1] == runs[2] == runs[3]


def test_a_stage_trains_its_own_losss_seeds_ahead_first_and_shows_their_epochs_so_far(
    prepared: Path,
) -> None:
    edit_params(
        prepared,
        lambda p: (
            p["train"].update(epochs=3)
            or p.update(seeds=[1, 2], losses={"mae": {"kind": "mae", "input": "probs"}, "ce": {"kind": "ce"}})
        ),
    )
    # As under `dvc repro train@ce-2 train@ce-1`: ce seed 1, not a later loss, goes ahead.
    result = lossbench(prepared, "train", "ce", "2")
    assert result.returncode == 0, result.stderr
    assert "training ahead on idle cores: ce seed 1\n" in result.stdout
    live = prepared / "data" / "live" / "ce"
    waiting = (live / "seed1.csv").read_text()  # trained ahead; its stage has not run yet
    assert [line.split(",")[:2] for line in waiting.splitlines()[1:]] == [["1", "1"], ["1", "2"], ["1", "3"]]
    assert not (live / "seed2.csv").exists()  # its stage wrote data/runs/ce/seed2
    assert lossbench(prepared, "train", "ce", "1").returncode == 0
    assert (prepared / "data" / "runs" / "ce" / "seed1" / "history.csv").read_text() == waiting
    assert list(live.iterdir()) == []


def test_a_tiny_seed_that_fails_in_the_first_stage_is_left_to_its_own_stage(tmp_path: Path) -> None:
    # One loss, two tiny seeds: train@ce-1 also trains seed 2, whose finished folder
    # cannot be written (a file holds its place); its own stage then trains it.
    root = make_project(tmp_path / "project", TINY_PARAMS | {"losses": {"ce": {"kind": "ce"}}})
    blocker = root / "data" / "checkpoints" / "ce" / "seed-2.finished"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a folder")
    result = run_in(root, "dvc", "repro")
    first, second = result.stdout.split("Running stage 'train@ce-2'")
    assert "; then, in this process (tiny seeds): ce seed 2\n" in first, result.stdout
    assert "note (a seed trained ahead): could not write data/checkpoints/ce/seed-2.finished" in first
    assert "train@ce-2: CE, seed 2, 300 train / 100 test images" in second  # trained by its own stage
    assert "trained and evaluated ahead" not in second
    assert (root / "data" / "runs" / "ce" / "seed2" / "metrics.json").is_file()


def test_a_seed_trained_ahead_says_so_at_its_own_stage_instead_of_an_empty_bar(prepared: Path) -> None:
    edit_params(prepared, lambda p: p["train"].update(epochs=2) or p.update(losses={"ce": {"kind": "ce"}}))
    terminal = {"TTY_COMPATIBLE": "1", "COLUMNS": "120"}  # rich draws its bars, as in a terminal
    first = lossbench(prepared, "train", "ce", "1", env=terminal)
    assert first.returncode == 0, first.stderr
    assert "training ahead on idle cores: ce seed 2\n" in first.stdout
    # The bars show each seed's epochs done, the time since it started and the time left.
    bars = ANSI.sub("", first.stdout)
    assert re.search(r"ce seed 2 .* 2/2 epochs +\d:\d\d:\d\d +\d:\d\d:\d\d", bars), bars
    second = lossbench(prepared, "train", "ce", "2", env=terminal)
    assert second.returncode == 0, second.stderr
    shown = ANSI.sub("", second.stdout)
    assert (
        "ce seed 2: already trained, 2/2 epochs in its checkpoint (trained ahead); evaluating it\n" in shown
    ), shown
    assert "0/2" not in shown and "-:--:--" not in shown, shown


def test_a_diverging_loss_stops_with_the_loss_and_epoch_named(prepared: Path) -> None:
    edit_params(prepared, lambda p: p["train"].__setitem__("lr", 1e30))  # blows the weights up at once
    older_live_view = prepared / "data" / "live" / "ce" / "seed1.csv"
    older_live_view.parent.mkdir(parents=True)
    older_live_view.write_text("seed,epoch\n1,1\n")  # an earlier run's epochs
    result = lossbench(prepared, "train", "ce", "1")
    assert result.returncode == 1
    assert "train@ce-1 (CE): the training loss became nan in epoch 1" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (prepared / "data" / "runs").exists()
    assert not older_live_view.exists()


def test_a_live_history_that_cannot_be_written_is_a_note_and_training_goes_on(prepared: Path) -> None:
    edit_params(prepared, lambda p: p["train"].update(epochs=2) or p.update(seeds=[1]))
    (prepared / "data" / "live" / "ce" / "seed1.csv").mkdir(parents=True)  # the file's place is taken
    result = lossbench(prepared, "train", "ce", "1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("note: the live history is not updated:") == 1, result.stdout
    assert (prepared / "data" / "runs" / "ce" / "seed1" / "history.csv").read_text().count("\n") == 3


def test_a_failed_metrics_write_is_a_clear_error_and_leaves_no_partial_file(prepared: Path) -> None:
    # The metrics path is taken by a folder: the rename onto it fails, as a full disk would.
    edit_params(prepared, lambda p: p["train"].update(epochs=1) or p.update(seeds=[1]))
    (prepared / "data" / "runs" / "ce" / "seed1" / "metrics.json").mkdir(parents=True)
    result = lossbench(prepared, "train", "ce", "1")
    assert result.returncode == 1
    assert (
        "could not write data/runs/ce/seed1/metrics.json" in result.stderr
        and "Traceback" not in result.stderr
    )
    assert _temporaries(prepared) == []


def test_a_full_disk_while_saving_a_checkpoint_is_one_line(prepared: Path) -> None:
    result = lossbench(prepared, "train", "ce", "1", preexec_fn=lambda: _file_size_limit(20_000))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    # Two workers train seed 1 and, ahead, seed 2: whichever saves first meets the full disk.
    assert re.search(r"error: could not write data/checkpoints/ce/seed-[12]\.pt: ", result.stderr), (
        result.stderr
    )
    assert "the previous version, if any, is unchanged" in result.stderr
    assert _temporaries(prepared) == []


def test_a_missing_history_names_the_stage_to_rerun(prepared: Path) -> None:
    edit_params(
        prepared, lambda p: p.update(losses={"ce": {"kind": "ce"}}, seeds=[1]) or p["train"].update(epochs=1)
    )
    assert lossbench(prepared, "train", "ce", "1").returncode == 0
    assert lossbench(prepared, "publish", "ce").returncode == 0
    (prepared / "plots" / "history" / "ce.csv").unlink()
    result = lossbench(prepared, "report")
    assert result.returncode == 1
    assert "plots/history/ce.csv is missing: run `dvc repro publish@ce` first" in result.stderr
    (prepared / "data" / "runs" / "ce" / "seed1" / "history.csv").unlink()
    result = lossbench(prepared, "publish", "ce")
    assert result.returncode == 1
    assert "data/runs/ce/seed1/history.csv is missing: run `dvc repro train@ce-1` first" in result.stderr


def _start_training(root: Path) -> subprocess.Popen[str]:
    return start_in(root, sys.executable, "-m", "lossbench", "train", "ce", "1")


def _wait_for(path: Path, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while not path.exists():
        assert process.poll() is None, "training ended before it could be interrupted"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def _results(root: Path) -> tuple[dict[str, object], list[str]]:
    """Every seed's metrics and history (less wall time, which is allowed to differ)."""
    metrics, history = {}, []
    for folder in sorted((root / "data" / "runs" / "ce").iterdir()):
        metrics[folder.name] = json.loads((folder / "metrics.json").read_text())
        history += [line.rsplit(",", 1)[0] for line in (folder / "history.csv").read_text().splitlines()]
    return metrics, history


def _saved(path: Path) -> tuple[int, int] | None:
    """Which version of a file is there: a checkpoint is replaced by a rename, so
    each save gives another inode (and mtime). One stat: the file may go meanwhile."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return info.st_ino, info.st_mtime_ns


def test_training_interrupted_by_each_signal_in_turn_resumes_to_identical_results(
    prepared: Path, uninterrupted: tuple[dict[str, object], list[str]]
) -> None:
    # One training, interrupted three times (each restart resumes the last), then finished.
    checkpoint = prepared / "data" / "checkpoints" / "ce" / "seed-1.pt"
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        before = _saved(checkpoint)
        process = _start_training(prepared)
        deadline = time.monotonic() + 120
        while _saved(checkpoint) in (before, None):  # until this run has saved an epoch
            assert process.poll() is None, "training ended before it could be interrupted"
            assert time.monotonic() < deadline, f"{checkpoint} was never saved"
            time.sleep(0.01)
        os.killpg(process.pid, signum)
        stdout, stderr = process.communicate(timeout=120)
        assert ("resuming after epoch" in stdout) == (before is not None), stdout
        if signum == signal.SIGKILL:
            assert process.returncode == -signal.SIGKILL
        else:
            assert process.returncode == 130, stderr
            # One line per seed (its own and the one ahead), in the order their workers stopped.
            said = f"stderr:\n{stderr}\nstdout:\n{stdout}"
            assert stderr.startswith("interrupted: train@ce-") and "`dvc repro` resumes" in stderr, said
            assert "train@ce-1: interrupted in epoch" in stderr and "train@ce-2: " in stderr, said
            assert "Traceback" not in stderr
        assert not (prepared / "data" / "runs").exists()

    resumed = _train_every_seed(prepared, [1, 2])
    assert "resuming after epoch" in resumed[0]
    assert _results(prepared) == uninterrupted
    assert list((prepared / "data" / "checkpoints").rglob("*.pt")) == []
    assert list((prepared / "data" / "live").rglob("*.csv")) == []
    assert _temporaries(prepared) == []


def test_a_seed_worker_stopped_alone_stops_the_others_and_each_is_named(prepared: Path) -> None:
    # SIGTERM to one seed's worker only (its stage and the other worker get none).
    process = _start_training(prepared)
    for seed in (1, 2):
        _wait_for(prepared / "data" / "checkpoints" / "ce" / f"seed-{seed}.pt", process)
    stage = psutil.Process(process.pid)
    forkserver = next(child for child in stage.children() if "forkserver" in " ".join(child.cmdline()))
    workers = forkserver.children()
    assert len(workers) == 2, workers
    workers[0].send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert stderr.startswith("interrupted: train@ce-") and "Traceback" not in stderr, stderr
    assert "train@ce-1: interrupted in epoch" in stderr and "train@ce-2: interrupted in epoch" in stderr, (
        stderr
    )


def test_a_checkpoint_from_other_params_is_ignored(prepared: Path) -> None:
    process = _start_training(prepared)
    _wait_for(prepared / "data" / "checkpoints" / "ce" / "seed-1.pt", process)
    os.killpg(process.pid, signal.SIGINT)
    process.communicate(timeout=120)
    edit_params(prepared, lambda p: p["train"].update(lr=0.05, epochs=2))
    result = lossbench(prepared, "train", "ce", "1")
    assert result.returncode == 0
    assert "ignoring checkpoint" in result.stdout and "made with other params, data or code" in result.stdout
    assert "resuming" not in result.stdout


def test_checkpoints_that_load_but_are_not_ours_are_ignored_with_one_line(prepared: Path) -> None:
    marker = prepared / "code-ran"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (Path.touch, (str(marker),))  # type: ignore[return-value]

    params = load_params(prepared / "params.yaml")
    params = params.model_copy(update={"train": params.train.model_copy(update={"epochs": 2}), "seeds": [1]})
    checkpoint = prepared / "data" / "checkpoints" / "ce" / "seed-1.pt"
    console = Console(record=True, width=300)
    job = SeedJob(params, "ce", 1, prepared, run_fingerprint(params, "ce", 1, b"data and code"))
    data = DeviceData.load(params, "ce", prepared)
    train_seed(job, data.training, data.test, data.loss_fn, console)  # a real checkpoint to vary
    real = torch.load(checkpoint, weights_only=True)
    cuda_generator = real | {"generator": torch.zeros(16, dtype=torch.uint8)}  # a CUDA state's size
    for content, seen in [
        ({"fingerprint": Payload()}, "unreadable (UnpicklingError)"),
        ([1, 2, 3], "not a lossbench checkpoint (list)"),
        (torch.zeros(3), "not a lossbench checkpoint (Tensor)"),
        ({"fingerprint": job.fingerprint, "model": {}}, "another structure (KeyError)"),
        (real | {"history": "epochs"}, "another structure (TypeError)"),
        (cuda_generator, "another structure (RuntimeError)"),
    ]:
        torch.save(content, checkpoint)
        history = train_seed(job, data.training, data.test, data.loss_fn, console)
        assert seen in console.export_text(clear=True), seen
        assert [record.epoch for record in history] == [1, 2]  # trained from the start
    assert not marker.exists()


def test_killing_dvc_alone_ends_its_training_stage(reproduced: Path) -> None:
    edit_params(
        reproduced,
        lambda p: p["train"].update(epochs=400) or p.update(losses={"ce": {"kind": "ce"}}, seeds=[1]),
    )
    commit(reproduced)
    dvc = start_repro_until_a_checkpoint(reproduced, reproduced / "data" / "checkpoints" / "ce")
    dvc.kill()  # SIGKILL to dvc only, not its process group
    dvc.wait()
    deadline = time.monotonic() + 30
    while _trainers_in(reproduced):
        assert time.monotonic() < deadline, f"trainer outlived dvc: {_trainers_in(reproduced)}"
        time.sleep(0.2)


def _trainers_in(folder: Path) -> list[str]:
    """Command lines of live `lossbench train` processes working in `folder`."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cwd").resolve() == folder.resolve():
                command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                if "lossbench" in command or "multiprocessing" in command:
                    found.append(command)
        except OSError:
            continue  # exited meanwhile, or not ours to read
    return found
