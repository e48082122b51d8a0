"""One writer per run directory, decided before anything is read.

Two trainers on one run directory are the normal case on a cluster, not an exotic one: a
requeued job often starts while its predecessor is still shutting down. If the second one read
the checkpoint first and asked for the lock afterwards, it would wait out the first and then
commit its older state over the newer one. So the lock is the first thing a writer takes, and
everything that decides what to load happens while it is held (ARCHITECTURE.md, "life of a
resume"). A second writer is refused at once, naming the holder's PID; it never waits.

The lock is an exclusive ``flock`` on ``RUN_DIR/.lock``, released by the kernel when the
holder dies, so a lock left by a killed process is taken over without stale-lock guessing.

Two details keep that promise honest:

- ``flock`` belongs to the open file description, which ``fork`` shares: a data-loading worker
  forked while the lock is held would otherwise keep the run directory locked for seconds after
  the trainer is killed. Every held lock's descriptor is closed in forked children (closing a
  shared descriptor in the child drops the child's reference without unlocking the parent), and
  the descriptor is not inherited across ``exec``.
- ``.lock`` is opened without following links: a symlink planted there is refused, never
  written through.
- The lock is the file we hold, not the name: if ``.lock`` is deleted or replaced while we hold
  it, a second trainer can lock the new file and both would commit, alternating older and
  newer states. So a writer calls ``check_still_held`` before every commit: the name must
  still lead to the file it locked (same device and inode), or it stops before committing.
  For the same reason ``acquire`` checks the name after its ``flock`` and locks again if the
  file it locked was deleted meanwhile (``remove``: a folder that keeps no ``.lock`` when done).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from pathlib import Path

from bsrnn.checkpoint.atomic import fsync_directory
from bsrnn.checkpoint.errors import CheckpointError

LOCK_NAME = ".lock"
_ATTEMPTS = 5
"""Tries to lock ``.lock`` when its holder keeps deleting it between our open and our flock."""
_HELD: set[RunDirectoryLock] = set()  # held locks, for the fork hook (strong: held until released)


class RunDirectoryBusyError(CheckpointError):
    """Another live process is writing to this run directory."""


class LockLostError(CheckpointError):
    """``.lock`` no longer names the file this process locked: another trainer may be writing."""


def _close_in_forked_child() -> None:
    """After ``fork``: drop the child's references to the parent's locks (never unlock them)."""
    for lock in list(_HELD):
        lock.forget_in_child()


os.register_at_fork(after_in_child=_close_in_forked_child)


class RunDirectoryLock:
    """An exclusive, crash-safe lock on a run directory (released on close or process death).

    ``acquire`` creates the directory if needed. Use it as a context manager or call
    ``release``; releasing twice is harmless.
    """

    def __init__(self, run_dir: Path | str) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunDirectoryLock:
        if self._fd is not None:
            return self
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise CheckpointError(
                f"Cannot create the run directory {self.run_dir}: {error.strerror or error} "
                f"({error.filename or self.run_dir}). Choose a --run-dir in a writable folder."
            ) from error
        for _ in range(_ATTEMPTS):
            fd = self._open_and_lock()
            if self._names(fd):
                break
            os.close(fd)  # the holder removed .lock between our open and our flock: lock the new one
        else:
            raise CheckpointError(f"Cannot lock the run directory {self.run_dir}: {self.path} keeps being "
                                  "removed and created again by another process.")
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        _HELD.add(self)
        return self

    def _open_and_lock(self) -> int:
        """``.lock`` opened (never through a link) and flocked; busy: ``RunDirectoryBusyError``."""
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as error:
            raise CheckpointError(self._cannot_open(error)) from error
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise CheckpointError(
                    f"{self.path} is not a regular file, so the run directory cannot be locked. Move it away "
                    "and run again."
                )
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunDirectoryBusyError(
                    f"Run directory {self.run_dir} is in use by another bsrnn process (PID {_holder(fd)}). "
                    "Nothing was read or written. Wait for it to finish or stop it, or choose another --run-dir."
                ) from None
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _names(self, fd: int) -> bool:
        """Whether ``.lock`` still leads to the file open as ``fd`` (same device and inode)."""
        held = os.fstat(fd)
        try:
            named = os.lstat(self.path)
        except FileNotFoundError:
            return False
        return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)

    def _cannot_open(self, error: OSError) -> str:
        if error.errno == errno.ELOOP:
            return (f"{self.path} is a symbolic link; the run directory's files are never written through "
                    "links. Remove the link and run again.")
        if error.errno == errno.EISDIR:
            return f"{self.path} is a directory, so the run directory cannot be locked. Move it away and run again."
        if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return (f"Cannot write in the run directory {self.run_dir} ({error.strerror}). Choose a writable "
                    "--run-dir.")
        return f"Cannot lock the run directory {self.run_dir}: {error.strerror or error}."

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        _HELD.discard(self)

    def remove(self) -> None:
        """Delete ``.lock``, then release it: for a folder that should not keep the file once the
        work is done (a prepared corpus).

        Deleted while still held, and only if the name still leads to the file we locked: a
        process that opened the old file meanwhile gets its flock only after the release, then
        finds the name gone (``acquire`` checks) and locks a new file; so two writers never
        hold two different files at once. Deleting after the release could remove the file that
        such a process had just locked.
        """
        if self._fd is not None and self._names(self._fd):
            self.path.unlink()
            fsync_directory(self.run_dir)
        self.release()

    def forget_in_child(self) -> None:
        """In a forked child: close the inherited descriptor without unlocking the parent's lock."""
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None
        _HELD.discard(self)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def check_still_held(self, before: str = "this save") -> None:
        """Raise ``LockLostError`` unless ``.lock`` is still the file this process locked.

        Compared by identity (device and inode of the open descriptor against the name, not
        followed), so a deleted, renamed-over or recreated ``.lock`` is caught; nothing is
        written first, so every commit made before stays as it was.
        """
        if self._fd is None:
            raise LockLostError(f"{self.path}: this process holds no lock on {self.run_dir}")
        if not self._names(self._fd):
            found = "is gone" if not os.path.lexists(self.path) else "is another file now"
            raise LockLostError(
                f"{self.path} {found}: the run directory's lock was removed or replaced while this trainer "
                f"(PID {os.getpid()}) held it, so another trainer may be writing to {self.run_dir}. Stopping "
                f"before {before}; the checkpoints committed before are unchanged. Make sure only one trainer "
                "runs on this directory, then resume it."
            )

    def __enter__(self) -> RunDirectoryLock:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _holder(fd: int) -> str:
    """The PID the holder wrote; it writes just after locking, so look twice before 'unknown'."""
    for _ in range(3):
        text = os.pread(fd, 64, 0).decode(errors="replace").strip()
        if text:
            return text
        time.sleep(0.02)
    return "unknown"
