"""The run directory's read side: the latest and best steps and metrics without loading a checkpoint.

Knowing where a run stands (``latest_step()``, ``best_step()``, ``best_metric()``: what a job
script, a dashboard or ``status`` asks) should not cost reading and hashing gigabytes. After
every commit the manager writes ``checkpoint_index.json`` beside the checkpoints: for each of
``last`` and ``best``, the fields that say where it stands (save sequence, epoch, global step,
the monitored metric, creation time), the file's size and its digest as recorded in its
trailer (labelled with its algorithm: ``"xxh3-128:<hex>"``). The index is written atomically
(temporary, fsync, rename) and carries a digest of its own content.

An index is only a hint about files that may have changed since (a crash between a checkpoint's
rename and the index's, a copied run, an edited file), so each entry is trusted only while its
file still has the recorded size and trailer digest: a read of the last few dozen bytes, not of
the file. An entry that does not match, or a missing or damaged index, falls back to loading
(and verifying) the file itself. Loading for a resume never uses the index.

Version 2 (with checkpoint format 2) records ``digest`` where version 1 recorded ``sha256``;
an index of another version is not used, so the first read after an upgrade loads the files
and the next commit writes a version 2 index (with the entries the manager knows then).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bsrnn.checkpoint import atomic
from bsrnn.checkpoint.errors import CheckpointError
from bsrnn.checkpoint.reading import open_regular_file
from bsrnn.checkpoint.trailer import LONGEST_TRAILER, find_trailer

INDEX_NAME = "checkpoint_index.json"
INDEX_FORMAT = "bsrnn-checkpoint-index"
INDEX_VERSION = 2
RECORDED = ("save_sequence", "epoch", "global_step", "created")


@dataclass(frozen=True)
class IndexEntry:
    """Where one checkpoint file stands, as recorded when it was committed."""

    file: str
    size: int
    digest: str  # labelled, as ``trailer_digest`` reads it
    save_sequence: int | None
    epoch: int | None
    global_step: int | None
    created: str | None
    metric: dict[str, Any]


def entry_for(path: Path, digest: str, payload: Mapping[str, Any]) -> IndexEntry:
    """The index entry of a just-committed file with this ``payload``."""
    values = {key: payload.get(key) for key in RECORDED}
    return IndexEntry(path.name, path.stat().st_size, digest, metric=dict(payload.get("monitor") or {}), **values)


def trailer_digest(path: Path) -> str | None:
    """The labelled digest a checkpoint's trailer records (read from its last bytes), or None."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            handle.seek(max(0, size - LONGEST_TRAILER))
            tail = handle.read(LONGEST_TRAILER)
    except OSError:
        return None
    trailer = find_trailer(tail, size)
    return trailer.recorded_label if trailer is not None else None


def write_index(run_dir: Path, entries: Mapping[str, IndexEntry]) -> None:
    """Replace the index atomically with ``entries`` ("last", "best")."""
    body = {"format": INDEX_FORMAT, "version": INDEX_VERSION,
            **{kind: entry.__dict__ for kind, entry in entries.items()}}
    body["digest"] = _digest(body)
    final = run_dir / INDEX_NAME
    temporary = atomic.temporary_path(final)
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        with open(fd, "w", encoding="utf-8") as handle:
            json.dump(body, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        atomic.commit(temporary, final)
    except BaseException:
        atomic.discard(temporary)
        raise


def read_index(run_dir: Path) -> dict[str, IndexEntry]:
    """The entries of the index whose files still match them (empty if there is no usable index)."""
    try:
        body = json.loads(_read_small_regular_file(Path(run_dir) / INDEX_NAME))
    except (OSError, ValueError):
        return {}
    if not isinstance(body, dict) or body.get("format") != INDEX_FORMAT or body.get("version") != INDEX_VERSION:
        return {}
    if body.get("digest") != _digest(body):
        return {}
    entries = {}
    for kind in ("last", "best"):
        record = body.get(kind)
        if not isinstance(record, dict):
            continue
        try:
            entry = IndexEntry(**record)
        except TypeError:
            continue
        path = Path(run_dir) / entry.file
        try:
            size = path.stat().st_size
        except OSError:
            continue
        if size == entry.size and trailer_digest(path) == entry.digest:
            entries[kind] = entry
    return entries


INDEX_MAX_BYTES = 1 << 20
"""Far above any index (two entries); a bigger file is not one."""


def _read_small_regular_file(path: Path) -> str:
    """The index's text, or ``OSError``/``ValueError`` for anything that is not a small regular
    file: it is read while the run directory's lock is held, so a FIFO planted there must not
    block it and a link to ``/dev/zero`` must not read until memory runs out."""
    try:
        handle = open_regular_file(path)
    except CheckpointError as error:
        raise ValueError(str(error)) from error
    with handle:
        if os.fstat(handle.fileno()).st_size > INDEX_MAX_BYTES:
            raise ValueError(f"{path} is not a checkpoint index (larger than {INDEX_MAX_BYTES} bytes)")
        return handle.read(INDEX_MAX_BYTES).decode("utf-8")


def _digest(body: Mapping[str, Any]) -> str:
    content = {key: value for key, value in body.items() if key != "digest"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
