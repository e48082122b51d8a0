"""One data command at a time in a folder: ``data prepare`` writing OUT, ``--download`` filling SOURCE.

The run directory's lock (``bsrnn.checkpoint.lock``: an exclusive ``flock`` on ``FOLDER/.lock``,
held for the command's life) guards a data folder too. Two preparations into one OUT would
rename each other's files; two downloads into one SOURCE would append into one ``.partial``
file and rename the mixture to the zip's name. The second command is refused at once, naming
the first one's PID.
"""

from __future__ import annotations

from pathlib import Path

from bsrnn.checkpoint.errors import CheckpointError
from bsrnn.checkpoint.lock import LOCK_NAME, RunDirectoryBusyError, RunDirectoryLock
from bsrnn.errors import UserError


def lock_folder(folder: Path, flag: str, purpose: str) -> RunDirectoryLock:
    """Create ``folder`` and take its lock, or refuse (``UserError``) naming who holds it.

    ``flag`` names the folder as the user gave it (``--out``, ``SOURCE``); ``purpose`` says what
    the folder is for ("to write the prepared corpus in").
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"{flag} {folder}: expected a folder {purpose}, but it cannot be created "
                        f"({error.strerror or error}). Fix: choose a writable place") from error
    lock = RunDirectoryLock(folder)
    try:
        return lock.acquire()
    except RunDirectoryBusyError as error:
        holder = (folder / LOCK_NAME).read_text(errors="replace").strip() or "unknown"
        raise UserError(f"{flag} {folder}: expected no other process writing there, found one (PID {holder}). "
                        f"Fix: wait for it to finish or stop it, or choose another {flag}") from error
    except CheckpointError as error:
        raise UserError(f"{flag} {folder}: cannot be locked for writing ({error})") from error
