"""The one writer of every file a command writes for its user: enhanced audio, score CSVs, plots,
model bundles.

Each rule stops an accident a tester made happen:

- A destination that is a symbolic link is refused, never written through: a link in ``--out``
  that points at an input would otherwise replace the input.
- A destination that is one of the command's inputs is refused, with or without
  ``--overwrite``. Files are compared by identity (device and inode), not by name, so a hard
  link or a symbolic link to an input is caught too; so is an output folder that is an input
  folder (``check_output_folder``).
- An existing destination is refused unless the user passed ``--overwrite``, and the message
  says what was found and names the flag: ``enhance RUN noisy/ --out clean/`` must not replace
  the clean references without being asked to.
- ``check_destinations`` checks every destination of a command before anything is written, so
  a refused command leaves nothing behind.
- ``write_file`` writes into a hidden temporary beside the destination (the engine's
  ``temporary_path``: ``.NAME.PID.RAND.partial``), fsyncs it, checks the destination again and
  only then renames the temporary over it (the engine's ``commit``: rename, then fsync of the
  folder). A killed command (SIGKILL, power loss) leaves the old file or the complete new one,
  never a truncated file whose header agrees with its data (at most a hidden ``.partial``); a
  failed write (a full disk) removes the temporary and leaves the old destination untouched.
- The hidden temporaries a killed command left for the destinations of a new one are removed
  when that command checks its destinations (``check_destinations``): only those of the files
  it is about to write, and only when the process that named them runs no longer. So rerunning
  the interrupted command tidies up after it, and nothing else is touched.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from bsrnn.errors import UserError

OVERWRITE_FLAG = "--overwrite"
EXAMPLES_SHOWN = 5
"""How many paths a refusal lists before it says how many there are in all."""


def add_overwrite_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """``--overwrite``, the one way every command is told it may replace its existing outputs."""
    parser.add_argument(OVERWRITE_FLAG, action="store_true",
                        help=f"replace {what} that exist already (never an input of the command, never "
                             "through a symbolic link); without it an existing output is refused")


class InputFiles:
    """The files a command reads, by identity (device, inode), so that no output replaces one.

    Identity, not names: ``out/a.wav`` may be a hard link to ``in/a.wav``, or ``in`` may be
    reached by two paths; both are the same file to the file system, and to this check.
    """

    def __init__(self, paths: Iterable[str | os.PathLike[str]]) -> None:
        self._by_identity: dict[tuple[int, int], Path] = {}
        for path in paths:
            identity = file_identity(path)
            if identity is not None:
                self._by_identity.setdefault(identity, Path(path))

    def input_at(self, path: str | os.PathLike[str]) -> Path | None:
        """The input that ``path`` is (itself, a hard link, or a link to it); None if none."""
        identity = file_identity(path)
        return None if identity is None else self._by_identity.get(identity)


def file_identity(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """(device, inode) of what ``path`` names, links followed; None if there is nothing."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino


def _shown(paths: Sequence[str]) -> str:
    listed = ", ".join(paths[:EXAMPLES_SHOWN])
    return listed + (f" ({len(paths)} in all)" if len(paths) > EXAMPLES_SHOWN else "")


def check_output_folder(folder: Path, inputs: Iterable[Path], flag: str) -> None:
    """Refuse an output folder that is a file, or that is the folder of an input (by identity).

    Outputs named like their inputs would land on the inputs; the per-file check would catch
    each one, but this says what is wrong in one line before anything else is looked at.
    """
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{flag} {folder}: expected a folder (created if missing), found a file. "
                        f"Fix: pass the path of a folder, or of one to create")
    identity = file_identity(folder)
    if identity is not None and any(file_identity(path.parent) == identity for path in inputs):
        raise UserError(f"{flag} {folder} is an input folder: outputs would overwrite the inputs. "
                        f"Fix: pass another {flag} folder")


def check_destinations(destinations: Sequence[Path], *, overwrite: bool, flag: str,
                       inputs: InputFiles | None = None) -> None:
    """Refuse, in one message, every destination that would be written through a symbolic link,
    would replace an input, is no regular file, or exists without ``--overwrite``.

    Called with all of a command's destinations before its first write, so that a refusal
    leaves nothing behind; ``write_file`` checks its one file again just before the rename, in
    case something appeared meanwhile. Then removes the temporaries that interrupted writes of
    these destinations left (module docstring): once per command, one listing per folder.
    """
    _refuse_unsafe(destinations, overwrite=overwrite, flag=flag, inputs=inputs)
    _remove_interrupted_writes(destinations)


