"""Writing a checkpoint: ``torch.save``'s zip followed by the digest trailer.

Why a module of its own: the write side (holding back the zip's EOCD, hashing in the
background, optional read-back verification, writeback, durable creation) is independent of
the read side; both share only the trailer layout (``trailer``) and the hasher (``hashing``).
The format and the reasons for verified writes are in ``fileformat``'s docstring.
"""

from __future__ import annotations

import io
import os
import queue
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

from bsrnn.checkpoint.atomic import WRITEBACK_EVERY, start_writeback
from bsrnn.checkpoint.errors import CheckpointWriteError
from bsrnn.checkpoint.hashing import PIECE_SIZE, BackgroundHasher
from bsrnn.checkpoint.trailer import DIGEST, EOCD_SIGNATURE, EOCD_SIZE, DigestAlgorithm, digest_algorithm

_READ_BACK_BUFFERS = 4  # read-back buffers in flight between the writer and the hashing thread


class _TrailerWriter(io.RawIOBase):
    """A write-only stream for ``torch.save`` that holds back the zip's last bytes.

    The final ``EOCD_SIZE`` bytes (the EOCD) are held back so that ``finish`` can set the
    comment length and append the digest comment; everything before them goes to ``_emit``.
    """

    def __init__(self, algorithm: DigestAlgorithm) -> None:
        super().__init__()
        self.algorithm = algorithm
        self._tail = bytearray()
        self.error: Exception | None = None  # the cause of a failed write (torch hides it)

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        size = len(view)
        try:
            if size >= EOCD_SIZE:
                self._emit(bytes(self._tail))
                self._tail.clear()
                self._emit(view[: size - EOCD_SIZE])
                self._tail += view[size - EOCD_SIZE :]
            else:
                self._tail += view
                overflow = len(self._tail) - EOCD_SIZE
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
        if len(eocd) != EOCD_SIZE or not eocd.startswith(EOCD_SIGNATURE) or eocd[-2:] != b"\0\0":
            raise RuntimeError("torch.save did not end with a comment-less zip EOCD record")
        return eocd

    def _trailer(self, eocd: bytes, hexdigest: str) -> bytes:
        return eocd[:-2] + self.algorithm.comment_field(hexdigest)


class _DigestingWriter(_TrailerWriter):
    """Hashes what passes through into any binary stream (no read-back: the sink may not read)."""

    def __init__(self, sink: BinaryIO, algorithm: DigestAlgorithm) -> None:
        super().__init__(algorithm)
        self._sink = sink
        self._digest = algorithm.new()

    def _emit(self, data: bytes | memoryview) -> None:
        if len(data):
            self._digest.update(data)
            self._sink.write(data)

    def finish(self) -> str:
        """Write the EOCD with its comment; return the labelled digest."""
        eocd = self._held_back_eocd()
        self._digest.update(eocd[:-2])
        hexdigest = self._digest.hexdigest()
        self._sink.write(self._trailer(eocd, hexdigest))
        return self.algorithm.label(hexdigest)

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

    def __init__(self, sink: BinaryIO, verify: bool, algorithm: DigestAlgorithm) -> None:
        super().__init__(algorithm)
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
                self._buffers.put(bytearray(PIECE_SIZE))
        self._hasher = BackgroundHasher(algorithm)  # last: nothing after it can fail and leave it running

    def _emit(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        for start in range(0, len(view), PIECE_SIZE):
            self._write_piece(view[start : start + PIECE_SIZE], hash_it=True)

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
        """Write the EOCD with its comment (read back and compared too); return the labelled digest."""
        eocd = self._held_back_eocd()
        self._hasher.submit(eocd[:-2])
        hexdigest = self._hasher.hexdigest()
        self._write_piece(memoryview(self._trailer(eocd, hexdigest)), hash_it=False)
        if self._verify:
            size = os.fstat(self._fd).st_size
            if size != self._offset:
                raise CheckpointWriteError(f"the file holds {size} bytes, {self._offset} were written")
        return self.algorithm.label(hexdigest)

    def close_pipeline(self) -> None:
        """End the hashing thread, whatever happened (idempotent)."""
        self._hasher.stop()


def write_checkpoint(
    payload: dict[str, Any], sink: BinaryIO, verify: bool = False, digest: str = DIGEST.name
) -> str:
    """Serialize ``payload`` with ``torch.save`` into ``sink`` with the digest trailer.

    Returns the labelled digest (``"xxh3-128:<hex>"``), as ``reading`` reports it for the file.
    ``digest`` names the algorithm (``trailer.DIGESTS``), and the trailer gets the version that
    algorithm belongs to. Only tests and tools pass another one than the default: with
    ``"sha256"`` the file has format 1's trailer, which proves that such files still load (the
    payload's own ``format_version`` is the caller's). The caller owns flushing/fsyncing
    ``sink``. A real file (with a ``fileno``) is written through its descriptor, hashing in a
    background thread; with ``verify`` (which needs the file opened for reading too) every piece
    is read back and compared, and the digest is computed over the read-back bytes (see
    ``fileformat``'s docstring). A ``CheckpointWriteError`` says the file does not hold what was
    written.
    """
    algorithm = digest_algorithm(digest)
    writer: _DigestingWriter | _FileWriter
    if _is_file(sink):
        writer = _FileWriter(sink, verify, algorithm)
    elif verify:
        raise ValueError("a verified write needs a real file opened for reading and writing")
    else:
        writer = _DigestingWriter(sink, algorithm)
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


def write_file_durably(path: Path, write: Callable[[BinaryIO], Any]) -> Any:
    """Create ``path`` (must not exist), let ``write`` fill it, then flush and fsync it.

    The file is opened for reading too (``xb+``) so that ``write`` can read back what it wrote.
    """
    with open(path, "xb+") as handle:
        result = write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    return result
