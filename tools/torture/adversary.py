"""``adversary``: every file a run can hold, in every hostile form, under every command.

The hand-written tables of ``hostile`` and ``corrupt`` cover the cases someone thought of. This
campaign generates its cases as a matrix, so that a file, a form or a command added later is
covered without anyone thinking of it:

- **Files** (``targets``): the run directory's names from the code's own constants
  (``bsrnn.checkpoint``'s ``LAST_NAME``, ``BEST_NAME``, ``INDEX_NAME``, the lock's ``LOCK_NAME``,
  ``bsrnn.training.run_files.RUN_FILE_NAMES``), then every other file the base run holds after it
  was built: the superseded checkpoint that a resume from best keeps and the plot that
  ``bsrnn plot`` leaves in it; and the file that ``bsrnn enhance`` wrote into its ``--out`` folder.
  (``tensorboard/`` is not covered: the base run is trained without ``--tensorboard``.)
- **Forms** (``FORMS``): missing; empty; truncated at a random length; one byte changed at a
  random offset; a real checkpoint rewritten with ``format_version`` 99 (``write_checkpoint``, a
  valid digest); another tool's ``torch.save`` dict; a bundle of ``bsrnn ckpt export``; a FIFO; a
  directory (holding the original file); a symbolic link into another folder (the original moved
  there); a hard link shared with a copy of the same folder (another run); the original kept with
  a sibling whose name is not UTF-8 (``<stem>\\xfd<suffix>``, holding a copy of the original).
  Every form is applied to every file, whatever the file's kind.
- **Commands** (``RUN_COMMANDS``, ``OUTPUT_COMMANDS``): for a run directory's file every command
  that reads or writes a run directory: ``train`` fresh, ``--resume``, ``--resume auto --load best``
  (a bare ``--resume`` *is* ``--resume auto``, so this variant takes the other file),
  ``--resume DIR`` and ``--resume FILE`` (the file itself when it is a ``.pt``, else the
  superseded one), each with ``--max-steps 1``; ``enhance``, ``evaluate``, ``plot --overwrite``,
  ``ckpt inspect``/``verify``/``export``/``migrate --out RUN`` and ``data prepare vbd --out RUN``;
  for the enhanced file: ``enhance`` into its folder, the same with ``--overwrite``, and ``score``.

The base run is built once per campaign (``bsrnn train --demo`` with the e2e tests' tiny model,
8 steps; a resume from best for one step, which keeps the 8-step state as a superseded file;
``plot``; ``ckpt export``; ``enhance``) and each case works on a copy of it (file copies, never
links), in a case folder holding ``run/``, ``enhanced/`` and, where a form needs them,
``elsewhere/`` (symbolic link targets) and ``other-run/`` or ``other-enhanced/`` (hard link
partners).

Each command must:

1. exit 0 or 2; 1 only where the command line documents it: ``ckpt verify`` finding a file that
   does not verify, or a write failure (``error: Could not write|keep|save ...``,
   ``RunFailedError``/``CheckpointWriteError``);
2. print no ``Traceback``;
3. exit within ``TIMEOUT_S`` (else: a hang; the process group is killed);
4. lose no byte. Before the command (after the form is applied) every regular file in the case
   folder is hashed (SHA-256); links are not followed, but their targets are regular files of
   the case folder, so they are hashed too, and so are the hard link partners in the other run.
   After the command every regular file of the case folder is hashed again, and each
   pre-existing content must still be the content of some regular file there (at the same path
   or any other: a superseded or quarantined copy, a file moved). The only exceptions are the
   files the command replaces by design, and only at their paths in the folder the command
   writes (never a link target, never a hard link partner in another folder):

   - ``RUN/checkpoint_last.pt`` may be gone only if the state it held is the one the command
     continued: the new ``RUN/checkpoint_last.pt`` verifies and the last entry of its lineage
     (the state this invocation resumed from) has that file's digest;
   - ``RUN/checkpoint_best.pt`` may be gone only if the command continued that state, or a state
     whose monitor record names it as its best (``monitor.best_digest``; ``"this file"``: the
     state itself), read from the files as they were before the command;
   - ``RUN/metrics.jsonl`` may be appended to: the new file starts with the old one up to and
     including its last newline (a torn last line is dropped by design);
     ``RUN/train.log`` may be appended to: the new file starts with the old one;
   - ``RUN/checkpoint_index.json``, ``RUN/status.json`` and ``RUN/config.toml`` are rewritten;
   - ``.lock`` holds only its holder's PID: it is not inventoried, anywhere;
   - ``RUN/<plot>`` under ``plot --overwrite`` and ``ENHANCED/<file>`` under ``enhance
     --overwrite``: replaced as asked.

Commands run, by default, in a fork of this process after the heavy imports (torch, the trainer,
matplotlib) are done once: the same ``bsrnn.cli.main.main`` in a new process and session, its
output in a log, a fresh stdout (UTF-8, ``strict``, as under a UTF-8 locale such as
``en_US.UTF-8``; this machine's ``C.UTF-8`` would escape undecodable names silently) and
stderr, default signal handlers, one thread, no ``atexit`` of the parent; a command costs its
own work, not 3-4 s of start-up. ``--exec`` (or any other thread alive in this process, where
a fork would be unsafe) runs ``python -m bsrnn`` instead, with ``PYTHONIOENCODING=utf-8:strict``.

The matrix is shuffled with the seed: ``--trials N`` runs its first N combinations (a random
sample; CI), ``--trials all`` all of them, ``--time-limit S`` stops starting new ones after S
seconds, ``--only TEXT`` keeps the combinations whose label contains TEXT (a reproduction).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import random
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bsrnn import keys
from bsrnn.checkpoint import (
    BEST_NAME,
    INDEX_NAME,
    LAST_NAME,
    CheckpointError,
    load_checkpoint,
    load_verified,
    superseded_paths,
    write_checkpoint,
)
from bsrnn.checkpoint.lock import LOCK_NAME
from bsrnn.checkpoint.preserve import THIS_FILE
from bsrnn.training.run_files import CONFIG_NAME, LOG_NAME, METRICS_NAME, RUN_FILE_NAMES, STATUS_NAME
from torture.common import (
    Completed,
    Outcome,
    Workspace,
    bsrnn_command,
    child_env,
    json_line,
    kill_group,
    wait_group_gone,
)

TIMEOUT_S = 60.0
"""A command on the tiny run takes seconds; one that is still running after this hangs."""
TRAIN_ARGS = ("--demo", "--num-channel", "4", "--num-layer", "1", "--batch-size", "8", "--cut-len", "8000",
              "--epochs", "2", "--pesq-workers", "1", "--validation-length", "crops", "--monitor", "val_loss",
              "--seed", "3")
"""The e2e tests' TINY config (tests/e2e.py) with 2 epochs of 6 steps."""
BASE_STEPS = 8
FORMS = ("missing", "empty", "truncated", "flipped", "newer-format", "foreign", "bundle", "fifo", "directory",
         "symlink", "hardlink", "non-utf8-sibling")
