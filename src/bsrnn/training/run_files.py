"""The run directory's human files: ``config.toml``, ``metrics.jsonl``, ``train.log``, ``status.json``.

Checkpoints belong to the engine; these are the trainer's own, written by rank 0 only.
``metrics.jsonl`` gets one JSON object per event (step logs, epoch evaluations, resumes,
preemptions), appended line by line, so a crash loses at most the line in flight;
a resumed run appends a ``resume`` event, after which steps beyond the checkpoint are logged
again (readers keep the last entry per ``global_step``).

What a full disk (or a file-size limit) must not do here (found by ``tools/torture.py diskfull``):

- ``config.toml``: a failed write stops the run with one clear line, not an ``OSError``
  traceback, and leaves no temporary behind; temporaries left by a killed process are removed
  by the next run (the run directory's lock holder).
- ``metrics.jsonl``: each event is one ``write`` of a whole line. If it fails, the file is cut
  back to its previous length and the run stops with a clear error: a line never goes missing
  silently, and a torn half-line is never left for the resumed run to append to. A torn last
  line left by a crash (or power loss) is dropped when the next run opens the file.
- ``train.log`` is a copy of the console: if it cannot be written, one warning says so and it
  stays incomplete (``metrics.jsonl`` and the checkpoints stop the run soon after anyway).
- ``status.json`` is an observer (``training/observers.py``): whatever goes wrong with it warns
  once and switches it off; training goes on.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import socket
import stat
import sys
import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from bsrnn.checkpoint import atomic, read_index
from bsrnn.checkpoint.reading import file_kind
from bsrnn.config import Config, to_toml
from bsrnn.errors import RunFailedError, UserError
from bsrnn.training.observers import Observer, describe_error

log = logging.getLogger(__name__)

CONFIG_NAME = "config.toml"
METRICS_NAME = "metrics.jsonl"
LOG_NAME = "train.log"
STATUS_NAME = "status.json"
RUN_FILE_NAMES: tuple[str, ...] = (CONFIG_NAME, METRICS_NAME, LOG_NAME, STATUS_NAME)
"""Every file this module keeps in a run directory (the checkpoint engine's are
``bsrnn.checkpoint``'s ``LAST_NAME``, ``BEST_NAME``, ``INDEX_NAME`` and the lock's ``LOCK_NAME``):
the one list that tools which must cover every file of a run (``tools/torture.py adversary``) read."""
_TEMPORARY = re.compile(r"^\.(config\.toml|status\.json)\.\d+\.tmp$")
_STATE_AFTER = {"preempted": "stopped", "stopped": "stopped", "completed": "completed"}
"""``status.json``'s state after an event; every other event says ``training``."""
_FINAL_STATES = ("completed", "stopped", "failed")
_EPOCHS_COMPLETED_AFTER = {"step": 0, "nonfinite": 0, "epoch": 1, "resume": 1, "stopped": 1, "completed": 1}
"""What to add to an event's ``epoch`` for the number of completed epochs: step and nonfinite
events name the epoch being trained, an epoch event the one just validated (its save follows at
once), resume, stopped and completed events the last completed one (-1 before the first)."""
_STATUS_FIELDS = ("global_step", "steps_per_s", "eta", "loss", "val_loss", "val_pesq", "signal", "reason")
_TAIL_CHUNK = 64 * 1024


class RunFilesError(RunFailedError):
    """``config.toml`` or ``metrics.jsonl`` could not be written; the checkpoints are intact."""

    def __init__(self, path: Path, error: OSError, what: str) -> None:
        reason = error.strerror or str(error)
        super().__init__(
            f"Could not write {path}: {reason}. {what} The checkpoints are intact. Free disk space "
            "(or raise the file-size limit) and resume."
        )


