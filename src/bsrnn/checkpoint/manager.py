"""``CheckpointManager``: the whole training state of one run directory, in two files.

The training loop registers named stateful objects (anything with ``state_dict`` and
``load_state_dict``) and calls ``save(metric=..., values=...)``; the manager writes
``checkpoint_last.pt`` every time and ``checkpoint_best.pt`` when the monitored metric strictly
improves. Both are complete, independent, verified files (README, "The checkpoint engine")::

    manager = CheckpointManager("runs/ab5", monitor="val_loss", mode="min")
    manager.register("model_state_dict", model)
    manager.register("optimizer_state_dict", optimizer)
    loaded = manager.find("auto")             # None on a fresh run directory
    if loaded:
        manager.restore(loaded)
    ...
    manager.save(metric=val_loss, values={"epoch": epoch, "val_loss": val_loss})
    manager.close()

Bookkeeping that must survive resumes lives in the file, not in loop variables: the monitored
name, mode, value and best; a save sequence number (which of two files is newer); the lineage
of resumes; creation time and library versions.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bsrnn.checkpoint import atomic
from bsrnn.checkpoint.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    CheckpointWriteError,
    StateMismatchError,
)
from bsrnn.checkpoint.fileformat import (
    FORMAT_NAME,
    FORMAT_VERSION,
    write_checkpoint,
    write_file_durably,
)
from bsrnn.checkpoint.loading import (
    BEST_NAME,
    LAST_NAME,
    LoadedCheckpoint,
    load_checkpoint,
)
from bsrnn.checkpoint.index import INDEX_NAME, IndexEntry, entry_for, read_index, write_index
from bsrnn.checkpoint.lock import LockLostError, RunDirectoryLock
from bsrnn.checkpoint.plain import is_finite_number, nonfinite_tensor_keys, to_weights_only_safe
from bsrnn.checkpoint.preserve import THIS_FILE, Accept, KeptState, keep_states_at_risk
from bsrnn.checkpoint.signals import block_in_this_thread, deferred_signals
from bsrnn.checkpoint.snapshot import StagingBuffers
from bsrnn.checkpoint.versions import library_versions, now_iso

log = logging.getLogger(__name__)

# Keys the manager writes itself; registered names and caller values may not use them.
ENGINE_KEYS = frozenset(
    {"format", "format_version", "monitor", "save_sequence", "created", "versions", "lineage", "registered"}
)


class Stateful(Protocol):
    def state_dict(self) -> Mapping[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any], /) -> Any: ...


@dataclass(frozen=True)
class RestoreResult:
    """What ``restore`` did besides loading state.

    ``missing``: registered names the checkpoint lacks (only with ``strict=False``).
    ``kept``: the states in ``checkpoint_last.pt``/``checkpoint_best.pt`` that the run does not
    continue, kept before any save can replace them (``preserve.keep_states_at_risk``).
    """

    missing: list[str]
    kept: list[KeptState]

    @property
    def superseded(self) -> Path | None:
        """Where a ``checkpoint_last.pt`` the run does not continue was kept (None if it was not)."""
        return next((state.kept_as for state in self.kept if state.original.name == LAST_NAME), None)


class NonFiniteStateError(CheckpointError):
    """A save was refused because state that must be finite holds NaN or inf."""


@dataclass(frozen=True)
class SaveResult:
    """What one ``save`` committed (for an async save: will commit; see ``wait_until_finished``)."""

    last: Path
    best: Path | None
    is_best: bool
    sequence: int


def _report_commit(on_commit: Callable[[SaveResult], None] | None, result: SaveResult) -> None:
    """Call ``on_commit``; its failure is logged, never turned into a failed save."""
    if on_commit is None:
        return
    try:
        on_commit(result)
    except Exception:
        log.exception("The callback after saving %s failed (the checkpoint itself is committed)", result.last)


class CheckpointManager:
    """Saves and restores registered state in ``run_dir``; see the module docstring.

    Args:
        run_dir: the run directory (created if missing when ``writer``).
        monitor: name of the monitored metric (recorded in every checkpoint).
        mode: ``"min"`` or ``"max"``: the direction in which the metric improves.
        async_save: ``save`` returns once tensors are copied to host memory; a background
            thread writes. The next ``save``/``close``/exit waits for it, and re-raises its error.
        writer: False for processes that only read (e.g. non-zero DDP ranks): no lock, no
            cleanup, and ``save`` refuses.
        verify_writes: read each piece back as it is written and compare it byte for byte; the
            digest is computed over the read-back bytes (see ``fileformat``), before any rename.
        lock: a ``RunDirectoryLock`` on ``run_dir`` that the caller already holds (a trainer takes
            it before it decides what to load); the caller releases it. Without one, a writer
            takes the lock itself here and releases it in ``close``.
        require_finite: registered names whose floating-point tensors must all be finite: a save
            that would commit NaN or inf there raises ``NonFiniteStateError`` and writes nothing,
            so the last good checkpoint is never replaced by a diverged one.
        accept: the caller's check of a payload it could resume from (see ``load_checkpoint``);
            ``find`` falls back from a file that fails it, and ``preserve`` quarantines one.
    """

    def __init__(
        self,
        run_dir: Path | str,
        monitor: str = "val_loss",
        mode: str = "min",
        async_save: bool = False,
        writer: bool = True,
        verify_writes: bool = True,
        lock: RunDirectoryLock | None = None,
        require_finite: Collection[str] = (),
        accept: Accept | None = None,
    ) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.run_dir = Path(run_dir)
        self.monitor = monitor
        self.mode = mode
        self.async_save = async_save
        self.writer = writer
        self.verify_writes = verify_writes
        self.require_finite = tuple(require_finite)
        self.accept = accept
        self.best_value: float | None = None
        self.best_digest: str | None = None  # the digest of the checkpoint_best.pt this run counts as its own
        self._states_kept = False  # keep_states_at_risk has run: once, before the first commit
        self.sequence = 0
        self._objects: dict[str, Stateful] = {}
        self._lineage: list[dict[str, Any]] = []
        self._index: dict[str, IndexEntry] = {}
        self._staging = StagingBuffers()
        self._thread: threading.Thread | None = None
        self._thread_error: BaseException | None = None
        self._owns_lock = lock is None
        self._lock = lock if lock is not None else RunDirectoryLock(self.run_dir)
        self.last_path = self.run_dir / LAST_NAME
        self.best_path = self.run_dir / BEST_NAME
        if writer:
            self._check_writable_layout()
            if self._owns_lock:
                self._lock.acquire()
            elif not self._lock.held or self._lock.run_dir.resolve() != self.run_dir.resolve():
                raise ValueError(f"lock must be a held RunDirectoryLock on {self.run_dir}")
            # A lock taken earlier (before a long resume scan) may be gone by now.
            self._lock.check_still_held(before="anything in the run directory is touched")
            atomic.remove_stale_temporaries(self.run_dir, exclusive=True)
            self._index = read_index(self.run_dir)
            atexit.register(self._close_at_exit)

    def _check_writable_layout(self) -> None:
        """Refuse, before any work, a run directory that is a file or a checkpoint name that is
        not a file: the first commit (an epoch of training later) would fail on it."""
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise CheckpointError(f"The run directory {self.run_dir} is a file, not a directory")
        for path in (self.last_path, self.best_path):
            if path.exists() and not path.is_file():
                kind = "a directory" if path.is_dir() else "not a regular file"
                raise CheckpointError(
                    f"{path} is {kind}, so no checkpoint can be saved there. Move it away and run again."
                )

    # ----------------------------------------------------------------------------- registry
    def register(self, name: str, obj: Stateful) -> None:
        """Save ``obj.state_dict()`` under ``name``; restore it with ``obj.load_state_dict``."""
        if name in ENGINE_KEYS:
            raise ValueError(f"{name!r} is reserved by the checkpoint engine")
        if not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
            raise TypeError(f"{name!r}: {type(obj).__name__} has no state_dict/load_state_dict")
        self._objects[name] = obj

    # ------------------------------------------------------------------------------ loading
    def find(self, which: str = "auto", map_location: Any = "cpu") -> LoadedCheckpoint | None:
        """The verified checkpoint to resume from, or None if the run directory has none yet."""
        try:
            return load_checkpoint(self.run_dir, which, map_location, accept=self.accept)
        except CheckpointNotFoundError:
            if which == "auto":
                return None
            raise

    def restore(self, loaded: LoadedCheckpoint, strict: bool = True) -> RestoreResult:
        """Apply a verified checkpoint to every registered object; adopt its bookkeeping.

        Reports the registered names the checkpoint lacks (with ``strict`` they raise instead).
        Before anything is applied, every state in ``checkpoint_last.pt``/``checkpoint_best.pt``
        that this run does not continue is kept (``preserve.keep_states_at_risk``: by content,
        whatever file ``loaded`` came from), so no save can destroy it.
        """
        # A registered name stored as None (e.g. a migrated file without optimizer state) is
        # as missing as an absent one.
        missing = [name for name in self._objects if loaded.payload.get(name) is None]
        if missing and strict:
            raise StateMismatchError(
                f"{loaded.path} lacks {', '.join(missing)}; it cannot restore this training state"
            )
        kept = self._keep_states_at_risk(loaded)
        for name, obj in self._objects.items():
            if name not in missing:
                try:
                    obj.load_state_dict(loaded.payload[name])
                except (RuntimeError, KeyError, ValueError, TypeError) as error:
                    raise StateMismatchError(f"{loaded.path}: cannot restore {name!r}: {error}") from error
        record = loaded.payload.get("monitor") or {}
        if record.get("name") == self.monitor and record.get("mode") == self.mode:
            self.best_value = record.get("best")
            named = record.get("best_digest")
            self.best_digest = loaded.digest if named == THIS_FILE else named
        elif record:
            log.warning(
                "The checkpoint monitored %s (%s); this run monitors %s (%s): the best so far starts afresh",
                record.get("name"), record.get("mode"), self.monitor, self.mode,
            )
        self.sequence = max(self.sequence, int(loaded.payload.get("save_sequence", 0)))
        self._lineage = list(loaded.payload.get("lineage", [])) + [_lineage_record(loaded)]
        return RestoreResult(missing, kept)

    def _keep_states_at_risk(self, continuing: LoadedCheckpoint | None) -> list[KeptState]:
        """Once per manager, before its first commit: see ``preserve``."""
        if not self.writer or self._states_kept:
            return []
        if continuing is not None and continuing.path.parent.resolve() != self.run_dir.resolve():
            continuing = None  # from another directory: nothing here is the state being continued
        self._lock.check_still_held()  # a copy is a write too
        kept = keep_states_at_risk(self.run_dir, continuing, self.accept)
        self._states_kept = True
        return kept

    # ------------------------------------------------------------------------------- saving
    def is_improvement(self, metric: Any) -> bool:
        """Strict improvement over the best so far in the monitored direction; never NaN/inf."""
        if not is_finite_number(metric):
            return False
        if self.best_value is None:
            return True
        return metric < self.best_value if self.mode == "min" else metric > self.best_value

    def save(self, metric: float | None = None, values: Mapping[str, Any] | None = None,
             on_commit: Callable[[SaveResult], None] | None = None) -> SaveResult:
        """Write ``checkpoint_last.pt`` (and ``checkpoint_best.pt`` if ``metric`` improves).

        ``values`` are plain top-level entries (epoch, losses, config dict, ...). ``metric`` None
        (a mid-epoch save) never touches best. ``on_commit`` is called once the files are
        durable (for an async save: in the writer thread, after the commit, never on failure),
        so that a "saved" message is never printed for a save that a crash could still undo.
        An exception from ``on_commit`` is logged and swallowed: the save itself succeeded, and
        a failed message must never fail (or block) a save.
        """
        if not self.writer:
            raise CheckpointError("this CheckpointManager was opened read-only (writer=False)")
        self.wait_until_finished()
        self._check_finite()
        self._keep_states_at_risk(None)  # a manager that restored nothing: keep what its first commit replaces
        metric = float(metric) if metric is not None else None
        is_best = self.is_improvement(metric)
        previous_best = self.best_value
        if is_best:
            self.best_value = metric
        self.sequence += 1
        payload = self._payload(metric, values or {}, is_best)
        result = SaveResult(self.last_path, self.best_path if is_best else None, is_best, self.sequence)
        if not self.async_save:
            try:
                self._commit(payload, is_best)
            except BaseException:
                self.best_value = previous_best
                raise
            _report_commit(on_commit, result)
            return result
        snapshot = self._staging.snapshot(payload)
        self._thread = threading.Thread(
            target=self._write_in_background, args=(snapshot, is_best, previous_best, result, on_commit),
            name="bsrnn-checkpoint-writer",
        )
        self._thread.start()
        return result

    def _check_finite(self) -> None:
        """Refuse to save NaN/inf in ``require_finite`` state, naming the first bad tensors."""
        bad = []
        for name in self.require_finite:
            obj = self._objects.get(name)
            if obj is not None:
                bad += [f"{name}[{key!r}]" for key in nonfinite_tensor_keys(obj.state_dict())]
        if bad:
            shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            raise NonFiniteStateError(
                f"Refusing to save: {shown} hold NaN or inf values. The committed checkpoints in "
                f"{self.run_dir} are unchanged. Resume from them with a lower learning rate, or check the data."
            )

    def _payload(self, metric: float | None, values: Mapping[str, Any], is_best: bool) -> dict[str, Any]:
        clashes = sorted((set(values) & set(self._objects)) | (set(values) & ENGINE_KEYS))
        if clashes:
            raise ValueError(f"values use names that are registered or reserved: {clashes}")
        payload: dict[str, Any] = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION}
        payload.update(to_weights_only_safe(dict(values), "values"))
        for name, obj in self._objects.items():
            payload[name] = to_weights_only_safe(obj.state_dict(), name)
        # best_digest: which checkpoint_best.pt this state counts as its own, so that a resume
        # from it can tell its own best (replaceable) from another state's (kept first).
        payload["monitor"] = {"name": self.monitor, "mode": self.mode, "value": metric, "best": self.best_value,
                              "best_digest": THIS_FILE if is_best else self.best_digest}
        payload.setdefault(f"best_{self.monitor}", self.best_value)
        payload["save_sequence"] = self.sequence
        payload["created"] = now_iso()
        payload["versions"] = library_versions()
        payload["lineage"] = list(self._lineage)
        payload["registered"] = list(self._objects)
        return payload

    def _write_in_background(self, snapshot: dict[str, Any], is_best: bool, previous_best: float | None,
                             result: SaveResult, on_commit: Callable[[SaveResult], None] | None) -> None:
        block_in_this_thread()
        try:
            self._commit(snapshot, is_best)
        except BaseException as error:  # re-raised in the caller's thread at the next call
            if is_best:
                self.best_value = previous_best
            self._thread_error = error
            return
        _report_commit(on_commit, result)

    def _commit(self, payload: dict[str, Any], is_best: bool) -> None:
        """Temp file (each piece read back and compared as it is written), fsync, (copy for best),
        rename, directory fsync."""
        temporaries = [atomic.temporary_path(self.last_path)]
        if is_best:
            temporaries.append(atomic.temporary_path(self.best_path))
        started = time.perf_counter()
        with deferred_signals():
            self._lock.check_still_held()  # before anything is written: see lock.py
            try:
                # verify: every piece is read back and compared as it is written, and the digest
                # is computed over the read-back bytes (fileformat's docstring).
                digest = write_file_durably(
                    temporaries[0], lambda handle: write_checkpoint(payload, handle, verify=self.verify_writes)
                )
                if is_best:
                    atomic.copy_durably(temporaries[0], temporaries[1])
                # Again before the renames, which are what would replace another trainer's files:
                # a large (or async) write takes seconds, in which the lock can be taken away.
                self._lock.check_still_held()
                # Best first: a crash between the renames leaves best ahead of last, and the
                # resumed run (from last) re-earns that best. The other order would leave a last
                # that believes in a best value that checkpoint_best.pt never received.
                if is_best:
                    atomic.commit(temporaries[1], self.best_path)
                atomic.commit(temporaries[0], self.last_path)
            except LockLostError:
                for temporary in temporaries:
                    atomic.discard(temporary)
                raise
            except (OSError, CheckpointError) as error:
                for temporary in temporaries:
                    atomic.discard(temporary)
                raise CheckpointWriteError(
                    f"Could not save {self.last_path}{' and ' + self.best_path.name if is_best else ''}: "
                    f"{getattr(error, 'strerror', None) or error}. The previously committed checkpoints "
                    "are intact. Free disk space (or raise the file-size limit) and resume."
                ) from error
        if is_best:
            self.best_digest = digest
        log.debug("Committed %s in %.3fs", self.last_path, time.perf_counter() - started)
        self._update_index(payload, digest, is_best)

    def _update_index(self, payload: Mapping[str, Any], digest: str, is_best: bool) -> None:
        """Record the commit in ``checkpoint_index.json``; a failure costs only the shortcut."""
        try:
            self._index["last"] = entry_for(self.last_path, digest, payload)
            if is_best:
                self._index["best"] = entry_for(self.best_path, digest, payload)
            write_index(self.run_dir, self._index)
        except OSError as error:
            log.warning("Could not update %s (%s); readers fall back to the checkpoints themselves",
                        INDEX_NAME, error.strerror or error)

    # ---------------------------------------------------------------------------- read side
    def latest(self) -> IndexEntry | None:
        """Where ``checkpoint_last.pt`` stands (step, epoch, metric), without loading it if the index
        still describes it; None in a run directory without one."""
        return self._entry("last")

    def best(self) -> IndexEntry | None:
        """Where ``checkpoint_best.pt`` stands; None before the first best."""
        return self._entry("best")

    def latest_step(self) -> int | None:
        entry = self.latest()
        return entry.global_step if entry is not None else None

    def best_step(self) -> int | None:
        entry = self.best()
        return entry.global_step if entry is not None else None

    def best_metric(self) -> float | None:
        entry = self.best()
        return entry.metric.get("value") if entry is not None else None

    def _entry(self, kind: str) -> IndexEntry | None:
        entry = read_index(self.run_dir).get(kind)
        if entry is not None:
            return entry
        try:
            loaded = load_checkpoint(self.run_dir, kind)
        except CheckpointNotFoundError:
            return None
        return entry_for(loaded.path, loaded.digest, loaded.payload)

    def wait_until_finished(self) -> None:
        """Block until an async save has committed; raise the error it hit, if any."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._thread_error is not None:
            error, self._thread_error = self._thread_error, None
            raise error

    def close(self) -> None:
        """Finish any pending save and release the run directory."""
        try:
            self.wait_until_finished()
        finally:
            if self._owns_lock:
                self._lock.release()
            atexit.unregister(self._close_at_exit)

    def _close_at_exit(self) -> None:
        try:
            self.close()
        except CheckpointError as error:
            log.error("The last asynchronous checkpoint save failed: %s", error)

    def __enter__(self) -> CheckpointManager:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _lineage_record(loaded: LoadedCheckpoint) -> dict[str, Any]:
    payload = loaded.payload
    return {
        "path": str(loaded.path.resolve()),
        "kind": loaded.kind,
        "digest": loaded.digest,  # labelled with its algorithm (lineage entries of format-1 runs say "sha256")
        "save_sequence": payload.get("save_sequence"),
        "epoch": payload.get("epoch"),
        "global_step": payload.get("global_step"),
        "created": payload.get("created"),
        "resumed_at": now_iso(),
        "versions": library_versions(),
    }
