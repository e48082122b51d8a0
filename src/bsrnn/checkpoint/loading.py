"""Finding and opening checkpoints: a run directory or a file, ``auto``/``last``/``best``.

``auto`` takes ``checkpoint_last.pt`` if it verifies, else ``checkpoint_best.pt`` with a
warning; ``last``/``best`` take exactly that file or fail. Nothing is returned before its
digest has matched, so callers can apply state without further checks.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bsrnn.checkpoint.errors import (
    CheckpointError,
    CheckpointNotFoundError,
)
from bsrnn.checkpoint.fileformat import load_verified, short_digest

log = logging.getLogger(__name__)

LAST_NAME = "checkpoint_last.pt"
BEST_NAME = "checkpoint_best.pt"
# The one superseded file of runs before each superseded state kept a file of its own; still
# listed by ``superseded_paths`` and verified, never written any more.
SUPERSEDED_NAME = "checkpoint_last.superseded.pt"
SUPERSEDED_PATTERN = re.compile(r"^checkpoint_(last|best)\.superseded(?:-step(\d+)(?:-(\d+))?)?\.pt$")
WHICH_CHOICES: tuple[str, ...] = ("auto", "last", "best")


def superseded_path(run_dir: Path, global_step: int, stem: str = "checkpoint_last") -> Path:
    """A new name for a superseded ``<stem>.pt`` at ``global_step``: never an existing one."""
    base = f"{stem}.superseded-step{global_step}"
    path = run_dir / f"{base}.pt"
    copy = 2
    while path.exists() or path.is_symlink():
        path = run_dir / f"{base}-{copy}.pt"
        copy += 1
    return path


def superseded_paths(run_dir: Path) -> list[Path]:
    """Every superseded checkpoint in ``run_dir`` (lasts, then bests), by step (the old single name first)."""
    found = []
    for path in run_dir.glob("checkpoint_*.superseded*.pt"):
        match = SUPERSEDED_PATTERN.match(path.name)
        if match:
            found.append((match.group(1) == "best", int(match.group(2) or -1), int(match.group(3) or 1), path))
    return [path for *_, path in sorted(found)]


@dataclass
class LoadedCheckpoint:
    """A verified checkpoint: where it came from and its payload (tensors on ``map_location``)."""

    path: Path
    kind: str  # "last", "best" or "file" (a path given directly)
    payload: dict[str, Any]
    digest: str
    fell_back: bool = False

    def get(self, key: str, default: Any = None) -> Any:
        return self.payload.get(key, default)


def kind_of(path: Path) -> str:
    return {LAST_NAME: "last", BEST_NAME: "best"}.get(path.name, "file")


def candidates(run_dir: Path, which: str) -> list[Path]:
    if which not in WHICH_CHOICES:
        raise ValueError(f"which must be one of {WHICH_CHOICES}, got {which!r}")
    order = {"auto": [LAST_NAME, BEST_NAME], "last": [LAST_NAME], "best": [BEST_NAME]}[which]
    return [run_dir / name for name in order]


def load_checkpoint(location: Path | str, which: str = "auto", map_location: Any = "cpu",
                    accept: Callable[[Path, Mapping[str, Any]], None] | None = None) -> LoadedCheckpoint:
    """Open a checkpoint file, or the ``which`` checkpoint of a run directory, verified.

    Raises ``CheckpointNotFoundError`` (listing the paths tried), ``CheckpointCorruptError`` or
    ``CheckpointForeignError``; under ``auto`` a damaged or foreign ``last`` falls back to
    ``best`` with a warning. ``accept`` is the caller's own check of a verified payload (a
    trainer's: can it resume from this?); a ``CheckpointError`` it raises counts as damage, so
    ``auto`` falls back from a ``last`` that verifies but cannot be resumed from.
    """
    location = Path(location)
    if (location.exists() and not location.is_dir()) or (location.suffix == ".pt" and not location.is_dir()):
        payload, digest = load_verified(location, map_location)
        if accept is not None:
            accept(location, payload)
        return LoadedCheckpoint(location, kind_of(location), payload, digest)
    if not location.is_dir():
        raise CheckpointNotFoundError(
            candidates(location, which), hint=f"The directory {location} does not exist."
        )
    tried = candidates(location, which)
    failures: list[CheckpointError] = []
    for path in tried:
        if not path.exists():
            continue
        try:
            payload, digest = load_verified(path, map_location)
            if accept is not None:
                accept(path, payload)
        except CheckpointError as error:
            if which != "auto" or isinstance(error, CheckpointNotFoundError):
                raise
            log.warning("WARNING: %s", error)
            failures.append(error)
            continue
        fell_back = bool(failures)
        if fell_back:
            log.warning("WARNING: falling back to %s", path)
        return LoadedCheckpoint(path, kind_of(path), payload, digest, fell_back=fell_back)
    if failures:
        raise failures[0]
    raise CheckpointNotFoundError(tried)


@dataclass(frozen=True)
class VerifyResult:
    path: Path
    ok: bool
    message: str


def verify(location: Path | str, accept: Callable[[Path, Mapping[str, Any]], None] | None = None) -> list[VerifyResult]:
    """Verify one file, or every checkpoint (``*.pt``) in a run directory (``accept``: as in
    ``load_checkpoint``, a failure of it fails the file)."""
    location = Path(location)
    if location.is_dir():
        paths = sorted(location.glob("*.pt"))
        if not paths:
            raise CheckpointNotFoundError(candidates(location, "auto"))
    elif location.exists():
        paths = [location]
    else:
        raise CheckpointNotFoundError([location])
    results = []
    for path in paths:
        try:
            payload, digest = load_verified(path)
            if accept is not None:
                accept(path, payload)
        except CheckpointError as error:
            results.append(VerifyResult(path, False, str(error)))
        else:
            where = ", ".join(f"{key} {payload[key]}" for key in ("epoch", "global_step") if key in payload)
            results.append(VerifyResult(path, True, f"{short_digest(digest)} {where}".rstrip()))
    return results