def open_in_run_dir(path: Path, flags: int, mode: int = 0o644) -> int:
    """``os.open`` for the run directory's own files: never through a symbolic link, and only
    ever a regular file.

    A link planted in the run directory (``metrics.jsonl -> ~/.bashrc``) would otherwise have
    the trainer append to whatever it points at. A FIFO would block the open (``train.log``) or
    every write once its buffer is full (``metrics.jsonl``), and a reader of ``config.toml``
    forever (found by ``tools/torture.py adversary``); a directory or a device cannot hold the
    file. Each is refused with a message saying what to do; ``O_NONBLOCK`` makes the open of a
    FIFO return at once so that its type can be checked on the descriptor.
    """
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UserError(
                f"{path} is a symbolic link; the run directory's files are never written through links. "
                "Remove the link (or choose another --run-dir) and run again."
            ) from error
        if error.errno in (errno.EISDIR, errno.ENXIO):  # a directory; a FIFO or socket opened for writing
            raise _not_a_regular_file(path, os.lstat(path).st_mode) from error
        raise
    file_mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(file_mode):
        os.close(fd)
        raise _not_a_regular_file(path, file_mode)
    os.set_blocking(fd, True)
    return fd


def _not_a_regular_file(path: Path, file_mode: int) -> UserError:
    return UserError(f"{path} is {file_kind(file_mode)}; the run directory's {path.name} must be a regular file. "
                     "Move it away (or choose another --run-dir) and run again.")


def _unshare_hard_link(path: Path) -> None:
    """Give ``path`` a file of its own if it is a hard link shared with another name.

    ``metrics.jsonl`` and ``train.log`` are appended to in place, so through a hard link every
    new line would also land in the other name's file: a snapshot made with ``cp -al`` or
    ``rsync --link-dest``, or another run's log (found by ``tools/torture.py adversary``). A
    durable copy renamed over the name leaves the other file exactly as it was.
    """
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(status.st_mode) or status.st_nlink < 2:
        return
    temporary = atomic.temporary_path(path)  # a killed run's is removed by the next one's checkpoint manager
    try:
        atomic.copy_durably(path, temporary)
        atomic.commit(temporary, path)
    except BaseException:
        atomic.discard(temporary)
        raise
    log.warning("%s was a hard link shared with %d other name(s); it is now a file of its own, and the "
                "other name(s) keep their content", path, status.st_nlink - 1)


