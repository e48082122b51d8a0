"""The commit protocol: a file appears under its final name only once it is durable.

Write to a temporary file in the same directory, flush, fsync, rename over the final name
(atomic on POSIX), fsync the directory so the rename itself survives power loss. Until the
rename, the previous file under the final name is untouched; after it, the new one is complete.

Temporary names start with a dot and end in ``.partial`` so that no ``*.pt`` glob matches them
(SPEC section 3). They carry the writer's PID, which lets a later run tell a crash's leftover
(the PID is gone) from a live writer's file.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

_TEMP_PATTERN = re.compile(r"^\.(?P<final>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.partial$")


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


def copy_durably(source: Path, destination: Path) -> None:
    """Copy ``source`` into ``destination`` (a new temporary file) as an independent file, fsynced.

    A real copy, never a hard link or symlink: the two checkpoints are each other's fallback,
    so damage to one must not reach the other (SPEC section 3).
    """
    with open(source, "rb") as src, open(destination, "xb") as dst:
        shutil.copyfileobj(src, dst, length=16 * 1024 * 1024)
        dst.flush()
        os.fsync(dst.fileno())


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


def remove_stale_temporaries(directory: Path, exclusive: bool = False) -> list[Path]:
    """Delete temporaries left by crashed writers and return them.

    With ``exclusive`` (the caller holds the run directory's lock, so no other writer can be
    live) every temporary goes; otherwise only those whose writer's PID no longer runs.
    """
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    for entry in directory.iterdir():
        match = _TEMP_PATTERN.match(entry.name)
        if match is None:
            continue
        if not exclusive and _process_alive(int(match["pid"])):
            continue
        discard(entry)
        removed.append(entry)
        log.info("Removed stale temporary file %s (left by an interrupted save)", entry)
    if removed:
        fsync_directory(directory)
    return removed