RUN, ENHANCED, ELSEWHERE = "run", "enhanced", "elsewhere"
PARTNER = {RUN: "other-run", ENHANCED: "other-enhanced"}
"""The copy of a folder whose file a hard link shares (another run, another enhance output)."""
NON_UTF8 = b"\xfd"
DOCUMENTED_FAILURE = re.compile(r"^error: Could not (write|keep|save) ", re.MULTILINE)
"""The write failures that exit 1 by design (``RunFailedError``, ``CheckpointWriteError``)."""
VERIFY_FAILED = re.compile(r"^\d+ of \d+ checkpoint\(s\) failed verification$", re.MULTILINE)
HEAVY_MODULES = ("torch", "bsrnn.cli.main", "bsrnn.training", "bsrnn.enhancement", "bsrnn.plotting",
                 "bsrnn.metrics", "bsrnn.bundle", "bsrnn.migrate", "bsrnn.data.prepare")
"""Imported once before the first fork, so that each forked command starts warm."""


# ------------------------------------------------------------------------------------ base
@dataclass
class Base:
    """The base run and what the forms and commands need, built once per campaign."""

    root: Path
    run: Path
    enhanced: Path
    bundle: Path
    legacy: Path
    empty_source: Path
    data_dir: Path
    noisy: Path
    clean_dir: Path
    superseded: str
    plot_name: str
    enhanced_name: str
    contents: dict[str, bytes] = field(default_factory=dict)
    """The bytes of the forms that are files of another kind: newer-format, foreign, bundle."""


