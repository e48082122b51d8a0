"""The checkpoint file: a plain ``torch.save`` zip whose archive comment holds a SHA-256 digest.

Why the zip comment: a checkpoint must open with plain ``torch.load(path, weights_only=True)``
(SPEC section 4), so the digest cannot wrap the file; and it must cover every byte, because
torch does not check the zip CRCs on load and a flipped byte anywhere (tensor data, pickle,
zip headers) must be detected. The zip format ends with an end-of-central-directory record
(EOCD) whose last field is a comment of any length, which torch and ``zipfile`` accept. So:

    file   = zip bytes as torch wrote them, up to the EOCD's comment-length field
             + comment length (2 bytes, little endian) + comment
    comment = b"bsrnn-checkpoint v1 sha256=" + 64 hex digits
    digest = SHA-256 of everything before the comment-length field

Verification reads the file once, checks the EOCD signature and comment, recomputes the
digest, and only then unpickles (with ``weights_only=True``) from the bytes it verified, so
no byte that was not checked is ever used.

Verified writes (``write_checkpoint(..., verify=True)``, what ``CheckpointManager`` does with
``verify_writes``): each piece ``torch.save`` produces is written to the file, read back through
the same descriptor and compared byte for byte with what ``torch.save`` produced, and the digest
is computed over those read-back bytes; the trailer is read back and compared too, and the file
size must equal the bytes written. So the digest in the trailer is the digest of the file as
the kernel holds it, and it equals the digest of what ``torch.save`` produced. Like the earlier
whole-file re-read after fsync (which read the same page cache), this checks the write path
(short or misplaced writes, the trailer, the file's length), not the disk medium: that is what
the digest check at every load is for. Piecewise comparison replaced the re-read because the
re-read cost a second full SHA-256 pass and a second copy of the file (about half a save).

Speed (measured in ``benchmarks/checkpoint_io.py``): SHA-256 runs in a worker thread in both
directions (``hashlib`` releases the GIL on large buffers), so it overlaps writing and reading
instead of adding to them; writeback to the disk is started while later pieces are still being
produced, so the final fsync has little left to do; and loading hands the verified buffer to
``torch.load`` without first copying it into a ``BytesIO``.
"""

from __future__ import annotations

import hashlib
import io
import mmap
import os
import pickle
import queue
import stat
import struct
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch

from bsrnn.checkpoint.atomic import WRITEBACK_EVERY, start_writeback
from bsrnn.checkpoint.errors import (
    CheckpointCorruptError,
    CheckpointForeignError,
    CheckpointNotFoundError,
    CheckpointWriteError,
)

FORMAT_NAME = "bsrnn-checkpoint"
FORMAT_VERSION = 1
_MAGIC = b"bsrnn-checkpoint v1 sha256="
_COMMENT_LENGTH = len(_MAGIC) + 64
_EOCD_SIGNATURE = b"PK\x05\x06"
_EOCD_SIZE = 22  # fixed part of the end-of-central-directory record, comment length included
TRAILER_SIZE = _EOCD_SIZE + _COMMENT_LENGTH
Buffer = bytes | bytearray | mmap.mmap  # what verified bytes are held in

# Pieces of this size are written, read back and hashed one at a time: large enough that the
# per-piece system calls cost nothing, small enough that hashing overlaps the next piece's write.
_PIECE = 4 * 1024 * 1024
_READ_BACK_BUFFERS = 4  # read-back buffers in flight between the writer and the hashing thread


