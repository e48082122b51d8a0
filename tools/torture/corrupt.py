"""``corrupt``: every flipped byte and truncation of either checkpoint is caught.

Single-byte changes and truncations at random offsets of ``checkpoint_last.pt`` and
``checkpoint_best.pt`` of a real run. Each must be detected by the digest and named, ``auto``
must fall back to the other file, ``verify`` must single out the damaged one. Loads are in
process (milliseconds each); the first few cases also go through ``bsrnn ckpt verify`` and a
real ``bsrnn train --resume``, which must resume from the other file with a warning.
"""

from __future__ import annotations

import contextlib
import logging
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

from bsrnn.checkpoint import CheckpointError, fileformat, load_checkpoint, verify
from torture.common import Outcome, Workspace, bsrnn_command, run_child

NAMES = ("checkpoint_last.pt", "checkpoint_best.pt")


@contextlib.contextmanager
def _captured_warnings() -> Iterator[list[str]]:
    """The engine's warnings during the block, kept off the console (thousands of them)."""
    messages: list[str] = []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger = logging.getLogger("bsrnn.checkpoint")
    handler, saved = _Keep(level=logging.WARNING), (logger.propagate, logger.level)
    logger.addHandler(handler)
    logger.propagate, logger.level = False, logging.WARNING
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.propagate, logger.level = saved


def damage(data: bytes, kind: str, rng: random.Random) -> tuple[bytes, str]:
    """A single-byte change (``flip``) or a truncation at a random offset, and its description."""
    if kind == "flip":
        offset = rng.randrange(len(data))
        value = data[offset] ^ rng.randrange(1, 256)
        return data[:offset] + bytes([value]) + data[offset + 1 :], f"byte {offset} of {len(data)} changed"
    length = rng.randrange(len(data))
    return data[:length], f"truncated to {length} of {len(data)} bytes"


def edge_damages(data: bytes) -> list[tuple[bytes, str]]:
    """Damage at the places a format is most likely to get wrong: both ends and the trailer."""
    size = len(data)
    comment = fileformat.TRAILER_SIZE - 22
    cases = [(b"", "truncated to 0 bytes"), (data[:1], "truncated to 1 byte"), (data[:-1], "last byte cut"),
             (data[: size - comment - 2] + b"\0\0", "integrity comment stripped"),
             (data[: size - fileformat.TRAILER_SIZE], "whole trailer cut")]
    for offset in (0, size - 1, size - comment, size - comment - 1, size - fileformat.TRAILER_SIZE):
        cases.append((data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1 :], f"bit flip at {offset}"))
    return cases


def check_damaged(outcome: Outcome, trial: str, run_dir: Path, target: str) -> None:
    """The damaged ``target`` is detected and named; ``auto`` and ``verify`` do the right thing."""
    path = run_dir / target
    other = NAMES[1 - NAMES.index(target)]
    with _captured_warnings() as warnings:
        try:
            load_checkpoint(path)
        except CheckpointError as error:
            outcome.count(type(error).__name__)
            if str(path) not in str(error):
                outcome.fail(trial, f"{target}: the error does not name the file: {error}")
        except Exception as error:  # anything else is a crash a user would see as a traceback
            outcome.fail(trial, f"{target}: {type(error).__name__} instead of a checkpoint error: {error}")
        else:
            outcome.fail(trial, f"{target}: the damage was NOT detected; the file loaded")
            return
        try:
            loaded = load_checkpoint(run_dir, "auto")
        except Exception as error:  # noqa: BLE001 - reported, the campaign goes on
            outcome.fail(trial, f"auto did not fall back to {other}: {type(error).__name__}: {error}")
        else:
            if loaded.path.name != other:
                outcome.fail(trial, f"auto loaded {loaded.path.name}, not the undamaged {other}")
            if target == NAMES[0] and not (loaded.fell_back and any(str(path) in m for m in warnings)):
                outcome.fail(trial, "auto fell back without a warning naming the damaged file")
    results = {result.path.name: result.ok for result in verify(run_dir)}
    if results.get(target) is not False or results.get(other) is not True:
        outcome.fail(trial, f"verify did not single out {target}: {results}")


def cli_checks_for_damage(outcome: Outcome, trial: str, workspace: Workspace, run_dir: Path, target: str,
                          train: bool) -> None:
    """``bsrnn ckpt verify`` fails naming the file; ``train --resume`` falls back to the other."""
    logs = workspace.root / "logs"
    result = run_child(bsrnn_command("ckpt", "verify", str(run_dir)), logs / f"corrupt-{trial}-verify.log")
    outcome.count("cli_verify")
    if result.returncode in (0, None) or f"FAIL {run_dir / target}" not in result.output:
        outcome.fail(trial, f"`bsrnn ckpt verify` exited {result.returncode} without naming {target}")
    if not train:
        return
    copy = workspace.fresh_dir("corrupt-resume")
    shutil.copytree(run_dir, copy)
    best_step = int(load_checkpoint(copy / "checkpoint_best.pt").payload["global_step"])
    result = run_child(bsrnn_command(*workspace.train_args(copy, "--resume", "--max-steps", "1")),
                       logs / f"corrupt-{trial}-train.log")
    outcome.count("cli_train_fallback")
    if result.returncode != 0:
        outcome.fail(trial, f"train --resume with a damaged last exited {result.returncode}: "
                            f"{result.output.strip().splitlines()[-1:]}")
        return
    if "falling back to" not in result.output or str(copy / target) not in result.output:
        outcome.fail(trial, "train --resume fell back without a warning naming the damaged file")
    if load_checkpoint(copy, "last").payload["global_step"] != best_step + 1:
        outcome.fail(trial, "train --resume did not continue from checkpoint_best.pt")


def corrupt_campaign(workspace: Workspace, trials: int, seed: int, cli_checks: int = 3) -> Outcome:
    """``trials`` byte changes and ``trials`` truncations, each of a randomly chosen file."""
    outcome = Outcome("corrupt", trials, seed)
    rng = random.Random(seed)
    reference = workspace.reference()
    originals = {name: (reference / name).read_bytes() for name in NAMES}
    if originals[NAMES[0]] == originals[NAMES[1]]:
        outcome.fail("setup", "the reference run's last and best are identical; fallback cannot be told apart")
        return outcome
    run_dir = workspace.fresh_dir("corrupt")
    run_dir.mkdir()
    for name, data in originals.items():
        (run_dir / name).write_bytes(data)
    cases: list[tuple[str, str, bytes, str]] = []
    for name in NAMES:
        cases += [(f"edge-{name[11:15]}-{i}", name, data, what)
                  for i, (data, what) in enumerate(edge_damages(originals[name]))]
    for kind in ("flip", "truncate"):
        for index in range(trials):
            # The first of each kind damages last: the case the CLI checks resume from best.
            name = NAMES[0] if index == 0 else rng.choice(NAMES)
            data, what = damage(originals[name], kind, rng)
            cases.append((f"{kind}-{index}", name, data, what))
    cli_done = 0
    for label, name, data, what in cases:
        (run_dir / name).write_bytes(data)
        try:
            before = len(outcome.failures)
            check_damaged(outcome, f"{label} ({name} {what})", run_dir, name)
            if cli_done < cli_checks and not label.startswith("edge"):
                cli_checks_for_damage(outcome, label, workspace, run_dir, name,
                                      train=name == NAMES[0] and outcome.counts.get("cli_train_fallback", 0) < 2)
                cli_done += 1
            outcome.count("detected" if len(outcome.failures) == before else "with_problems")
        finally:
            (run_dir / name).write_bytes(originals[name])
    return outcome