@dataclass(frozen=True)
class Combination:
    """One case: a file (folder and name), a form and a command."""

    folder: str
    name: str
    form: str
    command: str

    @property
    def label(self) -> str:
        return f"{self.folder}/{self.name} | {self.form} | {self.command}"


def train_args(*extra: str | Path | int) -> list[str]:
    """``bsrnn train`` with the base run's config: a resume must not be refused for another one."""
    return ["train", *TRAIN_ARGS, *map(str, extra)]


def new_files(folder: Path, before: set[str]) -> list[str]:
    """Names in ``folder`` that are not in ``before``: what a command added (the plot's name is
    learnt this way, not written here, so that a renamed default is still covered)."""
    return sorted(name for name in os.listdir(folder) if name not in before)


def build_base(workspace: Workspace, runner: Runner, outcome: Outcome) -> Base:
    """Train the base run, keep a superseded state in it, plot it, export and enhance from it."""
    root = workspace.fresh_dir("adversary-base")
    root.mkdir(parents=True)
    run = root / RUN
    data_dir = workspace.data_dir
    noisy = min((data_dir / "test" / "noisy").glob("*.wav"))
    steps = [
        ("train", train_args("--max-steps", BASE_STEPS, "--run-dir", run)),
        # From best (epoch 0) for one step: the 8-step last is kept as a superseded state.
        ("resume-best", train_args("--max-steps", 1, "--run-dir", run, "--resume", "--load", "best")),
        ("plot", ["plot", str(run)]),
        ("export", ["ckpt", "export", str(run), "--out", str(root / "bundle.safetensors")]),
        ("enhance", ["enhance", str(run), str(noisy), "--out", str(root / ENHANCED)]),
    ]
    seen: set[str] = set()
    plot_name = ""
    for name, argv in steps:
        log = workspace.root / "logs" / f"adversary-base-{name}.log"
        log.unlink(missing_ok=True)
        result = runner.run(argv, log, timeout=300)
        outcome.count("base_commands")
        if result.returncode != 0:
            raise RuntimeError(f"building the base run: `bsrnn {' '.join(argv)}` exited {result.returncode}:\n"
                               f"{result.output[-3000:]}")
        if name == "plot":
            plot_name = new_files(run, seen)[0]
        seen = set(os.listdir(run))
    superseded = superseded_paths(run)
    if not superseded:
        raise RuntimeError(f"the resume from best kept no superseded state in {run}")
    legacy = root / "legacy"
    legacy.mkdir()
    real = load_checkpoint(run / LAST_NAME).payload
    torch.save(real[keys.GENERATOR], legacy / "gene_epoch_0_0.5")
    empty_source = root / "empty-source"
    empty_source.mkdir()
    newer = io.BytesIO()
    write_checkpoint({**real, "format_version": 99}, newer)
    foreign = io.BytesIO()
    torch.save({"model": real[keys.GENERATOR], "epoch": 3, "optimizer": real[keys.GENERATOR_OPTIMIZER]}, foreign)
    return Base(root=root, run=run, enhanced=root / ENHANCED, bundle=root / "bundle.safetensors", legacy=legacy,
                empty_source=empty_source, data_dir=data_dir, noisy=noisy, clean_dir=data_dir / "test" / "clean",
                superseded=superseded[0].name, plot_name=plot_name,
                enhanced_name=os.listdir(root / ENHANCED)[0],
                contents={"newer-format": newer.getvalue(), "foreign": foreign.getvalue(),
                          "bundle": (root / "bundle.safetensors").read_bytes()})