class _BackgroundHasher:
    """SHA-256 of a sequence of buffers, hashed in submission order by a worker thread.

    Why a thread: ``hashlib`` releases the GIL for buffers over 2 KiB, so the digest is computed
    on another core while the caller writes or reads the next piece; a save or a load then costs
    about the slower of I/O and hashing rather than their sum. Each submitted buffer may come
    with a ``release`` callback, run once the buffer has been hashed (to recycle it).
    """

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self._queue: queue.SimpleQueue[tuple[Any, Callable[[], None] | None] | None] = queue.SimpleQueue()
        self._error: Exception | None = None
        self._thread = threading.Thread(target=self._run, name="bsrnn-checkpoint-sha256", daemon=True)
        self._thread.start()

    def submit(self, data: bytes | memoryview, release: Callable[[], None] | None = None) -> None:
        self._queue.put((data, release))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            data, release = item
            try:
                if self._error is None:
                    self._sha.update(data)
            except Exception as error:  # reported by hexdigest(); the loop must go on recycling buffers
                self._error = error
            finally:
                if isinstance(data, memoryview):
                    data.release()
                if release is not None:
                    release()

    def stop(self) -> None:
        """Finish hashing what was submitted and end the thread (idempotent)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def hexdigest(self) -> str:
        self.stop()
        if self._error is not None:
            raise self._error
        return self._sha.hexdigest()


class _TrailerWriter(io.RawIOBase):
    """A write-only stream for ``torch.save`` that holds back the zip's last bytes.

    The final ``_EOCD_SIZE`` bytes (the EOCD) are held back so that ``finish`` can set the
    comment length and append the digest comment; everything before them goes to ``_emit``.
    """

    def __init__(self) -> None:
        super().__init__()
        self._tail = bytearray()
        self.error: Exception | None = None  # the cause of a failed write (torch hides it)

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        size = len(view)
        try:
            if size >= _EOCD_SIZE:
                self._emit(bytes(self._tail))
                self._tail.clear()
                self._emit(view[: size - _EOCD_SIZE])
                self._tail += view[size - _EOCD_SIZE :]
            else:
                self._tail += view
                overflow = len(self._tail) - _EOCD_SIZE
                if overflow > 0:
                    self._emit(bytes(self._tail[:overflow]))
                    del self._tail[:overflow]
        except (OSError, CheckpointWriteError) as error:  # torch turns it into a vague RuntimeError
            self.error = self.error or error
            raise
        return size

    def _emit(self, data: bytes | memoryview) -> None:
        raise NotImplementedError

    def _held_back_eocd(self) -> bytes:
        eocd = bytes(self._tail)
        if len(eocd) != _EOCD_SIZE or not eocd.startswith(_EOCD_SIGNATURE) or eocd[-2:] != b"\0\0":
            raise RuntimeError("torch.save did not end with a comment-less zip EOCD record")
        return eocd

    @staticmethod
    def _trailer(eocd: bytes, hexdigest: str) -> bytes:
        return eocd[:-2] + struct.pack("<H", _COMMENT_LENGTH) + _MAGIC + hexdigest.encode()


class _DigestingWriter(_TrailerWriter):
    """Hashes what passes through into any binary stream (no read-back: the sink may not read)."""

    def __init__(self, sink: BinaryIO) -> None:
        super().__init__()
        self._sink = sink
        self._digest = hashlib.sha256()

    def _emit(self, data: bytes | memoryview) -> None:
        if len(data):
            self._digest.update(data)
            self._sink.write(data)

    def finish(self) -> str:
        """Write the EOCD with its comment; return the hex digest."""
        eocd = self._held_back_eocd()
        self._digest.update(eocd[:-2])
        hexdigest = self._digest.hexdigest()
        self._sink.write(self._trailer(eocd, hexdigest))
        return hexdigest

    def close_pipeline(self) -> None:
        """Nothing runs in the background here (same interface as ``_FileWriter``)."""


class _FileWriter(_TrailerWriter):
    """Writes straight to a file descriptor; with ``verify``, reads every piece back and compares.

    Pieces go to the descriptor with ``os.write`` at its current offset. With ``verify``, each
    piece is read back with ``preadv`` into one of a few recycled buffers, compared byte for byte
    with ``torch.save``'s bytes (``bytearray.startswith`` is a ``memcmp``), and that read-back
    copy is what the background thread hashes, so the comparison and the digest cover the bytes
    the file holds. Without ``verify`` the source bytes are hashed in the background instead,
    and each ``write`` waits for its own bytes to be hashed (torch may reuse them on return).
    Every ``WRITEBACK_EVERY`` bytes the kernel is told to start writing the dirty pages to the
    disk, so the caller's final fsync does not start from a whole file of dirty pages.
    """

    def __init__(self, sink: BinaryIO, verify: bool) -> None:
        super().__init__()
        if verify and not sink.readable():
            raise ValueError("a verified write needs a sink opened for reading too (mode 'xb+' or 'wb+')")
        sink.flush()
        self._fd = sink.fileno()
        self._offset = os.lseek(self._fd, 0, os.SEEK_CUR)
        self._written_back = self._offset
        self._verify = verify
        self._buffers: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        if verify:
            for _ in range(_READ_BACK_BUFFERS):
                self._buffers.put(bytearray(_PIECE))
        self._hasher = _BackgroundHasher()  # last: nothing after it can fail and leave it running

    def _emit(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        for start in range(0, len(view), _PIECE):
            self._write_piece(view[start : start + _PIECE], hash_it=True)

    def _write_piece(self, piece: memoryview, hash_it: bool) -> None:
        size = len(piece)
        hashed: threading.Event | None = None
        if hash_it and not self._verify:  # hash the source while it is being written
            hashed = threading.Event()
            self._hasher.submit(piece[:], hashed.set)
        try:
            remaining = piece
            while remaining:
                written = os.write(self._fd, remaining)
                if written <= 0:  # a regular file never does this; do not spin if one does
                    raise CheckpointWriteError(f"write() stored nothing at offset {self._offset + size - len(remaining)}")
                remaining = remaining[written:]
        finally:
            if hashed is not None:
                hashed.wait()  # the piece belongs to torch.save, which may reuse it once we return
        if self._verify:
            self._read_back_and_compare(piece, hash_it)
        self._offset += size
        if self._offset - self._written_back >= WRITEBACK_EVERY:
            start_writeback(self._fd, self._written_back, self._offset - self._written_back)
            self._written_back = self._offset

    def _read_back_and_compare(self, piece: memoryview, hash_it: bool) -> None:
        size = len(piece)
        if not hasattr(os, "preadv"):  # platforms without preadv: a fresh bytes object per piece
            read_back = os.pread(self._fd, size, self._offset)
            if read_back != piece.tobytes():
                raise self._mismatch(size, len(read_back))
            if hash_it:
                self._hasher.submit(read_back)
            return
        buffer = self._buffers.get()  # waits while the hashing thread holds every buffer
        target = memoryview(buffer)[:size]
        handed_over = False
        try:
            got = os.preadv(self._fd, [target], self._offset)
            if got != size or not buffer.startswith(piece):  # startswith: a memcmp of the first `size` bytes
                raise self._mismatch(size, got)
            if hash_it:
                self._hasher.submit(target, lambda: self._buffers.put(buffer))
                handed_over = True
        finally:
            if not handed_over:
                target.release()
                self._buffers.put(buffer)

    def _mismatch(self, size: int, got: int) -> CheckpointWriteError:
        if got != size:
            return CheckpointWriteError(f"only {got} of {size} bytes written at offset {self._offset} could be read back")
        return CheckpointWriteError(f"the {size} bytes read back at offset {self._offset} differ from those written")

    def finish(self) -> str:
        """Write the EOCD with its comment (read back and compared too); return the hex digest."""
        eocd = self._held_back_eocd()
        self._hasher.submit(eocd[:-2])
        hexdigest = self._hasher.hexdigest()
        self._write_piece(memoryview(self._trailer(eocd, hexdigest)), hash_it=False)
        if self._verify:
            size = os.fstat(self._fd).st_size
            if size != self._offset:
                raise CheckpointWriteError(f"the file holds {size} bytes, {self._offset} were written")
        return hexdigest

    def close_pipeline(self) -> None:
        """End the hashing thread, whatever happened (idempotent)."""
        self._hasher.stop()


def write_checkpoint(payload: dict[str, Any], sink: BinaryIO, verify: bool = False) -> str:
    """Serialize ``payload`` with ``torch.save`` into ``sink`` with the digest trailer.

    Returns the hex digest. The caller owns flushing/fsyncing ``sink``. A real file (with a
    ``fileno``) is written through its descriptor, hashing in a background thread; with
    ``verify`` (which needs the file opened for reading too) every piece is read back and
    compared, and the digest is computed over the read-back bytes (see the module docstring).
    A ``CheckpointWriteError`` says the file does not hold what was written.
    """
    writer: _DigestingWriter | _FileWriter
    if _is_file(sink):
        writer = _FileWriter(sink, verify)
    elif verify:
        raise ValueError("a verified write needs a real file opened for reading and writing")
    else:
        writer = _DigestingWriter(sink)
    try:
        try:
            torch.save(payload, writer)
        except RuntimeError as error:
            if writer.error is not None:
                raise writer.error from error
            raise
        return writer.finish()
    finally:
        writer.close_pipeline()


def _is_file(sink: BinaryIO) -> bool:
    """A file object backed by a descriptor of a regular file (not a BytesIO or a pipe)."""
    if not isinstance(sink, (io.FileIO, io.BufferedWriter, io.BufferedRandom)):
        return False
    try:
        return stat.S_ISREG(os.fstat(sink.fileno()).st_mode)
    except (OSError, ValueError):
        return False


@dataclass(frozen=True)
class VerifiedBytes:
    """A checkpoint's bytes whose digest matched (a private buffer nothing else writes to)."""

    path: Path
    data: Buffer
    digest: str


