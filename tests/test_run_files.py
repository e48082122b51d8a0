"""The run directory's own files on a full disk and after crashes (tools/torture.py diskfull).

A full disk must stop a run with one clear error, never a traceback, and never leave a torn
``metrics.jsonl`` line or a ``config.toml`` temporary behind.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import socket
import stat
import time
from pathlib import Path

import pytest

from bsrnn.checkpoint import read_index
from bsrnn.config import Config
from bsrnn.errors import UserError
from bsrnn.training import run_files
from bsrnn.training.run_files import LOG_NAME, METRICS_NAME, RunFiles, RunFilesError, read_metrics


def _no_space(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_config_toml_that_cannot_be_written_stops_the_run_clearly_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = RunFiles(tmp_path)
    try:
        monkeypatch.setattr(run_files.os, "replace", _no_space)
        with pytest.raises(RunFilesError, match="config.toml: No space left on device.*checkpoints are intact"):
            files.write_config(Config())
    finally:
        files.close()
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([LOG_NAME, METRICS_NAME])


def test_config_temporaries_left_by_a_killed_run_are_removed_by_the_next_run(tmp_path: Path) -> None:
    (tmp_path / ".config.toml.4242.tmp").write_text("epochs = 1\n")
    RunFiles(tmp_path).close()
    assert not (tmp_path / ".config.toml.4242.tmp").exists()


def test_a_metrics_write_that_fails_midway_leaves_whole_lines_and_stops_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = RunFiles(tmp_path)
    files.event("step", global_step=1, loss=0.5)
    before = (tmp_path / METRICS_NAME).read_bytes()
    real_write = os.write
    calls = []

    def half_then_full(fd: int, data: bytes) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[: len(data) // 2]))  # a short write: the disk filled up
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(run_files.os, "write", half_then_full)
    try:
        with pytest.raises(RunFilesError, match="metrics.jsonl: No space left on device"):
            files.event("step", global_step=2, loss=0.25)
    finally:
        monkeypatch.undo()
        files.close()
    assert (tmp_path / METRICS_NAME).read_bytes() == before
    assert [event["global_step"] for event in read_metrics(tmp_path)] == [1]


def test_a_torn_last_metrics_line_from_a_crash_is_dropped_when_the_next_run_opens_the_file(tmp_path: Path) -> None:
    whole = json.dumps({"event": "step", "global_step": 1}) + "\n"
    (tmp_path / METRICS_NAME).write_text(whole + '{"event": "step", "glo')
    files = RunFiles(tmp_path)
    files.event("resume", global_step=1)
    files.close()
    assert [event["event"] for event in read_metrics(tmp_path)] == ["step", "resume"]
    assert (tmp_path / METRICS_NAME).read_text().startswith(whole)


def test_reading_metrics_skips_a_line_that_is_not_json(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / METRICS_NAME).write_text('{"event": "step"}\n{"event": "st\n{"event": "epoch"}\n')
    with caplog.at_level(logging.WARNING):
        assert [event["event"] for event in read_metrics(tmp_path)] == ["step", "epoch"]
    assert "line(s) 2 " in caplog.text


class _FullDisk(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_train_log_that_cannot_be_written_warns_once_and_never_raises(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = RunFiles(tmp_path)
    handler = files._log_handler
    assert handler is not None
    handler.stream = _FullDisk()
    logger = logging.getLogger("bsrnn.test_run_files")
    logger.setLevel(logging.INFO)
    for step in range(3):
        logger.info("Epoch 0, Step %d", step)
    files.close()
    err = capsys.readouterr().err
    assert err.count("could not write") == 1 and "No space left on device" in err
    assert "Traceback" not in err and "Logging error" not in err


@pytest.mark.parametrize("name", ["metrics.jsonl", "train.log"])
def test_a_symlinked_run_file_is_refused_and_its_target_untouched(tmp_path: Path, name: str) -> None:
    from bsrnn.errors import UserError

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / name).symlink_to(victim)
    with pytest.raises(UserError, match="symbolic link"):
        RunFiles(run_dir)
    assert victim.read_text() == "precious\n"


def test_config_toml_as_a_symlink_is_replaced_not_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim.toml"
    victim.write_text("precious\n")
    (tmp_path / "config.toml").symlink_to(victim)
    files = RunFiles(tmp_path)
    try:
        files.write_config(Config())
    finally:
        files.close()
    assert victim.read_text() == "precious\n"
    assert not (tmp_path / "config.toml").is_symlink() and "epochs" in (tmp_path / "config.toml").read_text()


def test_status_json_says_where_the_run_stands_after_every_event(tmp_path: Path) -> None:
    import torch

    from bsrnn.checkpoint import CheckpointManager

    files = RunFiles(tmp_path)
    try:
        files.event("start", global_step=0)
        status = json.loads((tmp_path / "status.json").read_text())
        assert status["state"] == "training" and "last_save" not in status
        assert (status["epochs_completed"], status["pid"], status["host"]) == (0, os.getpid(), socket.gethostname())
        with CheckpointManager(tmp_path, monitor="val_loss") as manager:
            manager.register("model_state_dict", torch.nn.Linear(2, 2))
            manager.save(metric=0.4, values={"epoch": 0, "global_step": 5})
        files.event("step", epoch=1, step=2, global_step=7, loss=0.3, steps_per_s=2.5, eta="0:01:00")
        status = json.loads((tmp_path / "status.json").read_text())
        assert (status["global_step"], status["steps_per_s"], status["eta"]) == (7, 2.5, "0:01:00")
        assert status["epochs_completed"] == 1 and "epoch" not in status  # training epoch 1: one done
        assert status["last_save"]["global_step"] == 5 and status["best"]["metric"]["best"] == 0.4
        files.event("preempted", signal="SIGTERM", global_step=7)
        status = json.loads((tmp_path / "status.json").read_text())
        assert (status["state"], status["signal"], status["last_event"]) == ("stopped", "SIGTERM", "preempted")
    finally:
        files.close()
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def status_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "status.json").read_text())


def test_epochs_completed_has_one_meaning_whatever_the_event(tmp_path: Path) -> None:
    """metrics.jsonl's ``epoch`` is the epoch trained (step), validated (epoch) or last completed
    (resume, stopped, completed); status.json turns each into the number of completed epochs."""
    files = RunFiles(tmp_path)
    try:
        for kind, fields, completed in (
                ("resume", {"epoch": -1, "global_step": 3}, 0),  # a mid-epoch checkpoint of epoch 0
                ("step", {"epoch": 0, "step": 4, "global_step": 4}, 0),
                ("epoch", {"epoch": 0, "global_step": 6}, 1),
                ("nonfinite", {"epoch": 1, "step": 1, "global_step": 7}, 1),
                ("stopped", {"reason": "max_steps", "epoch": 0, "global_step": 8}, 1),
                ("completed", {"epoch": 1, "global_step": 12}, 2)):
            files.event(kind, **fields)
            assert status_of(tmp_path)["epochs_completed"] == completed, kind
    finally:
        files.close()


def test_status_json_says_failed_with_the_error_when_an_exception_ends_the_run(tmp_path: Path) -> None:
    before = time.time()
    with pytest.raises(ValueError):
        files = RunFiles(tmp_path)
        try:
            files.event("start", global_step=0)
            files.event("step", epoch=0, step=1, global_step=1, loss=0.5)
            raise ValueError("the loss went sideways\nsecond line")
        finally:
            files.close()
    status = status_of(tmp_path)
    assert (status["state"], status["error"]) == ("failed", "ValueError: the loss went sideways")
    assert (status["pid"], status["host"], status["global_step"]) == (os.getpid(), socket.gethostname(), 1)
    assert before - 1 <= status["heartbeat"] <= time.time() + 1


def test_ctrl_c_outside_the_guard_says_stopped_and_a_finished_run_keeps_its_state(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        files = RunFiles(tmp_path)
        try:
            files.event("start", global_step=0)
            raise KeyboardInterrupt
        finally:
            files.close()
    assert (status_of(tmp_path)["state"], status_of(tmp_path)["signal"]) == ("stopped", "SIGINT")
    with pytest.raises(OSError):
        files = RunFiles(tmp_path)
        try:
            files.event("completed", epoch=0, global_step=6)
            raise OSError("closing failed after the end")
        finally:
            files.close()
    assert status_of(tmp_path)["state"] == "completed" and "error" not in status_of(tmp_path)
    files = RunFiles(tmp_path)  # a normal end writes nothing more
    files.event("start", global_step=0)
    files.close()
    assert status_of(tmp_path)["state"] == "training"


def test_the_heartbeat_moves_at_every_write(tmp_path: Path) -> None:
    files = RunFiles(tmp_path)
    try:
        files.event("start", global_step=0)
        first = status_of(tmp_path)["heartbeat"]
        time.sleep(0.02)
        files.event("step", epoch=0, step=1, global_step=1)
        assert status_of(tmp_path)["heartbeat"] >= first + 0.02
    finally:
        files.close()


def test_a_status_json_that_cannot_be_written_warns_once_and_never_stops_the_events(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    files = RunFiles(tmp_path)
    try:
        monkeypatch.setattr(run_files.os, "replace", _no_space)
        for step in range(1, 4):
            files.event("step", epoch=0, step=step, global_step=step)
    finally:
        files.close()
    warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "status.json" in warnings[0] and "No space left" in warnings[0], warnings
    assert [event["global_step"] for event in read_metrics(tmp_path)] == [1, 2, 3]
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_resumed_hard_linked_copy_of_a_run_appends_to_files_of_its_own(tmp_path: Path) -> None:
    """``cp -al R SNAP`` then resuming SNAP appended to R's metrics.jsonl and train.log."""
    original, copy = tmp_path / "R", tmp_path / "SNAP"
    files = run_files.RunFiles(original)
    files.event("start", global_step=0)
    files.close()
    copy.mkdir()
    for name in (run_files.METRICS_NAME, run_files.LOG_NAME):
        os.link(original / name, copy / name)
    before = {name: (original / name).read_bytes() for name in (run_files.METRICS_NAME, run_files.LOG_NAME)}
    files = run_files.RunFiles(copy)
    files.event("resume", global_step=0)
    logging.getLogger("bsrnn.train").warning("a line of the copy")
    files.close()
    assert {name: (original / name).read_bytes() for name in before} == before
    assert (copy / run_files.METRICS_NAME).read_bytes().startswith(before[run_files.METRICS_NAME])
    assert (copy / run_files.METRICS_NAME).stat().st_nlink == 1


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_a_fifo_or_a_device_in_the_run_directory_is_refused_without_blocking(tmp_path: Path, kind: str) -> None:
    metrics = tmp_path / run_files.METRICS_NAME
    if kind == "fifo":
        os.mkfifo(metrics)
    elif os.geteuid() == 0:
        os.mknod(metrics, 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero's numbers
    else:
        pytest.skip("making a device node needs root")
    with pytest.raises(UserError, match="must be a regular file"):
        run_files.RunFiles(tmp_path)


@pytest.mark.parametrize("kind", ["fifo", "link to /dev/zero"])
def test_a_checkpoint_index_that_is_a_fifo_or_a_link_to_dev_zero_is_ignored_without_blocking(
        tmp_path: Path, kind: str) -> None:
    index = tmp_path / "checkpoint_index.json"
    os.mkfifo(index) if kind == "fifo" else os.symlink("/dev/zero", index)
    assert read_index(tmp_path) == {}


@pytest.mark.timeout(30)  # the bug was a hang: an open of a FIFO blocks until a reader comes
@pytest.mark.parametrize("name", ["metrics.jsonl", "train.log"])
@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_fifo_or_directory_named_like_a_run_file_is_refused_by_type_without_blocking(
    tmp_path: Path, name: str, kind: str
) -> None:
    """tools/torture.py adversary: `train --resume` with train.log a FIFO hung in the open; a
    directory gave exit 1 with the advice to free disk space."""
    from bsrnn.errors import UserError

    os.mkfifo(tmp_path / name) if kind == "fifo" else (tmp_path / name).mkdir()
    with pytest.raises(UserError, match=f"{name} is a {'FIFO' if kind == 'fifo' else 'folder'}; .*regular file"):
        RunFiles(tmp_path)
    assert not (tmp_path / ".lock").exists() and sorted(p.name for p in tmp_path.iterdir()) <= [LOG_NAME, METRICS_NAME]


def test_a_directory_named_config_toml_is_refused_as_such_not_as_a_full_disk(tmp_path: Path) -> None:
    """tools/torture.py adversary: exit 1 with "Free disk space" advice; now exit 2 naming the folder."""
    from bsrnn.errors import UserError

    (tmp_path / "config.toml").mkdir()
    files = RunFiles(tmp_path)
    try:
        with pytest.raises(UserError, match="config.toml is a folder; .*regular file"):
            files.write_config(Config())
    finally:
        files.close()
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("name", ["metrics.jsonl", "train.log"])
def test_a_run_file_hard_linked_to_another_runs_file_gets_its_own_copy_before_anything_is_appended(
    tmp_path: Path, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """tools/torture.py adversary: appending in place carried the new lines into the other run's
    (or a `cp -al` snapshot's) file through the shared inode."""
    other = tmp_path / "other-run" / name
    other.parent.mkdir()
    other.write_text('{"event": "start", "global_step": 0}\n')
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    os.link(other, run_dir / name)
    with caplog.at_level(logging.WARNING):
        files = RunFiles(run_dir)
    try:
        files.event("step", global_step=1)
        logging.getLogger("bsrnn.test_run_files").warning("a line for train.log")
    finally:
        files.close()
    assert other.read_text() == '{"event": "start", "global_step": 0}\n' and os.stat(other).st_nlink == 1
    mine = (run_dir / name).read_text()
    assert mine.startswith('{"event": "start", "global_step": 0}\n') and len(mine) > len(other.read_text())
    assert f"{name} was a hard link shared with 1 other name" in caplog.text
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".partial")]


def test_a_metrics_line_that_is_json_but_not_an_event_is_skipped_like_a_torn_one(tmp_path: Path) -> None:
    """tools/torture.py adversary: a metrics.jsonl overwritten with binary data held a line that
    parses as the number 5; `bsrnn plot` died with AttributeError on it."""
    (tmp_path / METRICS_NAME).write_text('5\n"text"\n{"event": "step", "global_step": 1}\n[1]\n')
    events, torn = run_files.read_metrics_log(tmp_path)
    assert events == [{"event": "step", "global_step": 1}] and torn == [1, 2, 4]