def targets(base: Base) -> list[tuple[str, str]]:
    """(folder, name) of every file covered: the code's names first, then what the base holds."""
    named = [LAST_NAME, BEST_NAME, INDEX_NAME, LOCK_NAME, *RUN_FILE_NAMES]
    held = sorted(entry.name for entry in os.scandir(base.run) if entry.is_file(follow_symlinks=False))
    run_names = named + [name for name in held if name not in named]
    return [(RUN, name) for name in run_names] + [(ENHANCED, base.enhanced_name)]


# -------------------------------------------------------------------------------- commands
@dataclass(frozen=True)
class Case:
    """One case folder: the copies the command works on."""

    root: Path
    base: Base
    name: str  # the target's name

    @property
    def run(self) -> Path:
        return self.root / RUN

    @property
    def enhanced(self) -> Path:
        return self.root / ENHANCED

    def resume_file(self) -> Path:
        """``--resume FILE``: the attacked file when it is a checkpoint, else the superseded state."""
        return self.run / (self.name if self.name.endswith(".pt") else self.base.superseded)


Command = Callable[[Case], list[str]]
RUN_COMMANDS: dict[str, Command] = {
    "train": lambda c: train_args("--max-steps", 1, "--run-dir", c.run),
    "train --resume": lambda c: train_args("--max-steps", 1, "--run-dir", c.run, "--resume"),
    "train --resume auto --load best": lambda c: train_args("--max-steps", 1, "--run-dir", c.run, "--resume", "auto",
                                                            "--load", "best"),
    "train --resume DIR": lambda c: train_args("--max-steps", 1, "--resume", c.run),
    "train --resume FILE": lambda c: train_args("--max-steps", 1, "--run-dir", c.run, "--resume", c.resume_file()),
    "enhance": lambda c: ["enhance", str(c.run), str(c.base.noisy), "--out", str(c.root / "enhance-out")],
    "evaluate": lambda c: ["evaluate", str(c.run), "--data-dir", str(c.base.data_dir), "--workers", "1"],
    "plot --overwrite": lambda c: ["plot", str(c.run), "--overwrite"],
    "ckpt inspect": lambda c: ["ckpt", "inspect", str(c.run)],
    "ckpt verify": lambda c: ["ckpt", "verify", str(c.run)],
    "ckpt export": lambda c: ["ckpt", "export", str(c.run), "--out", str(c.root / "export.safetensors")],
    "ckpt migrate": lambda c: ["ckpt", "migrate", str(c.base.legacy), "--out", str(c.run)],
    "data prepare": lambda c: ["data", "prepare", "vbd", str(c.base.empty_source), "--out", str(c.run)],
}
"""Every command that reads or writes a run directory, given the case's ``run/``."""
OUTPUT_COMMANDS: dict[str, Command] = {
    "enhance": lambda c: ["enhance", str(c.root / "model.safetensors"), str(c.base.noisy), "--out", str(c.enhanced)],
    "enhance --overwrite": lambda c: ["enhance", str(c.root / "model.safetensors"), str(c.base.noisy), "--out",
                                      str(c.enhanced), "--overwrite"],
    "score": lambda c: ["score", str(c.base.clean_dir), str(c.enhanced), "--workers", "1"],
}
"""Every command that reads or writes an enhance output folder, given the case's ``enhanced/``."""
COMMANDS = {RUN: RUN_COMMANDS, ENHANCED: OUTPUT_COMMANDS}