def _remove_interrupted_writes(destinations: Sequence[Path]) -> None:
    """The engine's ``remove_stale_temporaries`` for these destinations' names, in each folder
    that holds a hidden ``.partial`` at all. The engine (and torch, which its package imports)
    is loaded only then: ``bsrnn score`` forks its helpers only while torch is not loaded."""
    names_by_folder: dict[Path, set[str]] = {}
    for destination in destinations:
        names_by_folder.setdefault(destination.parent, set()).add(destination.name)
    for folder, names in names_by_folder.items():
        try:
            with os.scandir(folder) as entries:
                leftovers = any(entry.name.startswith(".") and entry.name.endswith(".partial") for entry in entries)
            if leftovers:
                from bsrnn.checkpoint.atomic import remove_stale_temporaries

                remove_stale_temporaries(folder, finals=names)
        except OSError:  # tidying is a courtesy: an unreadable folder fails at the write, with its reason
            pass


def _refuse_unsafe(destinations: Sequence[Path], *, overwrite: bool, flag: str, inputs: InputFiles | None) -> None:
    links, replaced, not_files, existing = [], [], [], []
    for destination in destinations:
        if destination.is_symlink():
            links.append(f"{destination} -> {os.readlink(destination)}")
        elif inputs is not None and (source := inputs.input_at(destination)) is not None:
            replaced.append(str(destination) if source == destination else f"{destination} (= {source})")
        elif destination.exists() and not destination.is_file():
            not_files.append(str(destination))
        elif destination.exists():
            existing.append(str(destination))
    prefix, where = (f"{flag}: ", f"another {flag}") if flag else ("", "another path")
    if links:
        raise UserError(f"{prefix}expected to write new files, found {len(links)} symbolic link(s) where "
                        f"outputs would go: {_shown(links)}. bsrnn never writes through a link (it would "
                        f"replace the file it points at), even with {OVERWRITE_FLAG}. "
                        f"Fix: remove the link(s) or choose {where}")
    if replaced:
        raise UserError(f"{prefix}expected outputs apart from this command's inputs, found {len(replaced)} "
                        f"output(s) that are inputs (the same file): {_shown(replaced)}. An input is never "
                        f"replaced, even with {OVERWRITE_FLAG}. Fix: choose {where}")
    if not_files:
        raise UserError(f"{prefix}expected files (or nothing) where outputs go, found {len(not_files)} "
                        f"folder(s) or special file(s): {_shown(not_files)}. Fix: choose {where}")
    if existing and not overwrite:
        raise UserError(f"{prefix}expected no file where outputs go, found {len(existing)} that exist "
                        f"already: {_shown(existing)}. Fix: pass {OVERWRITE_FLAG} to "
                        f"replace {'it' if len(existing) == 1 else 'them'}, or choose {where}")


def write_file(destination: Path, write: Callable[[Path], None], *, overwrite: bool, flag: str = "",
               inputs: InputFiles | None = None) -> None:
    """Have ``write`` fill a hidden temporary beside ``destination``, then make it ``destination``.

    ``write`` gets the temporary's path (its suffix is ``.partial``, so name the format
    explicitly). The temporary is fsynced, the destination checked again
    (``check_destinations``) and the temporary renamed over it; on any failure, the temporary
    is removed, the exception goes on, and the destination is as it was. Missing folders are
    the caller's to create. ``flag`` names the destination in refusals (e.g. ``--csv``).
    """
    # The engine's package imports torch; imported here, not at the top, so that `bsrnn score`
    # (which forks its helpers only while torch is not loaded) imports it only to commit.
    from bsrnn.checkpoint.atomic import commit, discard, temporary_path

    temporary = temporary_path(destination)
    try:
        write(temporary)
        _fsync_file(temporary)
        _refuse_unsafe([destination], overwrite=overwrite, flag=flag, inputs=inputs)
        commit(temporary, destination)
    except BaseException:
        discard(temporary)
        raise


def write_bytes(destination: Path, data: bytes, *, overwrite: bool, flag: str = "",
                inputs: InputFiles | None = None) -> None:
    """``write_file`` of bytes already in memory (a CSV, say)."""

    def write(temporary: Path) -> None:
        with open(temporary, "xb") as handle:
            handle.write(data)

    write_file(destination, write, overwrite=overwrite, flag=flag, inputs=inputs)


def _fsync_file(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
