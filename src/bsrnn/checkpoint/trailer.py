"""The checkpoint format's constants: its name and version, its digest algorithms, the trailer layout.

Why a module of its own: the writer (``writing``), the reader (``reading``) and the index
(``index``) must agree on every byte of the trailer, so all take its layout from here;
``fileformat`` describes the format and re-exports these names. See ``fileformat``'s docstring
for the layout itself and for why each digest was chosen.

Each digest algorithm belongs to one trailer version, and the trailer names both
(``bsrnn-checkpoint v2 xxh3-128=``): a file says which algorithm verifies it, so files of every
version listed in ``DIGESTS`` stay readable after the default changes. ``DIGESTS`` is the one
place that lists them; ``FORMAT_VERSION`` picks the one new files are written with.
"""

from __future__ import annotations

import hashlib
import mmap
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import xxhash

FORMAT_NAME = "bsrnn-checkpoint"
FORMAT_VERSION = 2  # written by this code: the payload's "format_version" and the trailer's version
EOCD_SIGNATURE = b"PK\x05\x06"
EOCD_SIZE = 22  # fixed part of the end-of-central-directory record, comment length included
Buffer = bytes | bytearray | mmap.mmap  # what verified bytes are held in


class Hasher(Protocol):
    """The part of ``hashlib``'s interface the engine uses (``xxhash`` objects have it too)."""

    def update(self, data: bytes | memoryview, /) -> None: ...

    def hexdigest(self) -> str: ...


@dataclass(frozen=True)
class DigestAlgorithm:
    """One digest a checkpoint trailer can carry, and the trailer version that carries it.

    ``new`` must release the GIL on large buffers (``hashlib`` and ``xxhash`` do), so that the
    background hashing thread overlaps the caller's writing or reading.
    """

    name: str  # as written in the trailer, in labelled digests and by `bsrnn ckpt inspect/verify`
    trailer_version: int
    hex_length: int  # hex digits of the digest in the trailer
    new: Callable[[], Hasher]

    @property
    def magic(self) -> bytes:
        """The comment's fixed start, e.g. ``b"bsrnn-checkpoint v2 xxh3-128="``."""
        return f"{FORMAT_NAME} v{self.trailer_version} {self.name}=".encode("ascii")

    @property
    def comment_length(self) -> int:
        return len(self.magic) + self.hex_length

    @property
    def trailer_size(self) -> int:
        """The EOCD record with its comment: the bytes a file of this version ends with."""
        return EOCD_SIZE + self.comment_length

    def hexdigest(self, data: bytes | memoryview) -> str:
        """The digest of ``data`` in one call (for small buffers and for files read whole)."""
        hasher = self.new()
        hasher.update(data)
        return hasher.hexdigest()

    def label(self, hexdigest: str) -> str:
        """A digest that says its algorithm (``"xxh3-128:<hex>"``): what the engine returns and records.

        Why labelled: the digest travels (index, lineage, bundles, messages) without the file,
        and two digests of different algorithms must never look comparable.
        """
        return f"{self.name}:{hexdigest}"

    def comment_field(self, hexdigest: str) -> bytes:
        """What replaces a comment-less EOCD's last two bytes: comment length, magic, hex digest."""
        if len(hexdigest) != self.hex_length:
            raise ValueError(f"a {self.name} digest has {self.hex_length} hex digits, got {len(hexdigest)}")
        return struct.pack("<H", self.comment_length) + self.magic + hexdigest.encode("ascii")


# Every digest a trailer may carry, oldest first. SHA-256: files of format 1 (written before
# 2026-12). xxh3-128: format 2 on (about 9.5 GB/s per core against SHA-256's 1.4 with SHA-NI on
# the VM of BENCHMARKS.md; the digest guards against corruption, not forgery: ``fileformat``).
# XXH3's output is frozen since xxHash 0.8.0 (bundled by python-xxhash since 2.0).
DIGESTS: tuple[DigestAlgorithm, ...] = (
    DigestAlgorithm("sha256", trailer_version=1, hex_length=64, new=hashlib.sha256),
    DigestAlgorithm("xxh3-128", trailer_version=2, hex_length=32, new=xxhash.xxh3_128),
)
DIGEST = next(algorithm for algorithm in DIGESTS if algorithm.trailer_version == FORMAT_VERSION)
"""The algorithm new files are written with."""

