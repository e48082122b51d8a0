"""The engine refuses what would lose progress: inherited locks, links, FIFOs, incomplete files,
non-finite state."""

from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from bsrnn.checkpoint import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointForeignError,
    CheckpointManager,
    NonFiniteStateError,
    RunDirectoryBusyError,
    RunDirectoryLock,
    load_checkpoint,
    verify,
    write_checkpoint,
)
from bsrnn.checkpoint.structure import structure_problems


def _manager(run_dir: Path, model: torch.nn.Module, **kwargs) -> CheckpointManager:
    manager = CheckpointManager(run_dir, monitor="val_loss", mode="min", **kwargs)
    manager.register("model_state_dict", model)
    return manager


def test_a_forked_child_does_not_keep_the_run_directory_locked_after_its_parent_dies(tmp_path: Path) -> None:
    # The parent (a "trainer") locks, forks a long-lived child (a "data-loading worker") and is
    # killed: the directory must be free at once, while the child still runs.
    read_end, write_end = os.pipe()
    trainer = os.fork()
    if trainer == 0:  # pragma: no cover - runs in the child
        os.close(read_end)
        RunDirectoryLock(tmp_path).acquire()
        worker = os.fork()
        if worker == 0:
            time.sleep(30)
            os._exit(0)
        os.write(write_end, f"{worker}\n".encode())
        time.sleep(30)
        os._exit(0)
    os.close(write_end)
    worker = int(os.read(read_end, 64).decode())
    os.close(read_end)
    try:
        with pytest.raises(RunDirectoryBusyError, match=f"PID {trainer}"):
            RunDirectoryLock(tmp_path).acquire()
        os.kill(trainer, signal.SIGKILL)
        os.waitpid(trainer, 0)
        os.kill(worker, 0)  # the worker still lives
        RunDirectoryLock(tmp_path).acquire().release()
    finally:
        for pid in (trainer, worker):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_a_lock_whose_file_its_holder_removed_meanwhile_is_taken_on_a_new_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``remove`` deletes .lock while still holding it; a process that opened the old file just
    before gets its flock after the release, on a file no name leads to: it must lock again."""
    holder = RunDirectoryLock(tmp_path).acquire()
    latecomer = RunDirectoryLock(tmp_path)
    real_open_and_lock = RunDirectoryLock._open_and_lock
    calls = []

    def opened_just_before_the_removal(self: RunDirectoryLock) -> int:
        calls.append(self)
        if len(calls) == 1:
            fd = os.open(self.path, os.O_RDWR)
            holder.remove()  # unlink while held, then release: our flock succeeds on the old file
            import fcntl
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        return real_open_and_lock(self)

    monkeypatch.setattr(RunDirectoryLock, "_open_and_lock", opened_just_before_the_removal)
    latecomer.acquire()
    assert len(calls) == 2 and latecomer.held
    latecomer.check_still_held()  # .lock names the file it holds
    monkeypatch.undo()
    with pytest.raises(RunDirectoryBusyError, match=f"PID {os.getpid()}"):
        RunDirectoryLock(tmp_path).acquire()
    latecomer.release()


def test_the_lock_refuses_a_symlink_and_writes_nothing_through_it(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".lock").symlink_to(victim)
    with pytest.raises(CheckpointError, match="symbolic link"):
        RunDirectoryLock(run_dir).acquire()
    assert victim.read_text() == "precious"


def test_the_lock_refuses_a_directory_where_the_lock_file_belongs(tmp_path: Path) -> None:
    (tmp_path / ".lock").mkdir()
    with pytest.raises(CheckpointError, match="is a directory"):
        RunDirectoryLock(tmp_path).acquire()


def test_a_run_directory_below_a_regular_file_is_refused_clearly(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="Cannot create the run directory"):
        RunDirectoryLock(tmp_path / "file" / "run").acquire()


def test_a_manager_given_a_held_lock_uses_it_and_leaves_releasing_to_its_owner(tmp_path: Path) -> None:
    lock = RunDirectoryLock(tmp_path).acquire()
    with _manager(tmp_path, torch.nn.Linear(2, 2), lock=lock) as manager:
        manager.save(metric=0.1, values={"epoch": 0})
    assert lock.held
    with pytest.raises(RunDirectoryBusyError):
        CheckpointManager(tmp_path)
    lock.release()
    with pytest.raises(ValueError, match="held RunDirectoryLock"):
        CheckpointManager(tmp_path, lock=lock)


def test_a_fifo_or_device_is_refused_by_type_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "checkpoint_last.pt"
    os.mkfifo(fifo)
    with pytest.raises(CheckpointForeignError, match="FIFO"):
        load_checkpoint(fifo)
    assert not verify(tmp_path)[0].ok
    zero = tmp_path / "zero.pt"
    zero.symlink_to("/dev/zero")
    with pytest.raises(CheckpointForeignError, match="device"):
        load_checkpoint(zero)


def _complete_payload(tmp_path: Path) -> dict:
    with _manager(tmp_path, torch.nn.Linear(2, 2)) as manager:
        manager.save(metric=0.5, values={"epoch": 0})
    return load_checkpoint(tmp_path / "checkpoint_last.pt").payload


def test_a_checkpoint_written_by_the_manager_is_complete(tmp_path: Path) -> None:
    payload = _complete_payload(tmp_path)
    assert structure_problems(payload) == []
    assert payload["registered"] == ["model_state_dict"]


@pytest.mark.parametrize("edit,named", [
    (lambda p: {"format": p["format"], "format_version": p["format_version"]}, "monitor is missing"),
    (lambda p: {**p, "monitor": {**p["monitor"], "best": "0.1"}}, "monitor.best"),
    (lambda p: {**p, "lineage": "none"}, "lineage is a str"),
    (lambda p: {**p, "model_state_dict": [1, 2]}, "model_state_dict is a list"),
    (lambda p: {key: value for key, value in p.items() if key != "model_state_dict"},
     "registered state model_state_dict is missing"),
])
def test_an_incomplete_or_malformed_file_is_named_like_a_damaged_one(tmp_path: Path, edit, named: str) -> None:
    payload = edit(_complete_payload(tmp_path))
    target = tmp_path / "edited.pt"
    with open(target, "wb") as handle:
        write_checkpoint(payload, handle)
    with pytest.raises(CheckpointCorruptError, match=named):
        load_checkpoint(target)
    assert [r.ok for r in verify(target)] == [False]


def test_load_auto_takes_a_complete_best_over_an_incomplete_last(tmp_path: Path) -> None:
    payload = _complete_payload(tmp_path)
    (tmp_path / "checkpoint_last.pt").rename(tmp_path / "checkpoint_best.pt")
    with open(tmp_path / "checkpoint_last.pt", "wb") as handle:
        write_checkpoint({"format": payload["format"], "format_version": payload["format_version"]}, handle)
    loaded = load_checkpoint(tmp_path, "auto")
    assert loaded.kind == "best" and loaded.fell_back


def test_a_save_never_commits_non_finite_weights(tmp_path: Path) -> None:
    model = torch.nn.Linear(2, 2)
    with _manager(tmp_path, model, require_finite=["model_state_dict"]) as manager:
        manager.save(metric=0.5, values={"epoch": 0})
        before = (tmp_path / "checkpoint_last.pt").read_bytes()
        with torch.no_grad():
            model.weight[0, 1] = math.inf
        with pytest.raises(NonFiniteStateError, match=r"model_state_dict\['weight'\]"):
            manager.save(metric=0.1, values={"epoch": 1})
    assert (tmp_path / "checkpoint_last.pt").read_bytes() == before
    assert load_checkpoint(tmp_path, "best").payload["epoch"] == 0


@pytest.mark.parametrize("version,refused", [("2.5.1", True), ("2.9.1+cu121", True), ("2.10.0", False),
                                             ("2.13.0+cpu", False), ("3.0.0", False)])
def test_checkpoints_are_never_unpickled_by_a_torch_with_an_unsafe_loader(version: str, refused: bool) -> None:
    from bsrnn.checkpoint.errors import UnsafeTorchError
    from bsrnn.checkpoint.reading import check_torch_loader

    if refused:
        with pytest.raises(UnsafeTorchError, match="CVE-2025-32434"):
            check_torch_loader(version)
    else:
        check_torch_loader(version)


@pytest.mark.parametrize("where", ["/sys/bsrnn-run", "FILE/run", "LOCKDIR"])
def test_an_unwritable_run_directory_is_refused_before_the_data_is_read(
    tmp_path: Path, where: str, capsys: pytest.CaptureFixture
) -> None:
    from bsrnn.cli.main import main

    if where == "FILE/run":
        (tmp_path / "FILE").write_text("x")
        run_dir = tmp_path / "FILE" / "run"
    elif where == "LOCKDIR":
        run_dir = tmp_path / "run"
        (run_dir / ".lock").mkdir(parents=True)
    else:
        run_dir = Path(where)
    missing_data = tmp_path / "no-such-data"
    assert main(["train", "--data-dir", str(missing_data), "--run-dir", str(run_dir), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert str(run_dir) in err and str(missing_data) not in err and "Traceback" not in err