def read_verified_bytes(path: Path | str) -> VerifiedBytes:
    """Read a checkpoint and check its digest; raise if it is missing, damaged or foreign."""
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFoundError([path])
    if path.is_dir():
        raise CheckpointForeignError(path, "it is a directory, not a file")
    try:
        data, digest = _read_hashing(path)
    except OSError as error:
        raise CheckpointCorruptError(path, f"cannot be read ({error.strerror or error})") from error
    return VerifiedBytes(path, data, _check_digest(path, data, digest))


def _read_hashing(path: Path) -> tuple[Buffer, str | None]:
    """The file's bytes and the SHA-256 of all but its last ``_COMMENT_LENGTH + 2`` bytes.

    The file is read piece by piece into one buffer while the background thread hashes the
    pieces already read, so hashing overlaps reading. The digest is None when it does not
    apply (a file shorter than the trailer) or when the file changed size while being read;
    ``_check_digest`` then computes it over the bytes returned.
    """
    with open(path, "rb", buffering=0) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size < TRAILER_SIZE:
            return handle.readall(), None
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)  # larger readahead
        hashed_end = size - _COMMENT_LENGTH - 2
        data = _private_buffer(size)
        view = memoryview(data)
        hasher = _BackgroundHasher()
        offset = 0
        try:
            while offset < size:
                count = handle.readinto(view[offset : offset + _PIECE])
                if not count:
                    break
                if offset < hashed_end:
                    hasher.submit(view[offset : min(offset + count, hashed_end)])
                offset += count
            complete = offset == size and not handle.read(1)
        finally:
            hasher.stop()
            view.release()
        digest = hasher.hexdigest()
        if not complete:  # the file changed size under us: read it again whole, hash it the slow way
            handle.seek(0)
            return handle.readall(), None
    return data, digest


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


