"""The run directory's human files: ``config.toml``, ``metrics.jsonl`` and ``train.log``.

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
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from bsrnn.checkpoint import read_index
from bsrnn.config import Config, to_toml
from bsrnn.errors import RunFailedError, UserError

log = logging.getLogger(__name__)

CONFIG_NAME = "config.toml"
METRICS_NAME = "metrics.jsonl"
LOG_NAME = "train.log"
STATUS_NAME = "status.json"
_TEMPORARY = re.compile(r"^\.(config\.toml|status\.json)\.\d+\.tmp$")
_STATES = {"start": "training", "resume": "training", "step": "training", "epoch": "training",
           "nonfinite": "training", "preempted": "preempted", "completed": "completed", "stopped": "stopped"}
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
    """``os.open`` for the run directory's own files: never through a symbolic link.

    A link planted in the run directory (``metrics.jsonl -> ~/.bashrc``) would otherwise have
    the trainer append to whatever it points at. Refused with a message saying what to do.
    """
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UserError(
                f"{path} is a symbolic link; the run directory's files are never written through links. "
                "Remove the link (or choose another --run-dir) and run again."
            ) from error
        raise


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
        self._status: dict[str, Any] = {}
        self._status_failed = False
        if enabled:
            metrics = run_dir / METRICS_NAME
            try:
                run_dir.mkdir(parents=True, exist_ok=True)
                self._remove_config_temporaries()
                self._metrics_fd = open_in_run_dir(metrics, os.O_RDWR | os.O_APPEND | os.O_CREAT)
                _drop_torn_last_line(self._metrics_fd, metrics)
                self._log_handler = _TrainLogHandler(run_dir / LOG_NAME, encoding="utf-8")
            except OSError as error:
                self.close()
                raise RunFilesError(Path(error.filename or metrics), error, "Nothing was trained.") from error
            except UserError:
                self.close()
                raise
            self._log_handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
            self._log_handler.setLevel(logging.INFO)
            logging.getLogger("bsrnn").addHandler(self._log_handler)

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
        self._update_status(record)

    def _update_status(self, record: dict[str, Any]) -> None:
        """Rewrite ``status.json``: where the run stands, for ``cat`` on a cluster login node.

        Derived from the event just logged and the checkpoint engine's index (last save, best),
        so it never disagrees with them. Replaced atomically (temporary + rename: a reader never
        sees half a file); not fsynced, since it is a view, rebuilt at the next event. A failure
        to write it warns once and never stops training.
        """
        status = self._status
        status["state"] = _STATES.get(record["event"], status.get("state", "training"))
        status["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(record["time"]))
        status["last_event"] = record["event"]
        for key in ("epoch", "global_step", "steps_per_s", "eta", "loss", "val_loss", "val_pesq", "signal"):
            if key in record:
                status[key] = record[key]
        entries = read_index(self.run_dir)
        for kind, name in (("last", "last_save"), ("best", "best")):
            if kind in entries:
                entry = entries[kind]
                status[name] = {"file": entry.file, "epoch": entry.epoch, "global_step": entry.global_step,
                                "created": entry.created, **({"metric": entry.metric} if kind == "best" else {})}
        path = self.run_dir / STATUS_NAME
        temporary = path.with_name(f".{STATUS_NAME}.{os.getpid()}.tmp")
        try:
            fd = open_in_run_dir(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            with open(fd, "w", encoding="utf-8") as handle:
                json.dump(status, handle, indent=1, default=str)
                handle.write("\n")
            os.replace(temporary, path)
        except (OSError, UserError) as error:
            temporary.unlink(missing_ok=True)
            if not self._status_failed:
                self._status_failed = True
                log.warning("Could not update %s (%s); training goes on", path, getattr(error, "strerror", None) or error)

    def close(self) -> None:
        if self._metrics_fd is not None:
            os.close(self._metrics_fd)
            self._metrics_fd = None
        if self._log_handler is not None:
            logging.getLogger("bsrnn").removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None


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


def read_metrics_log(run_dir: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """Every event of a run in order, and the numbers of the lines that did not parse (torn
    writes): the one reader of ``metrics.jsonl`` (``bsrnn plot``, the tests and the torture
    campaigns use it)."""
    path = Path(run_dir) / METRICS_NAME
    if not path.exists():
        return [], []
    events, torn = [], []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
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
