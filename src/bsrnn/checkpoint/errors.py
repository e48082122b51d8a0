"""Errors of the checkpoint engine.

Each names the file, what was expected, what was found and, where there is one, the fix. The
command line prints the message without a traceback (which would only hide it) and exits 2 for
every ``CheckpointError`` that is about its input (missing, damaged, foreign, mismatched), and 1
for a ``CheckpointWriteError``: a full disk is a failure of the run, not of what the user typed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class CheckpointError(Exception):
    """Base class of everything the engine raises on purpose."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No checkpoint where one was asked for; the message lists every path tried."""

    def __init__(self, tried: Sequence[Path | str], hint: str = "") -> None:
        self.tried = [str(path) for path in tried]
        lines = ["Checkpoint not found. Paths tried:"] + [f"  {path}" for path in self.tried]
        if hint:
            lines.append(hint)
        super().__init__("\n".join(lines))


class CheckpointCorruptError(CheckpointError):
    """The file exists but is damaged (truncated, bit-flipped, half-written)."""

    def __init__(self, path: Path | str, damage: str) -> None:
        self.path = str(path)
        self.damage = damage
        super().__init__(
            f"Checkpoint {self.path} is damaged: {damage}. It was not loaded. "
            "Resume from the other checkpoint of the run (--load best|last), or delete this file."
        )


class CheckpointIncompleteError(CheckpointCorruptError):
    """The file reads, but lacks or malforms what a checkpoint holds (a registered state, a key)."""


class CheckpointForeignError(CheckpointError):
    """The file is not a checkpoint this engine wrote, or it would need arbitrary code to load."""

    def __init__(self, path: Path | str, reason: str, fix: str = "") -> None:
        self.path = str(path)
        self.reason = reason
        message = f"{self.path} is not a bsrnn checkpoint: {reason}."
        if fix:
            message += f" {fix}"
        super().__init__(message)


class CheckpointNewerFormatError(CheckpointForeignError):
    """A bsrnn checkpoint in a format version newer than this code understands."""


class CheckpointWriteError(CheckpointError):
    """A save failed (disk full, file-size limit, permissions); committed files are intact."""


class UnsafeStateError(CheckpointError, TypeError):
    """A value to save would not load under ``torch.load(weights_only=True)``."""


class StateMismatchError(CheckpointError):
    """The checkpoint does not fit the objects it is being restored into."""


class UnsafeTorchError(CheckpointError):
    """The installed torch's weights-only loader has known holes: nothing is unpickled with it."""
