"""Observers (TensorBoard logs, status.json) never break or roll back training: a failure in one
warns once and switches it off, and the run trains and saves as without it. status.json says
how the trainer ended, and who wrote it when."""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bsrnn.training import trainer as trainer_module
from bsrnn.training.observers import Observer
from bsrnn.training.run_files import LOG_NAME, StatusFile
from bsrnn.training.tensorboard import TENSORBOARD_DIR, TensorBoardLog
from e2e import TINY, checkpoint, events, preempted_run

ONE_EPOCH = [*TINY, "--epochs", "1"]


class Probe:
    """A stand-in observer that records its calls."""

    def __init__(self) -> None:
        self.calls: list[Any] = []
        self.closed = False

    def hook(self, value: Any) -> None:
        self.calls.append(value)

    def close(self) -> None:
        self.closed = True


def warnings_in(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records
            if record.levelno >= logging.WARNING and record.name.startswith("bsrnn")]


def fail(error: BaseException) -> Callable[..., None]:
    def raising(*args: Any, **kwargs: Any) -> None:
        raise error
    return raising


def test_an_observer_that_fails_warns_once_is_switched_off_and_still_closed(caplog: pytest.LogCaptureFixture) -> None:
    probe = Probe()
    observer = Observer("the probe", lambda: probe)
    observer.notify(Probe.hook, 1)
    observer.notify(fail(RuntimeError("stack expects each tensor to be equal size\nmore")))
    observer.notify(Probe.hook, 2)  # not reached: switched off
    observer.notify(fail(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))))
    observer.close()
    assert probe.calls == [1] and probe.closed and not observer.active
    (warning,) = warnings_in(caplog)
    assert "the probe failed and is switched off" in warning and "training and the checkpoints go on" in warning
    assert "RuntimeError: stack expects each tensor to be equal size" in warning and "more" not in warning


def test_an_observer_not_asked_for_or_failing_to_start_ignores_every_call(caplog: pytest.LogCaptureFixture) -> None:
    off = Observer[Probe]("nothing")
    off.notify(Probe.hook, 1)
    off.close()
    assert not off.active and warnings_in(caplog) == []
    broken = Observer[Probe]("the broken probe", fail(OSError(errno.EACCES, "Permission denied", "/runs/x")))
    broken.notify(Probe.hook, 1)
    broken.close()
    assert broken.failure == "Permission denied: /runs/x"
    assert len(warnings_in(caplog)) == 1


def test_ctrl_c_and_exit_are_not_observer_failures() -> None:
    observer = Observer("the probe", Probe)
    with pytest.raises(KeyboardInterrupt):
        observer.notify(fail(KeyboardInterrupt()))
    with pytest.raises(SystemExit):
        observer.notify(fail(SystemExit(3)))
    assert observer.active


def close_then_fail(self: TensorBoardLog) -> None:
    """The writer is closed (no thread left behind), then the close reports a full disk."""
    self._writer.close()
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


FAILURES: dict[str, tuple[type, str, Callable[..., None]]] = {
    "tensorboard-start": (TensorBoardLog, "__init__", fail(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))),
    "tensorboard-pesq-wait": (TensorBoardLog, "waited_for_pesq", fail(ZeroDivisionError("division by zero"))),
    "tensorboard-step": (TensorBoardLog, "step", fail(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))),
    "tensorboard-validation": (TensorBoardLog, "validation", fail(RuntimeError("stack expects each tensor"))),
    "tensorboard-close": (TensorBoardLog, "close", close_then_fail),
    "status.json": (StatusFile, "record", fail(ValueError("a bug in the status writer"))),
}


@pytest.mark.parametrize("where", list(FAILURES))
def test_a_failing_observer_costs_one_warning_and_nothing_of_the_training(
        where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("tensorboard", reason="install the test extra: pip install -e '.[test]'")
    from bsrnn.cli.main import main

    owner, name, replacement = FAILURES[where]
    monkeypatch.setattr(owner, name, replacement)
    run_dir = tmp_path / "run"
    assert main(["train", *ONE_EPOCH, "--tensorboard", "--run-dir", str(run_dir)]) == 0
    assert checkpoint(run_dir)["epoch"] == 0 and (run_dir / "checkpoint_best.pt").is_file()  # the epoch is saved
    assert len(events(run_dir, "completed")) == 1
    (warning,) = warnings_in(caplog)
    observer = "status.json" if owner is StatusFile else "TensorBoard logs"
    assert f"{observer} failed and is switched off" in warning, warning
    assert warning in (run_dir / LOG_NAME).read_text()
    if owner is StatusFile:
        assert not (run_dir / "status.json").exists()  # off from the first event on
    else:
        assert json.loads((run_dir / "status.json").read_text())["state"] == "completed"


@pytest.mark.parametrize(("kind", "saved"), [("step", {"epoch": -1, "step_in_epoch": 3, "global_step": 3}),
                                             ("epoch", {"epoch": 0, "step_in_epoch": 0, "global_step": 6})])
def test_a_metrics_log_that_cannot_be_written_stops_the_run_only_after_saving_what_it_trained(
        kind: str, saved: dict[str, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The log is a record, not an observer: its failure stops the run (exit 1), but the steps
    and the validation done so far are in checkpoint_last.pt, not lost with the line."""
    from bsrnn.cli.main import main
    from bsrnn.training.run_files import RunFiles, RunFilesError

    real_event = RunFiles.event

    def full_disk_at(self: RunFiles, event_kind: str, /, **fields: Any) -> None:
        if event_kind == kind and fields.get("step", 3) == 3:
            raise RunFilesError(self.run_dir / "metrics.jsonl", OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
                                f"Training stopped before the {event_kind} event could be logged.")
        real_event(self, event_kind, **fields)

    monkeypatch.setattr(RunFiles, "event", full_disk_at)
    run_dir = tmp_path / "run"
    assert main(["train", *ONE_EPOCH, "--run-dir", str(run_dir)]) == 1
    assert "No space left on device" in capsys.readouterr().err
    state = checkpoint(run_dir)
    assert {key: int(state[key]) for key in saved} == saved


def test_status_json_says_failed_when_training_dies_of_an_exception(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bsrnn.cli.main import main

    def broken_validation(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("validation blew up")

    monkeypatch.setattr(trainer_module, "validate", broken_validation)
    run_dir = tmp_path / "run"
    started = time.time()
    with pytest.raises(RuntimeError, match="validation blew up"):
        main(["train", *ONE_EPOCH, "--run-dir", str(run_dir)])
    status = json.loads((run_dir / "status.json").read_text())
    assert (status["state"], status["error"]) == ("failed", "RuntimeError: validation blew up")
    assert (status["pid"], status["host"]) == (os.getpid(), socket.gethostname())
    assert started - 1 <= status["heartbeat"] <= time.time() + 1
    assert (status["global_step"], status["epochs_completed"]) == (6, 0)  # the six steps of epoch 0, none saved


@pytest.mark.slow
def test_status_json_says_stopped_with_the_signal_after_a_preemption(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    preempted_run(run_dir, 2, *ONE_EPOCH)
    status = json.loads((run_dir / "status.json").read_text())
    assert (status["state"], status["signal"], status["last_event"]) == ("stopped", "SIGTERM", "preempted")
    assert status["host"] == socket.gethostname() and status["pid"] != os.getpid()
    assert status["last_save"]["global_step"] == status["global_step"] >= 2
    assert not (run_dir / TENSORBOARD_DIR).exists()
