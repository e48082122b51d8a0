"""``diskfull``: a save that cannot fit fails clearly and loses nothing.

A resumed run whose saves cannot fit, on a small tmpfs filled up (when this process may mount
one) or under an ``RLIMIT_FSIZE`` set in the child. It must stop with a clear error, leave the
committed files byte for byte, and resume to a bit-identical end once space returns.
"""

from __future__ import annotations

import contextlib
import os
import random
import resource
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

from torture.common import (
    Outcome,
    Workspace,
    bsrnn_command,
    damaged_checkpoints,
    digests,
    partial_files,
    run_child,
    run_differences,
)


def can_mount_tmpfs(where: Path) -> bool:
    """True if this process may mount a tmpfs (root on Linux, outside most containers)."""
    where.mkdir(parents=True, exist_ok=True)
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)],
                            capture_output=True, timeout=30, check=False)
    if result.returncode != 0:
        return False
    subprocess.run(["umount", str(where)], capture_output=True, timeout=30, check=False)
    return True


@contextlib.contextmanager
def small_filesystem(where: Path, size_mb: int) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(where)],
                   check=True, capture_output=True, timeout=30)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=30, check=False)


def fill_leaving(directory: Path, room: int) -> Path:
    """Fill the file system of ``directory`` until only about ``room`` bytes are free."""
    filler = directory / "filler.bin"
    stats = os.statvfs(directory)
    free = stats.f_bavail * stats.f_frsize
    with open(filler, "wb") as handle:
        remaining = max(free - room, 0)
        chunk = b"\0" * (1 << 20)
        while remaining > 0:
            try:
                remaining -= handle.write(chunk[: min(len(chunk), remaining)])
            except OSError:
                break
    return filler



def _fsize_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def _diskfull_trial(outcome: Outcome, trial: int, workspace: Workspace, rng: random.Random, base: Path,
                    method: str) -> None:
    run_dir = base / f"run-{trial}"
    logs = workspace.root / "logs"
    first = run_child(bsrnn_command(*workspace.train_args(run_dir, "--resume", "--max-steps", str(rng.randint(1, 4)))),
                      logs / f"diskfull-{trial}-a.log")
    if first.returncode != 0:
        outcome.fail(trial, f"the run before the disk filled failed ({first.returncode})")
        return
    before = digests(run_dir)
    size = max((run_dir / name).stat().st_size for name in before)
    # Also almost nothing: then even config.toml, metrics.jsonl and train.log cannot be written.
    # (Under RLIMIT_FSIZE at least 1 KiB: below that Python's tempfile, which torch needs at
    # import, cannot write its 4-byte probe, and nothing at all can run.)
    room = rng.randrange(0, 8192) if rng.random() < 0.4 else rng.randrange(0, size)
    if method == "rlimit":
        room = max(room, 1024)
    preexec, filler = None, None
    if method == "tmpfs":
        filler = fill_leaving(base, room)
    else:
        preexec = _fsize_limit(room)
    full = run_child(bsrnn_command(*workspace.train_args(run_dir, "--resume")), logs / f"diskfull-{trial}-b.log",
                     preexec_fn=preexec)
    outcome.count(method)
    last_line = (full.output.strip().splitlines() or [""])[-1]
    if full.returncode in (0, None):
        outcome.fail(trial, f"{method} ({room} bytes): the run exited {full.returncode} although nothing fit")
    elif "Traceback" in full.output or "Logging error" in full.output:
        outcome.fail(trial, f"{method} ({room} bytes): a traceback instead of a clear error: {last_line}")
    elif not last_line.startswith("error:"):
        outcome.fail(trial, f"{method} ({room} bytes): no clear error line at the end: {last_line!r}")
    else:
        outcome.count(f"exit_{full.returncode}")
    if digests(run_dir) != before:
        outcome.fail(trial, f"{method}: the committed checkpoints changed although no save could fit")
    if partial_files(run_dir):
        outcome.fail(trial, f"{method}: save temporaries left behind: {partial_files(run_dir)}")
    damaged = damaged_checkpoints(run_dir)
    if damaged:
        outcome.fail(trial, f"{method}: {damaged}")
    if filler is not None:
        filler.unlink()
    done = run_child(bsrnn_command(*workspace.train_args(run_dir, "--resume")), logs / f"diskfull-{trial}-c.log")
    if done.returncode != 0:
        outcome.fail(trial, f"{method}: the resume after space returned exited {done.returncode}: "
                            f"{done.output.strip().splitlines()[-1:]}")
        return
    for problem in run_differences(run_dir, workspace.reference()):
        outcome.fail(trial, f"{method}: {problem}")


def diskfull_campaign(workspace: Workspace, trials: int, seed: int) -> Outcome:
    """Saves that cannot fit: a full tmpfs (if mountable) alternating with RLIMIT_FSIZE."""
    outcome = Outcome("diskfull", trials, seed)
    rng = random.Random(seed)
    workspace.reference()
    mount_point = workspace.root / "tmpfs"
    tmpfs = can_mount_tmpfs(mount_point)
    if not tmpfs:
        outcome.count("tmpfs_unavailable")
    for trial in range(trials):
        method = "tmpfs" if tmpfs and trial % 2 == 0 else "rlimit"
        if method == "tmpfs":
            with small_filesystem(mount_point, 24) as base:
                _diskfull_trial(outcome, trial, workspace, rng, base, method)
        else:
            base = workspace.fresh_dir("diskfull")
            base.mkdir()
            _diskfull_trial(outcome, trial, workspace, rng, base, method)
    return outcome