def matrix(base: Base) -> list[Combination]:
    """Every (file, form, command), in a fixed order (the campaign shuffles it with its seed)."""
    return [Combination(folder, name, form, command) for folder, name in targets(base) for form in FORMS
            for command in COMMANDS[folder]]


# ----------------------------------------------------------------------------------- forms
def read_or_empty(path: Path) -> bytes:
    return path.read_bytes() if path.is_file() and not path.is_symlink() else b""


def apply_form(case: Case, folder: str, form: str, rng: random.Random) -> str:
    """Put ``case.name`` of ``folder`` into ``form``; return what was done (for the report)."""
    path = case.root / folder / case.name
    original = read_or_empty(path)
    if form == "missing":
        path.unlink(missing_ok=True)
        return "removed"
    if form == "empty":
        path.write_bytes(b"")
        return "emptied"
    if form == "truncated":
        length = rng.randrange(len(original)) if original else 0
        path.write_bytes(original[:length])
        return f"truncated to {length} of {len(original)} bytes"
    if form == "flipped":
        if not original:
            path.write_bytes(bytes([rng.randrange(1, 256)]))
            return "one random byte written into the empty file"
        offset = rng.randrange(len(original))
        value = original[offset] ^ rng.randrange(1, 256)
        path.write_bytes(original[:offset] + bytes([value]) + original[offset + 1:])
        return f"byte {offset} of {len(original)} changed"
    if form in case.base.contents:
        path.unlink(missing_ok=True)
        path.write_bytes(case.base.contents[form])
        return f"replaced by {form} bytes"
    if form == "fifo":
        path.unlink(missing_ok=True)
        os.mkfifo(path)
        return "a FIFO"
    if form == "directory":
        path.unlink(missing_ok=True)
        path.mkdir()
        (path / case.name).write_bytes(original)
        return "a directory holding the original"
    if form == "symlink":
        elsewhere = case.root / ELSEWHERE
        elsewhere.mkdir(exist_ok=True)
        (elsewhere / case.name).write_bytes(original)
        path.unlink(missing_ok=True)
        path.symlink_to(elsewhere / case.name)
        return f"a symbolic link to {ELSEWHERE}/{case.name}"
    if form == "hardlink":
        partner = case.root / PARTNER[folder]
        if not partner.exists():
            shutil.copytree(case.root / folder, partner, symlinks=True)
        path.unlink(missing_ok=True)
        os.link(partner / case.name, path)
        return f"a hard link shared with {PARTNER[folder]}/{case.name}"
    if form == "non-utf8-sibling":
        stem, dot, suffix = case.name.rpartition(".")
        name = (os.fsencode(stem) + NON_UTF8 + b"." + os.fsencode(suffix)) if dot and stem else (
            os.fsencode(case.name) + NON_UTF8)
        with open(os.path.join(os.fsencode(case.root / folder), name), "wb") as handle:
            handle.write(original)
        return f"the original beside a copy named {name!r}"
    raise ValueError(f"unknown form {form!r}")


# ------------------------------------------------------------------------------- inventory
@dataclass(frozen=True)
class Checkpoint:
    """What the rules need of a checkpoint that verified before the command."""

    digest: str  # the engine's labelled digest
    best_digest: str | None  # its monitor record's best


@dataclass
class Inventory:
    """SHA-256 of every regular file of a case folder, and the checkpoints among them."""

    files: dict[str, str]  # path relative to the case root (surrogate-escaped) -> sha256
    checkpoints: dict[str, Checkpoint] = field(default_factory=dict)  # same keys, the .pt files that verify

    def digests(self) -> set[str]:
        return set(self.files.values())


