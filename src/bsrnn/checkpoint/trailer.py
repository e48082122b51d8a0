"""The checkpoint format's constants: its name and version, and the layout of the digest trailer.

Why a module of its own: the writer (``writing``) and the reader (``reading``) must agree on
every byte of the trailer, so both take its layout from here; ``fileformat`` describes the
format and re-exports these names. See ``fileformat``'s docstring for the layout itself.
"""

from __future__ import annotations

import mmap

FORMAT_NAME = "bsrnn-checkpoint"
FORMAT_VERSION = 1
MAGIC = b"bsrnn-checkpoint v1 sha256="
COMMENT_LENGTH = len(MAGIC) + 64
EOCD_SIGNATURE = b"PK\x05\x06"
EOCD_SIZE = 22  # fixed part of the end-of-central-directory record, comment length included
TRAILER_SIZE = EOCD_SIZE + COMMENT_LENGTH
Buffer = bytes | bytearray | mmap.mmap  # what verified bytes are held in
