"""Reading a checkpoint: check its trailer and digest, then unpickle only the verified bytes.

Why a module of its own: the read side (reading while hashing in the background, telling a
damaged file from a foreign one, the weights-only unpickling of the verified buffer) is
independent of the write side; both share only the trailer layout (``trailer``) and the hasher
(``hashing``). The format is described in ``fileformat``'s docstring.
"""

from __future__ import annotations

import io
import mmap
import os
import pickle
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bsrnn.checkpoint.errors import (
    CheckpointCorruptError,
    CheckpointForeignError,
    CheckpointNewerFormatError,
    CheckpointNotFoundError,
    UnsafeTorchError,
)
from bsrnn.checkpoint.structure import check_structure
from bsrnn.checkpoint.hashing import PIECE_SIZE, BackgroundHasher
from bsrnn.checkpoint.trailer import (
    EOCD_SIGNATURE,
    EOCD_SIZE,
    FORMAT_NAME,
    FORMAT_VERSION,
    LONGEST_TRAILER,
    SHORTEST_TRAILER,
    Buffer,
    Trailer,
    find_trailer,
    short_digest,
    trailer_damage,
)


@dataclass(frozen=True)
class VerifiedBytes:
    """A checkpoint's bytes whose digest matched (a private buffer nothing else writes to).

    ``digest`` is labelled with its algorithm (``"xxh3-128:<hex>"``, ``"sha256:<hex>"``).
    """

    path: Path
    data: Buffer
    digest: str


@dataclass(frozen=True)
class _Hashed:
    """The digest computed while reading, and the trailer (algorithm, extent) it was computed for."""

    trailer: Trailer
    hexdigest: str


def read_verified_bytes(path: Path | str) -> VerifiedBytes:
    """Read a checkpoint and check its digest; raise if it is missing, damaged or foreign."""
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFoundError([path])
    if path.is_dir():
        raise CheckpointForeignError(path, "it is a directory, not a file")
    try:
        data, hashed = _read_hashing(path)
    except OSError as error:
        raise CheckpointCorruptError(path, f"cannot be read ({error.strerror or error})") from error
    return VerifiedBytes(path, data, _check_digest(path, data, hashed))