def regular_files(root: Path) -> Iterator[str]:
    """Relative paths of the regular files under ``root``; links and special files are skipped
    (never followed or opened: a FIFO would block the campaign itself)."""
    for folder, dirs, files in os.walk(root):
        for name in files + dirs:
            path = os.path.join(folder, name)
            if stat.S_ISREG(os.lstat(path).st_mode):
                yield os.path.relpath(path, root)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def take_inventory(root: Path, with_checkpoints: bool) -> Inventory:
    inventory = Inventory({})
    for relative in regular_files(root):
        if os.path.basename(relative) == LOCK_NAME:
            continue  # the holder's PID, no training state
        inventory.files[relative] = sha256(root / relative)
        if with_checkpoints and relative.endswith(".pt"):
            try:
                payload, digest = load_verified(root / relative)
            except CheckpointError:
                continue
            monitor = payload.get("monitor") if isinstance(payload.get("monitor"), dict) else {}
            inventory.checkpoints[relative] = Checkpoint(digest, monitor.get("best_digest"))
    return inventory


def continued_state(path: Path) -> str | None:
    """The digest of the state a new checkpoint continues (its lineage's last entry), if it verifies."""
    if not os.path.lexists(path) or not stat.S_ISREG(os.lstat(path).st_mode):
        return None
    try:
        payload, _ = load_verified(path)
    except CheckpointError:
        return None
    lineage = payload.get("lineage")
    if not isinstance(lineage, list) or not lineage or not isinstance(lineage[-1], dict):
        return None
    return lineage[-1].get("digest")


def starts_with(path: Path, prefix: bytes) -> bool:
    return os.path.lexists(path) and stat.S_ISREG(os.lstat(path).st_mode) and path.read_bytes().startswith(prefix)


def lost_contents(root: Path, before: Inventory, after: Inventory, writes: str, replaced_as_asked: str | None,
                  old_bytes: dict[str, bytes]) -> list[str]:
    """Pre-existing contents found nowhere after the command, less the by-design replacements
    (see the module docstring); each as a message naming the path it had. ``writes``: the folder
    the command writes; ``replaced_as_asked``: the path it was told to replace (``--overwrite``)."""
    present = after.digests()
    by_digest = {check.digest: check for check in before.checkpoints.values()}
    continued = continued_state(root / writes / LAST_NAME)
    lost = []
    for relative, digest in sorted(before.files.items()):
        if digest in present:
            continue
        folder, _, name = relative.partition(os.sep)
        own = folder == writes and os.sep not in name
        why = None
        if own and name == LAST_NAME:
            old = before.checkpoints.get(relative)
            if old is not None and continued == old.digest:
                why = "continued"
        elif own and name == BEST_NAME:
            old = before.checkpoints.get(relative)
            state = by_digest.get(continued) if continued else None
            if old is not None and state is not None and (
                    continued == old.digest or state.best_digest == old.digest
                    or (state.best_digest == THIS_FILE and state.digest == old.digest)):
                why = "the continued state's own best"
        elif own and name == METRICS_NAME:
            old = old_bytes[relative]
            if starts_with(root / relative, old[: old.rfind(b"\n") + 1]):
                why = "appended to"
        elif own and name == LOG_NAME:
            if starts_with(root / relative, old_bytes[relative]):
                why = "appended to"
        elif own and name in (INDEX_NAME, STATUS_NAME, CONFIG_NAME):
            why = "rewritten"
        elif relative == replaced_as_asked:
            why = "replaced as asked"
        if why is None:
            lost.append(f"{relative!a} (sha256 {digest[:12]}...) is nowhere in the case folder any more")
    return lost


# -------------------------------------------------------------------------------- runners
class Runner:
    """Runs ``bsrnn ARGV`` in a new process and session; output to a log; killed at ``timeout``."""

    def __init__(self, exec_mode: bool) -> None:
        self.exec_mode = exec_mode
        self.warm = False

    def forking(self) -> bool:
        """A fork copies only the calling thread: with other threads alive, a lock one of them
        holds would stay locked in the child forever, so then the command is exec'ed instead."""
        return not self.exec_mode and hasattr(os, "fork") and threading.active_count() == 1

    def run(self, argv: list[str], log_path: Path, timeout: float = TIMEOUT_S) -> Completed:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if not self.forking():
            return run_exec(argv, log_path, timeout)
        if not self.warm:
            for module in HEAVY_MODULES:
                __import__(module)
            self.warm = True
        return run_forked(argv, log_path, timeout)