class _TrainLogHandler(logging.FileHandler):
    """A ``FileHandler`` that reports its first write failure in one line, then stays quiet.

    logging's default prints a full traceback for every record that fails, which on a full disk
    buries the one error that matters under dozens of ``--- Logging error ---`` blocks.
    """

    failed = False

    def _open(self):  # noqa: ANN202 - logging's name and signature
        fd = open_in_run_dir(Path(self.baseFilename), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        return open(fd, "a", encoding=self.encoding, errors=self.errors)

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        if self.failed:
            return
        self.failed = True
        error = sys.exc_info()[1]
        reason = getattr(error, "strerror", None) or error
        print(f"WARNING: could not write {self.baseFilename} ({reason}); it is incomplete from here on",
              file=sys.stderr, flush=True)
        # Drop the stream now: its buffer holds what could not be written, and every later flush
        # (at close, at exit) would fail again with a traceback.
        stream, self.stream = self.stream, None
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass  # closing flushes the same unwritable buffer; the file is closed regardless


class RunFiles:
    def __init__(self, run_dir: Path, enabled: bool = True) -> None:
        self.run_dir = run_dir
        self.enabled = enabled
        self._metrics_fd: int | None = None
        self._log_handler: logging.Handler | None = None
        self.status: Observer[StatusFile] = Observer(STATUS_NAME)  # switched on once the files are open
        if enabled:
            metrics = run_dir / METRICS_NAME
            try:
                run_dir.mkdir(parents=True, exist_ok=True)
                self._remove_config_temporaries()
                for name in (METRICS_NAME, LOG_NAME):
                    _unshare_hard_link(run_dir / name)
                self._metrics_fd = open_in_run_dir(metrics, os.O_RDWR | os.O_APPEND | os.O_CREAT)
                _drop_torn_last_line(self._metrics_fd, metrics)
                # A file name that is not UTF-8 is logged with its escapes spelt out, never an error.
                self._log_handler = _TrainLogHandler(run_dir / LOG_NAME, encoding="utf-8", errors="backslashreplace")
            except OSError as error:
                self.close()
                raise RunFilesError(Path(error.filename or metrics), error, "Nothing was trained.") from error
            except UserError:
                self.close()
                raise
            self._log_handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
            self._log_handler.setLevel(logging.INFO)
            logging.getLogger("bsrnn").addHandler(self._log_handler)
            self.status = Observer(STATUS_NAME, partial(StatusFile, run_dir))

    def log_records(self, records: list[logging.LogRecord]) -> None:
        """Write records logged before ``train.log`` was open (the console already showed them)."""
        if self._log_handler is not None:
            for record in records:
                if record.levelno >= self._log_handler.level:
                    self._log_handler.handle(record)

    def _remove_config_temporaries(self) -> None:
        """Temporaries of config.toml and status.json left by a killed run (only the lock holder gets here)."""
        for entry in self.run_dir.iterdir():
            if _TEMPORARY.match(entry.name):
                entry.unlink(missing_ok=True)

    def write_config(self, config: Config) -> None:
        """Replace config.toml atomically (temp + rename), so it is never half-written."""
        if not self.enabled:
            return
        path = self.run_dir / CONFIG_NAME
        temporary = path.with_name(f".{CONFIG_NAME}.{os.getpid()}.tmp")
        try:
            fd = open_in_run_dir(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            with open(fd, "w", encoding="utf-8") as handle:
                handle.write(to_toml(config))
            os.replace(temporary, path)  # replaces a link named config.toml itself, never its target
        except OSError as error:
            temporary.unlink(missing_ok=True)
            if error.errno == errno.EISDIR:  # a folder named config.toml: no free space would help
                raise _not_a_regular_file(path, os.lstat(path).st_mode) from error
            raise RunFilesError(path, error, "Nothing was trained.") from error

    def event(self, kind: str, /, **fields: Any) -> None:
        """Append one event as one whole line, or stop the run with ``RunFilesError``."""
        if self._metrics_fd is None:
            return
        record = {"event": kind, "time": round(time.time(), 3)}
        record.update(fields)  # NaN/inf are written as NaN/Infinity, which json.loads reads back
        data = memoryview((json.dumps(record) + "\n").encode("utf-8"))
        size = os.fstat(self._metrics_fd).st_size
        try:
            while data:
                written = os.write(self._metrics_fd, data)
                if written == 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                data = data[written:]
        except OSError as error:
            try:  # no torn half-line for the resumed run to append to
                os.ftruncate(self._metrics_fd, size)
            except OSError as cut_error:
                log.warning("Could not cut back %s after a failed write: %s", METRICS_NAME, cut_error)
            raise RunFilesError(self.run_dir / METRICS_NAME, error,
                                f"Training stopped before the {kind} event could be logged.") from error
        self.status.notify(StatusFile.record, record)

    def close(self) -> None:
        """Close the files; if an exception is ending the run, ``status.json`` says so first.

        Called from the ``finally`` of whoever opened the files (``training.train``), so the
        exception in flight there, if any, is the one that ends this invocation: read with
        ``sys.exc_info()``, which keeps the callers free of status code. A run that already
        ended (completed, stopped) keeps that state.
        """
        ending = sys.exc_info()[1]
        if ending is not None:
            self.status.notify(StatusFile.ended_by, ending)
        self.status.close()
        if self._metrics_fd is not None:
            os.close(self._metrics_fd)
            self._metrics_fd = None
        if self._log_handler is not None:
            logging.getLogger("bsrnn").removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None


class StatusFile:
    """``status.json``: where the run stands, for ``cat`` on a cluster login node.

    Rewritten after every ``metrics.jsonl`` event (each logged step, at least every
    ``log_seconds``; each validation; the end) from that event and the checkpoint engine's index
    (last save, best), so it never disagrees with them. Replaced atomically (temporary + rename:
    a reader never sees half a file); not fsynced, since it is a view, rebuilt at the next event.

    ``state`` is ``training``, ``completed``, ``stopped`` (``reason`` max_steps, or the
    ``signal`` that asked for the save-and-exit), or ``failed`` (``error``: the exception's line).
    A trainer killed without a chance to write (SIGKILL, the out-of-memory killer, a lost node)
    leaves ``training``: ``pid``, ``host`` and ``heartbeat`` (Unix time of the last write) let a
    reader tell it from a live one. ``epochs_completed`` counts whole epochs trained and validated.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / STATUS_NAME
        self._status: dict[str, Any] = {"state": "training", "pid": os.getpid(), "host": socket.gethostname()}

    def record(self, event: Mapping[str, Any]) -> None:
        """Take in one ``metrics.jsonl`` event and rewrite the file."""
        kind = event["event"]
        status = self._status
        status["state"] = _STATE_AFTER.get(kind, "training")
        status["last_event"] = kind
        if kind == "start":
            status["epochs_completed"] = 0
        elif kind in _EPOCHS_COMPLETED_AFTER and isinstance(event.get("epoch"), int):
            status["epochs_completed"] = event["epoch"] + _EPOCHS_COMPLETED_AFTER[kind]
        for key in _STATUS_FIELDS:
            if key in event:
                status[key] = event[key]
        self._write()

    def ended_by(self, error: BaseException) -> None:
        """The invocation ends with ``error`` in flight: ``failed`` with its line, ``stopped`` for
        Ctrl-C outside the preemption guard. A state already final stays (the error came after)."""
        status = self._status
        if status["state"] in _FINAL_STATES:
            return
        if isinstance(error, KeyboardInterrupt):
            status.update(state="stopped", signal="SIGINT")
        else:
            status.update(state="failed", error=describe_error(error)[:1000])
        self._write()

    def _write(self) -> None:
        status = self._status
        now = time.time()
        status["heartbeat"] = round(now, 3)
        status["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(now))
        entries = read_index(self.path.parent)
        for kind, name in (("last", "last_save"), ("best", "best")):
            if kind in entries:
                entry = entries[kind]
                status[name] = {"file": entry.file, "epoch": entry.epoch, "global_step": entry.global_step,
                                "created": entry.created, **({"metric": entry.metric} if kind == "best" else {})}
        temporary = self.path.with_name(f".{STATUS_NAME}.{os.getpid()}.tmp")
        try:
            fd = open_in_run_dir(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            with open(fd, "w", encoding="utf-8") as handle:
                json.dump(status, handle, indent=1, default=str)
                handle.write("\n")
            os.replace(temporary, self.path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise

    def close(self) -> None:
        """Nothing is held open between writes."""


def _drop_torn_last_line(fd: int, path: Path) -> None:
    """Cut a last line that has no newline (a write interrupted by a crash) off the file."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    end = size
    while end > 0:
        start = max(end - _TAIL_CHUNK, 0)
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            keep = start + newline + 1
            break
        end = start
    else:
        keep = 0
    os.ftruncate(fd, keep)
    log.warning("%s ended in a torn line (%d bytes, from an interrupted write); dropped it", path, size - keep)


def read_metrics_log(run_dir: Path, start: int = 0) -> tuple[list[dict[str, Any]], list[int]]:
    """Every event of a run in order, and the numbers of the lines that are not JSON objects (torn
    writes, damage): the one reader of ``metrics.jsonl`` (``bsrnn plot``, the demo, the tests and
    the torture campaigns use it). ``start``: a byte offset to read from (what one process appended
    after it; line numbers then count from there)."""
    path = Path(run_dir) / METRICS_NAME
    if not path.exists():
        return [], []
    events, torn = [], []
    with open(path, encoding="utf-8", errors="replace") as handle:
        handle.seek(start)
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                event = None
            if isinstance(event, dict):
                events.append(event)
            else:  # not JSON, or JSON but not an event (``5``, ``"x"``: a damaged file)
                torn.append(number)
    return events, torn


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Every event of a run, in order; torn lines are skipped with a warning naming them."""
    events, torn = read_metrics_log(run_dir)
    if torn:
        log.warning("%s line(s) %s are not JSON events (torn writes?); skipped", Path(run_dir) / METRICS_NAME,
                    ", ".join(map(str, torn)))
    return events


def losses_by_step(events: list[dict[str, Any]]) -> dict[int, tuple[float, float]]:
    """The last logged (loss, disc_loss) of every global step: a resumed run logs the steps it
    trains again after its checkpoint, and the later entry is the one its weights descend from."""
    return {e["global_step"]: (e["loss"], e["disc_loss"]) for e in events if e.get("event") == "step"}
