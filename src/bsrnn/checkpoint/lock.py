"""One writer per run directory.

Two ``bsrnn train`` processes on the same run directory would interleave saves and each would
overwrite the other's progress. The writer takes an exclusive ``flock`` on ``RUN_DIR/.lock``
and writes its PID there; a second writer is refused with the holder's PID. ``flock`` is
released by the kernel when the holder dies, so a lock left by a killed process is taken over
without any stale-lock guessing.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from bsrnn.checkpoint.errors import CheckpointError

LOCK_NAME = ".lock"


class RunDirectoryBusyError(CheckpointError):
    """Another live process is writing to this run directory."""


class RunDirectoryLock:
    """An exclusive, crash-safe lock on a run directory (released on close or process death)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunDirectoryLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunDirectoryBusyError(
                f"Run directory {self.path.parent} is in use by another bsrnn process (PID {holder}). "
                "Wait for it to finish or stop it, or choose another --run-dir."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None