def run_exec(argv: list[str], log_path: Path, timeout: float) -> Completed:
    """``python -m bsrnn ARGV`` with stdout as strict as under a UTF-8 locale (see the docstring)."""
    started = time.monotonic()
    with open(log_path, "ab") as log:
        process = subprocess.Popen(bsrnn_command(*argv), stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True,
                                   env={**child_env(), "PYTHONIOENCODING": "utf-8:strict"})
        try:
            code: int | None = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        kill_group(process.pid)
        process.wait()
    wait_group_gone(process.pid)
    return Completed(code, log_path.read_bytes().decode(errors="replace"), time.monotonic() - started)


def run_forked(argv: list[str], log_path: Path, timeout: float) -> Completed:
    """Fork, run ``main(argv)`` in the child as a fresh ``bsrnn`` process would, wait at most ``timeout``."""
    started = time.monotonic()
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            stream.flush()
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    pid = os.fork()
    if pid == 0:  # the child: never returns into the campaign
        code = 1
        try:
            code = forked_main(argv, log_fd)
        except BaseException:  # noqa: BLE001 - what a real interpreter prints for an escaping exception
            with contextlib.suppress(Exception):
                traceback.print_exc()
                sys.stderr.flush()
        finally:
            os._exit(code)
    os.close(log_fd)
    code = wait_pid(pid, timeout)
    kill_group(pid)  # a worker left behind by the command, or the command itself after a timeout
    if code is None:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    wait_group_gone(pid)
    return Completed(code, log_path.read_bytes().decode(errors="replace"), time.monotonic() - started)


def wait_pid(pid: int, timeout: float) -> int | None:
    """The exit status of child ``pid`` (negative: killed by that signal), None at ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)


def forked_main(argv: list[str], log_fd: int) -> int:
    """In the forked child: make the process look like a new ``bsrnn`` one, then run the command."""
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    os.close(devnull)
    for number in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP, signal.SIGALRM):
        signal.signal(number, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.environ.update({key: value for key, value in child_env().items() if key.endswith("_THREADS")})
    torch.set_num_threads(1)
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115 - the process's stdin for good
    sys.stdout = sys.__stdout__ = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8",
                                                   errors="strict", write_through=True)
    sys.stderr = sys.__stderr__ = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8",
                                                   errors="backslashreplace", write_through=True)
    root = logging.getLogger()
    for handler in root.handlers[:]:  # the parent's (pytest's capture): a new process has none
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)
    sys.argv = ["bsrnn", *argv]
    from bsrnn.cli.main import main

    try:
        code = main(argv)
    except SystemExit as exit_:  # --help, or a library calling sys.exit
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    return code


# --------------------------------------------------------------------------------- judging
def verdict(result: Completed, command: str) -> tuple[str, list[str]]:
    """The exit status's histogram key and the problems of exit status, output and time."""
    problems = []
    if result.returncode is None:
        return "hang", [f"no exit within {TIMEOUT_S:.0f} s (a hang; the process group was killed)"]
    key = f"exit {result.returncode}"
    last = (result.output.strip().splitlines() or [""])[-1]
    if result.returncode == 1:
        if command == "ckpt verify" and VERIFY_FAILED.search(result.output):
            key = "exit 1 (verify: a file failed)"
        elif DOCUMENTED_FAILURE.search(result.output):
            key = "exit 1 (write failure)"
        else:
            problems.append(f"exit 1, which is documented only for a write failure or `ckpt verify`: {last}")
    elif result.returncode not in (0, 2):
        problems.append(f"exit {result.returncode}: {last}")
    if "Traceback" in result.output:
        problems.append(f"a traceback: {last}")
    return key, problems


