"""The checkpoint digest in a worker thread, shared by checkpoint writing and reading.

Why a module of its own: both directions hash a checkpoint piece by piece while the caller
writes or reads the next piece (see ``fileformat``'s docstring, "Speed"), with the same
worker and the same piece size. Which algorithm is the caller's choice (``trailer.DIGESTS``):
the writer's default, or the one a file's trailer names.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from bsrnn.checkpoint.trailer import DigestAlgorithm

# Pieces of this size are written, read back and hashed one at a time: large enough that the
# per-piece system calls cost nothing, small enough that hashing overlaps the next piece's write.
PIECE_SIZE = 4 * 1024 * 1024


class BackgroundHasher:
    """The digest of a sequence of buffers, hashed in submission order by a worker thread.

    Why a thread: ``hashlib`` and ``xxhash`` release the GIL while hashing large buffers (the
    4 MiB pieces here), so the digest is computed on another core while the caller writes or
    reads the next piece; a save or a load then costs about the slower of I/O and hashing rather
    than their sum. Each submitted buffer may come with a ``release`` callback, run once the
    buffer has been hashed (to recycle it).
    """

    def __init__(self, algorithm: DigestAlgorithm) -> None:
        self._hasher = algorithm.new()
        self._queue: queue.SimpleQueue[tuple[Any, Callable[[], None] | None] | None] = queue.SimpleQueue()
        self._error: Exception | None = None
        self._thread = threading.Thread(target=self._run, name=f"bsrnn-checkpoint-{algorithm.name}", daemon=True)
        self._thread.start()

    def submit(self, data: bytes | memoryview, release: Callable[[], None] | None = None) -> None:
        """Queue ``data`` for hashing; it must not change until ``release`` runs (or ``stop``)."""
        self._queue.put((data, release))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            data, release = item
            try:
                if self._error is None:
                    self._hasher.update(data)
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
        """The hex digest of everything submitted (waits for the thread; raises what it hit)."""
        self.stop()
        if self._error is not None:
            raise self._error
        return self._hasher.hexdigest()
