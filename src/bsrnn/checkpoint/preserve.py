"""Keeping every training state that a writer is about to replace: by content, never by name.

A trainer's saves replace ``checkpoint_last.pt`` (every save) and ``checkpoint_best.pt`` (each
new best) by renaming over them. That is the design while a run goes forward from the state in
those files. It destroys work whenever the run continues from any *other* state: a resume from
best, from a copy of best under another name, from a superseded file, a fallback because
``checkpoint_last.pt`` is damaged, a fresh start in a directory that holds files. Guards keyed
to a file's name (``kind == "best"``) missed every case but the one the tests named, so the
decision here looks only at what each file holds:

- ``checkpoint_last.pt`` is kept unless it *is* the state being continued (the same digest).
- ``checkpoint_best.pt`` is kept unless it is the state being continued or the best that state
  counts as its own (its monitor record names that best's digest; files from before that
  record: the same monitor, best value and an older or equal save sequence). A requeued run
  resuming from ``checkpoint_last.pt`` therefore copies nothing.
- A state is not copied again when a byte-identical file is already kept in the directory
  (a superseded or quarantined file, or the user's own copy under any name).
- How it is kept depends on whether it can be resumed from: a readable state as
  ``checkpoint_last.superseded-step<N>.pt`` (``checkpoint_best.superseded-step<N>.pt`` for a
  best), resumable with ``--resume FILE``; a file that cannot be (damaged, truncated, from a
  newer format, incomplete, another program's) is quarantined as
  ``<name>.quarantined-<why>`` (no ``.pt`` suffix, so it is never taken for a checkpoint).
  Nothing is ever deleted here; copies are durable before this returns.

``CheckpointManager`` calls ``keep_states_at_risk`` once, before its first commit (at
``restore`` for a resume, at the first ``save`` otherwise), so every path that writes through
the engine goes through this one decision.
"""

from __future__ import annotations

import filecmp
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bsrnn.checkpoint import atomic
from bsrnn.checkpoint.errors import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointForeignError,
    CheckpointIncompleteError,
    CheckpointNewerFormatError,
    CheckpointWriteError,
)
from bsrnn.checkpoint.index import trailer_digest
from bsrnn.checkpoint.loading import BEST_NAME, LAST_NAME, LoadedCheckpoint, superseded_path, superseded_paths
from bsrnn.checkpoint.reading import load_verified
from bsrnn.checkpoint.signals import deferred_signals

log = logging.getLogger(__name__)

QUARANTINE_PATTERN = re.compile(r"^checkpoint_(?:last|best)\.pt\.quarantined-[a-z-]+?(?:-\d+)?$")
THIS_FILE = "this file"
"""``monitor.best_digest`` of a save that is itself the best (its digest is not known before it is written)."""

Accept = Callable[[Path, Mapping[str, Any]], None]
"""A check beyond the engine's own (a trainer's: its config, architecture, progress): raises
``CheckpointError`` for a payload it cannot resume from."""


@dataclass(frozen=True)
class KeptState:
    """One state that was at risk: where it was, where it is kept, and why it was kept there."""

    original: Path
    kept_as: Path
    why: str  # "superseded", or why it cannot be resumed from: "damaged", "incomplete", "newer-format", "foreign"
    already: bool = False  # an identical file was kept before; nothing was copied now

    def describe(self) -> str:
        if self.already:
            return f"{self.original.name} is already kept as {self.kept_as.name}"
        if self.why == "superseded":
            return f"kept {self.original.name} as {self.kept_as.name}"
        return f"{self.original.name} cannot be resumed from ({self.why}): quarantined as {self.kept_as.name}"


def kept_states(run_dir: Path) -> list[Path]:
    """Every file in ``run_dir`` that holds a kept state (superseded or quarantined), sorted."""
    if not run_dir.is_dir():
        return []
    quarantined = sorted(path for path in run_dir.iterdir() if QUARANTINE_PATTERN.match(path.name))
    return superseded_paths(run_dir) + quarantined