def _check_digest(path: Path, data: Buffer, actual: str | None = None) -> str:
    """Check the trailer and the digest (``actual`` if already computed); return the digest."""
    size = len(data)
    if size == 0:
        raise CheckpointCorruptError(path, "the file is empty (0 bytes)")
    if size < TRAILER_SIZE:
        raise _damaged_or_foreign(path, data, f"only {size} bytes, shorter than the integrity trailer (truncated)")
    trailer = bytes(data[-TRAILER_SIZE:])
    comment = trailer[_EOCD_SIZE:]
    if not trailer.startswith(_EOCD_SIGNATURE):
        raise _damaged_or_foreign(path, data, "the end of the file is not a checkpoint trailer (truncated?)")
    (declared,) = struct.unpack("<H", trailer[_EOCD_SIZE - 2 : _EOCD_SIZE])
    if declared != _COMMENT_LENGTH or not comment.startswith(_MAGIC):
        raise _damaged_or_foreign(path, data, "the integrity trailer is malformed")
    recorded = comment[len(_MAGIC) :].decode("ascii", errors="replace")
    if actual is None:
        actual = hashlib.sha256(memoryview(data)[: size - _COMMENT_LENGTH - 2]).hexdigest()
    if actual != recorded:
        raise CheckpointCorruptError(
            path, f"content hash mismatch (recorded sha256 {recorded[:16]}..., actual {actual[:16]}...)"
        )
    return actual


def _damaged_or_foreign(path: Path, data: Buffer, damage: str) -> Exception:
    """A file without a valid trailer: foreign only when it is positively something else.

    A complete zip (its end-of-central-directory record intact, no comment) is another tool's
    torch file or an old per-epoch file; a file starting like a raw pickle is a pickle. Anything
    else, a truncated or overwritten checkpoint of ours included, is reported as damaged.
    """
    head = bytes(data[:2])
    tail = bytes(data[-_EOCD_SIZE:])
    if head[:1] == b"\x80" and head != b"PK":
        return CheckpointForeignError(path, "a raw pickle without a bsrnn integrity trailer")
    if len(data) >= _EOCD_SIZE and tail.startswith(_EOCD_SIGNATURE) and tail[-2:] == b"\0\0":
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
    return unpickle(verified.path, verified.data, map_location), verified.digest


def unpickle(path: Path, data: Buffer, map_location: Any = "cpu") -> dict[str, Any]:
    """``torch.load(weights_only=True)`` of verified bytes; refuse non-checkpoints.

    The bytes are read through ``_BufferReader`` rather than ``io.BytesIO``, which would first
    copy a ``bytearray`` or a mapping whole: ``torch.load`` copies each tensor once, into its
    own storage. (Tensors that alias the verified buffer instead would save that copy, but
    ``torch.load`` offers it only as ``mmap=True`` on a path, and one surviving tensor would
    then keep the whole file's memory alive: the optimizer state aliases what it loads.)
    """
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
        raise CheckpointForeignError(
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


def write_file_durably(path: Path, write: Callable[[BinaryIO], Any]) -> Any:
    """Create ``path`` (must not exist), let ``write`` fill it, then flush and fsync it.

    The file is opened for reading too (``xb+``) so that ``write`` can read back what it wrote.
    """
    with open(path, "xb+") as handle:
        result = write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    return result