def file_kind(mode: int) -> str:
    """What a file of ``st_mode`` ``mode`` is, in words ("a FIFO"), for the messages of every
    command that reads only regular files: a FIFO blocks its reader, a device may never end."""
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def open_regular_file(path: Path) -> io.FileIO:
    """Open ``path`` for reading only if it is a regular file (checked on the open descriptor).

    A FIFO would block the reader forever and a link to ``/dev/zero`` would read until memory
    runs out; ``O_NONBLOCK`` makes opening a FIFO return at once so its type can be refused.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise CheckpointForeignError(path, f"it is {file_kind(mode)}, not a regular file")
    os.set_blocking(fd, True)
    return io.FileIO(fd, "rb", closefd=True)


def _read_hashing(path: Path) -> tuple[Buffer, _Hashed | None]:
    """The file's bytes and their digest, computed while reading, as the file's trailer asks.

    The trailer is read first (the last few dozen bytes) to learn the algorithm and what it
    covers; then the file is read piece by piece into one buffer while the background thread
    hashes the pieces already read, so hashing overlaps reading. No digest (None) when there
    is no well-formed trailer or when the file changed size while being read; ``_check_digest``
    then judges the bytes returned on their own, so only they are ever trusted.
    """
    with open_regular_file(path) as handle:
        size = os.fstat(handle.fileno()).st_size
        trailer = None
        if size >= SHORTEST_TRAILER:
            tail_size = min(size, LONGEST_TRAILER)
            trailer = find_trailer(os.pread(handle.fileno(), tail_size, size - tail_size), size)
        if trailer is None:
            return handle.readall(), None
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)  # larger readahead
        hashed_end = trailer.hashed_end
        data = _private_buffer(size)
        view = memoryview(data)
        hasher = BackgroundHasher(trailer.algorithm)
        offset = 0
        try:
            while offset < size:
                count = handle.readinto(view[offset : offset + PIECE_SIZE])
                if not count:
                    break
                if offset < hashed_end:
                    hasher.submit(view[offset : min(offset + count, hashed_end)])
                offset += count
            complete = offset == size and not handle.read(1)
        finally:
            hasher.stop()
            view.release()
        hexdigest = hasher.hexdigest()
        if not complete:  # the file changed size under us: read it again whole, hash it the slow way
            handle.seek(0)
            return handle.readall(), None
    return data, _Hashed(trailer, hexdigest)


def _private_buffer(size: int) -> bytearray | mmap.mmap:
    """A writable buffer of ``size`` bytes that only this process can change.

    A private anonymous mapping where there is one: its pages are zero-filled by the kernel
    as the read first touches them, while ``bytearray(size)`` first writes zeros over all of
    it (measured: about a third more CPU time for a 1 GiB read), and a shared mapping (the
    ``mmap`` module's default) would put the bytes in shmem, slower still. Unmapped at once
    when the last reference goes. (Transparent huge pages were measured too: 0.16 instead of
    0.6 CPU seconds per GiB when free huge pages are at hand, but 2-3 s on a VM that hands
    freed 2 MiB blocks back to its host; not requested, for predictability.)
    """
    if hasattr(mmap, "MAP_PRIVATE") and hasattr(mmap, "MAP_ANONYMOUS"):
        return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return bytearray(size)


def _check_digest(path: Path, data: Buffer, hashed: _Hashed | None = None) -> str:
    """Check the trailer and the digest of ``data``; return the labelled digest.

    The trailer is parsed again from ``data`` itself, and ``hashed`` (computed while reading)
    is used only if it was computed for that very trailer; otherwise the digest is computed now.
    """
    size = len(data)
    if size == 0:
        raise CheckpointCorruptError(path, "the file is empty (0 bytes)")
    tail = bytes(data[-LONGEST_TRAILER:])
    trailer = find_trailer(tail, size)
    if trailer is None:
        raise _damaged_or_foreign(path, data, trailer_damage(data))
    if hashed is not None and hashed.trailer == trailer:
        actual = hashed.hexdigest
    else:
        actual = trailer.algorithm.hexdigest(memoryview(data)[: trailer.hashed_end])
    if actual != trailer.recorded:
        raise CheckpointCorruptError(
            path,
            f"content hash mismatch (recorded {short_digest(trailer.recorded_label)}, "
            f"actual {short_digest(trailer.algorithm.label(actual))})",
        )
    return trailer.algorithm.label(actual)


def _damaged_or_foreign(path: Path, data: Buffer, damage: str) -> Exception:
    """A file without a valid trailer: foreign only when it is positively something else.

    A complete zip (its end-of-central-directory record intact, no comment) is another tool's
    torch file or an old per-epoch file; a file starting like a raw pickle is a pickle. Anything
    else, a truncated or overwritten checkpoint of ours included, is reported as damaged.
    """
    head = bytes(data[:2])
    tail = bytes(data[-EOCD_SIZE:])
    if head[:1] == b"\x80" and head != b"PK":
        return CheckpointForeignError(path, "a raw pickle without a bsrnn integrity trailer")
    if len(data) >= EOCD_SIZE and tail.startswith(EOCD_SIGNATURE) and tail[-2:] == b"\0\0":
        return CheckpointForeignError(
            path,
            "a torch/zip file without a bsrnn integrity trailer (another tool's checkpoint, or an "
            "old per-epoch file)",
            "Old gene_epoch_*/disc_epoch_* files can be converted with `bsrnn ckpt migrate`.",
        )
    return CheckpointCorruptError(path, damage)


def load_verified(path: Path | str, map_location: Any = "cpu") -> tuple[dict[str, Any], str]:
    """Verify and unpickle a checkpoint (``weights_only=True``); return (payload, digest)."""
    verified = read_verified_bytes(path)
    payload = unpickle(verified.path, verified.data, map_location)
    check_structure(verified.path, payload)
    return payload, verified.digest


SAFE_LOADER_TORCH = (2, 10)
"""The first torch whose ``weights_only`` loader is safe to point at an untrusted file: before 2.6 it
can be bypassed (CVE-2025-32434), before 2.10 it has a memory-safety bug (CVE-2026-24747)."""


def check_torch_loader(version: str = torch.__version__) -> None:
    """Refuse to unpickle anything on a torch whose weights-only loader is unsafe."""
    try:
        found = tuple(int(part) for part in version.split("+")[0].split(".")[:2])
    except ValueError:
        return  # a development build: it knows what it is
    if found < SAFE_LOADER_TORCH:
        raise UnsafeTorchError(
            f"torch {version} is installed, but loading checkpoints needs torch >= "
            f"{'.'.join(map(str, SAFE_LOADER_TORCH))}: older weights-only loaders can be made to run code "
            "(CVE-2025-32434) or corrupt memory (CVE-2026-24747). Upgrade torch (pip install -U torch)."
        )


def unpickle(path: Path, data: Buffer, map_location: Any = "cpu") -> dict[str, Any]:
    """``torch.load(weights_only=True)`` of verified bytes; refuse non-checkpoints.

    The bytes are read through ``_BufferReader`` rather than ``io.BytesIO``, which would first
    copy a ``bytearray`` or a mapping whole: ``torch.load`` copies each tensor once, into its
    own storage. (Tensors that alias the verified buffer instead would save that copy, but
    ``torch.load`` offers it only as ``mmap=True`` on a path, and one surviving tensor would
    then keep the whole file's memory alive: the optimizer state aliases what it loads.)
    """
    check_torch_loader()
    try:
        with _BufferReader(data) as stream:
            payload = torch.load(stream, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointForeignError(
            path, f"it needs arbitrary code to load, which is refused ({_first_line(error)})"
        ) from error
    except (RuntimeError, zipfile.BadZipFile, EOFError, ValueError) as error:
        raise CheckpointCorruptError(path, f"unreadable despite a matching hash ({_first_line(error)})") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise CheckpointForeignError(path, "its content is not a bsrnn checkpoint dictionary")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointNewerFormatError(
            path,
            f"format version {version!r} is newer than this bsrnn understands ({FORMAT_VERSION})",
            "Upgrade bsrnn to read it.",
        )
    return payload


class _BufferReader(io.RawIOBase):
    """A read-only, seekable stream over a buffer, sharing it instead of copying it."""

    def __init__(self, data: Buffer) -> None:
        super().__init__()
        self._view = memoryview(data)
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        target = memoryview(buffer).cast("B")
        count = max(0, min(len(target), len(self._view) - self._position))
        target[:count] = self._view[self._position : self._position + count]
        self._position += count
        return count

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self._view)}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._position = base + offset
        return self._position

    def tell(self) -> int:
        return self._position

    def close(self) -> None:
        if not self.closed:
            self._view.release()
        super().close()


def _first_line(error: BaseException) -> str:
    """The informative line of a torch.load error (for weights-only: the refused global)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    for line in lines:
        if line.startswith("WeightsUnpickler error:"):
            return line.removeprefix("WeightsUnpickler error:").strip().split(". ")[0]
    return lines[0] if lines else type(error).__name__