def keep_states_at_risk(run_dir: Path, continuing: LoadedCheckpoint | None,
                        accept: Accept | None = None) -> list[KeptState]:
    """Keep what the next commit in ``run_dir`` would destroy; see the module docstring.

    ``continuing``: the state the writer goes on from (None for a fresh start). Raises
    ``CheckpointWriteError`` if a copy cannot be made (a full disk): nothing was replaced, and
    the caller must not commit.
    """
    kept = []
    for name in (LAST_NAME, BEST_NAME):
        path = run_dir / name
        if path.is_symlink() or not path.is_file():
            continue  # a rename replaces a link, never its target; the manager refuses other types
        # Fast path, the requeue's: the digest the file's trailer records is the continued state's,
        # or the best that state owns; then nothing is at risk and the file is not read whole.
        recorded = trailer_digest(path)
        if continuing is not None and recorded is not None and (
                recorded == continuing.digest or (name == BEST_NAME and recorded == _owned_best(continuing))):
            continue
        payload, digest, why = _read(path, accept)
        if continuing is not None and digest is not None and digest == continuing.digest:
            continue
        if name == BEST_NAME and payload is not None and continuing is not None and _own_best(
                payload, digest, continuing):
            continue
        copy = _identical_copy(path, run_dir)
        if copy is not None:
            kept.append(KeptState(path, copy, why, already=True))
            continue
        kept.append(_copy(path, _target(path, payload, why), why))
    for state in kept:
        log.warning("WARNING: %s", state.describe())
    return kept


def _read(path: Path, accept: Accept | None) -> tuple[dict[str, Any] | None, str | None, str]:
    """The payload and digest of a state that can be resumed from, or None and why it cannot."""
    try:
        payload, digest = load_verified(path)
        if accept is not None:
            accept(path, payload)
    except CheckpointError as error:
        return None, None, why_unusable(error)
    return payload, digest, "superseded"


def why_unusable(error: CheckpointError) -> str:
    """One word for the name of a quarantined file: what is wrong with it, by the error's type
    (never by its text, which names the file: a run directory called ``newer-runs`` must not make
    a damaged file "newer-format"). A state the run cannot continue (``StateMismatchError`` from
    the resume check) is "incomplete"."""
    if isinstance(error, CheckpointNewerFormatError):
        return "newer-format"
    if isinstance(error, CheckpointIncompleteError):
        return "incomplete"
    if isinstance(error, CheckpointCorruptError):
        return "damaged"
    if isinstance(error, CheckpointForeignError):
        return "foreign"
    return "incomplete"


def _owned_best(continuing: LoadedCheckpoint) -> str | None:
    """The digest of the best checkpoint the continued state records as its own (None if it does not)."""
    record = continuing.get("monitor")
    named = record.get("best_digest") if isinstance(record, Mapping) else None
    return continuing.digest if named == THIS_FILE else named


def _own_best(best: Mapping[str, Any], best_digest: str | None, continuing: LoadedCheckpoint) -> bool:
    """Whether ``best`` is the best that the continued state counts as its own."""
    record = continuing.get("monitor")
    record = record if isinstance(record, Mapping) else {}
    named = record.get("best_digest")
    if named is not None:
        return named == best_digest or (named == THIS_FILE and continuing.digest == best_digest)
    best_record = best.get("monitor") if isinstance(best.get("monitor"), Mapping) else {}
    return (best_record.get("name"), best_record.get("mode"), best_record.get("best")) == (
        record.get("name"), record.get("mode"), record.get("best")
    ) and int(best.get("save_sequence", 0)) <= int(continuing.get("save_sequence", 0))


def _identical_copy(path: Path, run_dir: Path) -> Path | None:
    """Another regular file in ``run_dir`` with the same bytes as ``path`` (not last or best:
    those are what is about to be replaced)."""
    size = path.stat().st_size
    for other in sorted(run_dir.iterdir()):
        if other.name in (LAST_NAME, BEST_NAME) or other.name.startswith(".") or other.is_symlink():
            continue
        try:
            if other.is_file() and other.stat().st_size == size and filecmp.cmp(path, other, shallow=False):
                return other
        except OSError:
            continue
    return None


def _target(path: Path, payload: Mapping[str, Any] | None, why: str) -> Path:
    if payload is not None:
        step = payload.get("global_step", 0)
        step = step if isinstance(step, int) and not isinstance(step, bool) else 0
        return superseded_path(path.parent, step, stem=path.stem)
    base = path.with_name(f"{path.name}.quarantined-{why}")
    target, copy = base, 2
    while target.exists() or target.is_symlink():
        target = base.with_name(f"{base.name}-{copy}")
        copy += 1
    return target


def _copy(path: Path, target: Path, why: str) -> KeptState:
    temporary = atomic.temporary_path(target)
    try:
        with deferred_signals():
            atomic.copy_durably(path, temporary)
            atomic.commit(temporary, target)
    except OSError as error:
        atomic.discard(temporary)
        raise CheckpointWriteError(
            f"Could not keep {path} as {target.name} ({error.strerror or error}) before replacing it; nothing "
            "was overwritten. Free space or copy it by hand, then run again."
        ) from error
    return KeptState(path, target, why)
