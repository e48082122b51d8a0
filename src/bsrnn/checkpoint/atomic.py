"""The commit protocol: a file appears under its final name only once it is durable.

Write to a temporary file in the same directory, flush, fsync, rename over the final name
(atomic on POSIX), fsync the directory so the rename itself survives power loss. Until the
rename, the previous file under the final name is untouched; after it, the new one is complete.

Writers hand each stretch they have written to disk writeback at once (``start_writeback``),
so that the fsync finds little left to do; only the fsync makes anything durable.

Temporary names start with a dot and end in ``.partial`` so that no ``*.pt`` glob matches them.
They carry the writer's PID, which lets a later run tell a crash's leftover (the PID is gone)
from a live writer's file.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import re
import secrets
import shutil
import sys
from collections.abc import Callable, Collection
from pathlib import Path

log = logging.getLogger(__name__)

_TEMP_PATTERN = re.compile(r"^\.(?P<final>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.partial$")
SYNC_FILE_RANGE_WRITE = 2  # linux/fs.h: start writeback of dirty pages, do not wait
WRITEBACK_EVERY = 64 * 1024 * 1024  # writers start disk writeback after this many new bytes


def temporary_path(final_path: Path) -> Path:
    """A fresh temporary name beside ``final_path`` (same directory, so rename is atomic)."""
    token = secrets.token_hex(4)
    return final_path.with_name(f".{final_path.name}.{os.getpid()}.{token}.partial")


def fsync_directory(directory: Path) -> None:
    """Make renames and unlinks in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(temporary: Path, final_path: Path) -> None:
    """Atomically move an already-fsynced temporary file to its final name, durably."""
    os.replace(temporary, final_path)
    fsync_directory(final_path.parent)


_sync_file_range: Callable[[int, int, int, int], int] | None = None
_sync_file_range_checked = False


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask Linux to start writing ``[offset, offset + length)`` to the disk, without waiting.

    ``sync_file_range(SYNC_FILE_RANGE_WRITE)`` only queues writeback: durability still comes
    from the caller's fsync, which then finds most pages clean. Elsewhere this is a no-op.
    """
    global _sync_file_range, _sync_file_range_checked
    if not _sync_file_range_checked:
        _sync_file_range_checked = True
        if sys.platform.startswith("linux"):
            try:
                function = ctypes.CDLL(None, use_errno=True).sync_file_range
            except (OSError, AttributeError):
                function = None
            if function is not None:
                function.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
                function.restype = ctypes.c_int
                _sync_file_range = function
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE)  # a failure only loses the head start


def copy_durably(source: Path, destination: Path) -> None:
    """Copy ``source`` into ``destination`` (a new temporary file) as an independent file, fsynced.

    A real copy, never a hard link or symlink: the two checkpoints are each other's fallback,
    so damage to one must not reach the other. For the same reason not
    ``copy_file_range``, which may share extents (reflink) on btrfs or XFS. ``sendfile`` copies
    inside the kernel (one copy instead of two through a user buffer) and always duplicates
    the data; where it is missing or refused, a buffered copy is made instead.
    """
    with open(source, "rb") as src, open(destination, "xb") as dst:
        if not _sendfile_all(src.fileno(), dst.fileno(), os.fstat(src.fileno()).st_size):
            src.seek(0)
            dst.seek(0)
            dst.truncate()
            shutil.copyfileobj(src, dst, length=16 * 1024 * 1024)
        dst.flush()
        os.fsync(dst.fileno())


def _sendfile_all(source_fd: int, destination_fd: int, size: int) -> bool:
    """Copy ``size`` bytes with ``os.sendfile``; False if it is unavailable for these files.

    In ``WRITEBACK_EVERY`` chunks, each handed to disk writeback at once, so that the fsync
    that follows does not start from a whole file of dirty pages.
    """
    if not hasattr(os, "sendfile"):
        return False
    offset = 0
    while offset < size:
        try:
            sent = os.sendfile(destination_fd, source_fd, offset, min(size - offset, WRITEBACK_EVERY))
        except OSError as error:
            if offset == 0 and error.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                return False  # e.g. a kernel or file system without file-to-file sendfile
            raise
        if sent == 0:  # the source shrank: copy what is there, as a read loop would
            break
        start_writeback(destination_fd, offset, sent)
        offset += sent
    return True


def discard(path: Path) -> None:
    """Remove a temporary file if it exists (cleanup after a failed write)."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(directory: Path, exclusive: bool = False,
                             finals: Collection[str] | None = None) -> list[Path]:
    """Delete temporaries left by crashed writers and return them.

    With ``exclusive`` (the caller holds the run directory's lock, so no other writer can be
    live) every temporary goes; otherwise only those whose writer's PID no longer runs.
    ``finals``: only the temporaries of these file names (a writer about to write them).
    """
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    for entry in directory.iterdir():
        match = _TEMP_PATTERN.match(entry.name)
        if match is None or (finals is not None and match["final"] not in finals):
            continue
        if not exclusive and _process_alive(int(match["pid"])):
            continue
        discard(entry)
        removed.append(entry)
        log.info("Removed stale temporary file %s (left by an interrupted write)", entry)
    if removed:
        fsync_directory(directory)
    return removed