def run_combination(combination: Combination, base: Base, workspace: Workspace, runner: Runner,
                    rng: random.Random, index: int) -> tuple[str, list[str], Path, float]:
    """Build the case, take the inventory, run the command, judge; return (exit key, problems,
    case folder, the command's seconds)."""
    root = workspace.fresh_dir("adversary-case")
    root.mkdir(parents=True)
    shutil.copytree(base.run, root / RUN, symlinks=True)
    shutil.copytree(base.enhanced, root / ENHANCED, symlinks=True)
    shutil.copy(base.bundle, root / "model.safetensors")
    case = Case(root, base, combination.name)
    done = apply_form(case, combination.folder, combination.form, rng)
    before = take_inventory(root, with_checkpoints=True)
    old_bytes = {relative: (root / relative).read_bytes() for relative in before.files
                 if os.path.basename(relative) in (METRICS_NAME, LOG_NAME)}
    argv = COMMANDS[combination.folder][combination.command](case)
    log = workspace.root / "logs" / f"adversary-{index:04d}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(f"# {combination.label}: {done}\n# bsrnn {' '.join(argv)}\n", errors="backslashreplace")
    result = runner.run(argv, log)
    key, problems = verdict(result, combination.command)
    after = take_inventory(root, with_checkpoints=False)
    replaced_as_asked = {"plot --overwrite": os.path.join(RUN, base.plot_name),
                         "enhance --overwrite": os.path.join(ENHANCED, base.enhanced_name)}
    problems += lost_contents(root, before, after, combination.folder,
                              replaced_as_asked.get(combination.command), old_bytes)
    if problems:
        (root / "CASE.txt").write_text(f"{combination.label}\nform: {done}\ncommand: bsrnn {' '.join(argv)}\n"
                                       f"log: {log}\n", errors="backslashreplace")
        problems = [f"{problem} [form: {done}; bsrnn {' '.join(argv)}; log {log}]" for problem in problems]
    return key, problems, root, result.seconds


def adversary_campaign(workspace: Workspace, trials: int, seed: int, exec_mode: bool = False,
                       time_limit: float | None = None, only: str | None = None, keep: bool = False) -> Outcome:
    """The first ``trials`` combinations of the shuffled matrix (all of it if ``trials`` is 0)."""
    outcome = Outcome("adversary", trials, seed)
    runner = Runner(exec_mode)
    started = time.monotonic()
    base = build_base(workspace, runner, outcome)
    combinations = matrix(base)
    outcome.counts["matrix"] = len(combinations)
    outcome.counts["bytes_lost"] = 0
    random.Random(seed).shuffle(combinations)
    if only:
        combinations = [c for c in combinations if only in c.label]
    if trials:
        combinations = combinations[:trials]
    rng = random.Random(seed + 1)
    run = 0
    results = workspace.root / "adversary-results.jsonl"  # one line per combination, for the record
    for index, combination in enumerate(combinations):
        if time_limit is not None and time.monotonic() - started > time_limit:
            outcome.counts["stopped_by_time_limit"] = len(combinations) - index
            break
        key, problems, root, seconds = run_combination(combination, base, workspace, runner, rng, index)
        run += 1
        with open(results, "a", encoding="utf-8") as handle:
            handle.write(json_line(label=combination.label, folder=combination.folder, file=combination.name,
                                   form=combination.form, command=combination.command, answer=key,
                                   seconds=round(seconds, 2), problems=problems) + "\n")
        outcome.count(key)
        outcome.count("forked" if runner.forking() else "exec'ed")
        for problem in problems:
            outcome.count("bytes_lost" if "nowhere in the case folder" in problem else "other_findings")
            outcome.fail(combination.label, problem)
        if not problems and not keep:
            shutil.rmtree(root)
    outcome.trials = run
    return outcome