# The trailer of files written now (``tools/torture`` aims its edge cases at it).
MAGIC = DIGEST.magic
COMMENT_LENGTH = DIGEST.comment_length
TRAILER_SIZE = DIGEST.trailer_size
SHORTEST_TRAILER = min(algorithm.trailer_size for algorithm in DIGESTS)
LONGEST_TRAILER = max(algorithm.trailer_size for algorithm in DIGESTS)


def digest_algorithm(name: str) -> DigestAlgorithm:
    """The algorithm called ``name`` (``"sha256"``, ``"xxh3-128"``); ``ValueError`` for others."""
    for algorithm in DIGESTS:
        if algorithm.name == name:
            return algorithm
    raise ValueError(f"unknown checkpoint digest {name!r}; known: {', '.join(a.name for a in DIGESTS)}")


@dataclass(frozen=True)
class Trailer:
    """A well-formed trailer found at the end of a file: its algorithm and the digest it records."""

    algorithm: DigestAlgorithm
    recorded: str  # as found in the file (not necessarily hex digits, if the file is damaged)
    hashed_end: int  # the digest covers the file's bytes [0, hashed_end): all but comment length and comment

    @property
    def recorded_label(self) -> str:
        return self.algorithm.label(self.recorded)


def find_trailer(tail: bytes, file_size: int) -> Trailer | None:
    """The trailer that a file of ``file_size`` bytes ending with ``tail`` carries, or None.

    ``tail`` is the file's last ``LONGEST_TRAILER`` bytes (all of it, if shorter). A trailer is
    recognised only whole: the EOCD signature where this version's trailer starts, the comment
    length this version writes and its magic. At most one version can match, since a comment
    is ASCII and the signature is not.
    """
    for algorithm in DIGESTS:
        size = algorithm.trailer_size
        if len(tail) < size or file_size < size:
            continue
        candidate = tail[-size:]
        (declared,) = struct.unpack("<H", candidate[EOCD_SIZE - 2 : EOCD_SIZE])
        comment = candidate[EOCD_SIZE:]
        if candidate.startswith(EOCD_SIGNATURE) and declared == algorithm.comment_length and comment.startswith(
            algorithm.magic
        ):
            recorded = comment[len(algorithm.magic) :].decode("ascii", errors="replace")
            return Trailer(algorithm, recorded, file_size - algorithm.comment_length - 2)
    return None


def trailer_damage(data: Buffer) -> str:
    """Why the file ``data`` ends with no trailer that ``find_trailer`` accepts, in words for a message.

    Looks for the zip's EOCD record where any comment could put it: a complete EOCD whose
    comment names the format but fits no version listed here may come from a newer bsrnn as
    well as from damage, and the message says so rather than guess.
    """
    size = len(data)
    if size < SHORTEST_TRAILER:
        return f"only {size} bytes, shorter than the integrity trailer (truncated)"
    window = bytes(data[-(EOCD_SIZE + 0xFFFF) :])  # the longest zip comment is 65,535 bytes
    start = window.rfind(EOCD_SIGNATURE)
    if start < 0 or len(window) - start < EOCD_SIZE:
        return "the end of the file is not a checkpoint trailer (truncated?)"
    (declared,) = struct.unpack("<H", window[start + EOCD_SIZE - 2 : start + EOCD_SIZE])
    comment = window[start + EOCD_SIZE :]
    if declared != len(comment):
        return "the integrity trailer is malformed or cut short (truncated?)"
    if comment.startswith(f"{FORMAT_NAME} v".encode("ascii")):
        return (f"the integrity trailer is of no format this bsrnn reads (damaged, or written by a "
                f"bsrnn newer than format {FORMAT_VERSION})")
    return "the integrity trailer is malformed"


def short_digest(labelled: str, digits: int = 16) -> str:
    """A labelled digest cut to its first ``digits`` hex digits, for messages (``xxh3-128:0123...``)."""
    name, _, hexdigest = labelled.partition(":")
    return f"{name}:{hexdigest[:digits]}..."
