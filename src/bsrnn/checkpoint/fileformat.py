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
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch

from bsrnn.checkpoint.errors import (
    CheckpointCorruptError,
    CheckpointForeignError,
    CheckpointNotFoundError,
)

FORMAT_NAME = "bsrnn-checkpoint"
FORMAT_VERSION = 1
_MAGIC = b"bsrnn-checkpoint v1 sha256="
_COMMENT_LENGTH = len(_MAGIC) + 64
_EOCD_SIGNATURE = b"PK\x05\x06"
_EOCD_SIZE = 22  # fixed part of the end-of-central-directory record, comment length included
TRAILER_SIZE = _EOCD_SIZE + _COMMENT_LENGTH


class _DigestingWriter(io.RawIOBase):
    """A write-only stream that hashes what passes through and holds back the zip's last bytes.

    ``torch.save`` streams to it; the final ``_EOCD_SIZE`` bytes (the EOCD) are held back so
    that ``finish`` can set the comment length and append the digest comment.
    """

    def __init__(self, sink: BinaryIO) -> None:
        super().__init__()
        self._sink = sink
        self._digest = hashlib.sha256()
        self._tail = bytearray()
        self.error: OSError | None = None

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        size = len(view)
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
        return size

    def _emit(self, data: bytes | memoryview) -> None:
        if len(data):
            self._digest.update(data)
            try:
                self._sink.write(data)
            except OSError as error:  # torch turns it into a vague RuntimeError: keep the cause
                self.error = self.error or error
                raise

    def finish(self) -> str:
        """Write the EOCD with its comment; return the hex digest."""
        eocd = bytes(self._tail)
        if len(eocd) != _EOCD_SIZE or not eocd.startswith(_EOCD_SIGNATURE) or eocd[-2:] != b"\0\0":
            raise RuntimeError("torch.save did not end with a comment-less zip EOCD record")
        self._digest.update(eocd[:-2])
        hexdigest = self._digest.hexdigest()
        self._sink.write(eocd[:-2] + struct.pack("<H", _COMMENT_LENGTH) + _MAGIC + hexdigest.encode())
        return hexdigest


def write_checkpoint(payload: dict[str, Any], sink: BinaryIO) -> str:
    """Serialize ``payload`` with ``torch.save`` into ``sink`` with the digest trailer.

    Returns the hex digest. The caller owns flushing/fsyncing ``sink``.
    """
    writer = _DigestingWriter(sink)
    try:
        torch.save(payload, writer)
    except RuntimeError as error:
        if writer.error is not None:
            raise writer.error from error
        raise
    return writer.finish()


@dataclass(frozen=True)
class VerifiedBytes:
    """A checkpoint's bytes whose digest matched."""

    path: Path
    data: bytes
    digest: str


def read_verified_bytes(path: Path | str) -> VerifiedBytes:
    """Read a checkpoint and check its digest; raise if it is missing, damaged or foreign."""
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFoundError([path])
    if path.is_dir():
        raise CheckpointForeignError(path, "it is a directory, not a file")
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise CheckpointCorruptError(path, f"cannot be read ({error.strerror or error})") from error
    return VerifiedBytes(path, data, _check_digest(path, data))


def _check_digest(path: Path, data: bytes) -> str:
    size = len(data)
    if size == 0:
        raise CheckpointCorruptError(path, "the file is empty (0 bytes)")
    if size < TRAILER_SIZE:
        raise _damaged_or_foreign(path, data, f"only {size} bytes, shorter than the integrity trailer (truncated)")
    trailer = data[-TRAILER_SIZE:]
    comment = trailer[_EOCD_SIZE:]
    if not trailer.startswith(_EOCD_SIGNATURE):
        raise _damaged_or_foreign(path, data, "the end of the file is not a checkpoint trailer (truncated?)")
    (declared,) = struct.unpack("<H", trailer[_EOCD_SIZE - 2 : _EOCD_SIZE])
    if declared != _COMMENT_LENGTH or not comment.startswith(_MAGIC):
        raise _damaged_or_foreign(path, data, "the integrity trailer is malformed")
    recorded = comment[len(_MAGIC) :].decode("ascii", errors="replace")
    actual = hashlib.sha256(memoryview(data)[: size - _COMMENT_LENGTH - 2]).hexdigest()
    if actual != recorded:
        raise CheckpointCorruptError(
            path, f"content hash mismatch (recorded sha256 {recorded[:16]}..., actual {actual[:16]}...)"
        )
    return actual


def _damaged_or_foreign(path: Path, data: bytes, damage: str) -> Exception:
    """A file without a valid trailer: foreign only when it is positively something else.

    A complete zip (its end-of-central-directory record intact, no comment) is another tool's
    torch file or an old per-epoch file; a file starting like a raw pickle is a pickle. Anything
    else, a truncated or overwritten checkpoint of ours included, is reported as damaged.
    """
    if data[:1] == b"\x80" and data[:2] != b"PK":
        return CheckpointForeignError(path, "a raw pickle without a bsrnn integrity trailer")
    if len(data) >= _EOCD_SIZE and data[-_EOCD_SIZE:].startswith(_EOCD_SIGNATURE) and data[-2:] == b"\0\0":
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


def unpickle(path: Path, data: bytes, map_location: Any = "cpu") -> dict[str, Any]:
    """``torch.load(weights_only=True)`` of verified bytes; refuse non-checkpoints."""
    try:
        payload = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
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


def _first_line(error: BaseException) -> str:
    """The informative line of a torch.load error (for weights-only: the refused global)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    for line in lines:
        if line.startswith("WeightsUnpickler error:"):
            return line.removeprefix("WeightsUnpickler error:").strip().split(". ")[0]
    return lines[0] if lines else type(error).__name__


def write_file_durably(path: Path, write: Callable[[BinaryIO], Any]) -> Any:
    """Create ``path`` (must not exist), let ``write`` fill it, then flush and fsync it."""
    with open(path, "xb") as handle:
        result = write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    return result
