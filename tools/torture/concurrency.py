"""``concurrency``: one trainer per run directory.

A second trainer on a run directory in use is refused (exit 2, naming the holder's PID), also
when both start at once; a SIGKILLed holder's lock is taken over.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from torture.common import (
    Child,
    Outcome,
    Workspace,
    bsrnn_command,
    damaged_checkpoints,
    read_events,
    run_child,
    wait_until,
)


def _refused_naming(outcome: Outcome, trial: str, output: str, code: int | None, holder: int) -> bool:
    last = (output.strip().splitlines() or [""])[-1]
    if code != 2 or "Traceback" in output:
        outcome.fail(trial, f"the second trainer exited {code}, expected 2: {last}")
        return False
    if f"PID {holder}" not in output and "already holds checkpoints" not in output:
        outcome.fail(trial, f"the refusal does not name the holder's PID {holder}: {last}")
        return False
    if "Saved checkpoint" in output or "Epoch 0, Step" in output:
        outcome.fail(trial, "the refused trainer trained or saved")
    return True


def _lock_holder(run_dir: Path) -> str:
    try:
        return (run_dir / ".lock").read_text().strip()
    except OSError:
        return ""


def _while_running(outcome: Outcome, trial: str, workspace: Workspace) -> None:
    """B on A's run directory while A trains; then A is SIGKILLed and C takes over its lock."""
    run_dir = workspace.fresh_dir("concurrency")
    logs = workspace.root / "logs"
    args = workspace.train_args(run_dir, "--resume", "--epochs", "100")  # A must outlive B's start-up
    with Child(bsrnn_command(*args), logs / f"{run_dir.name}-a.log") as first:
        # The lock is taken (and the holder's PID written) before anything is trained.
        started = wait_until(lambda: _lock_holder(run_dir) == str(first.pid), 300, 0.02,
                             lambda: first.poll() is None)
        if not started:
            outcome.fail(trial, f"the first trainer did not take the lock: {first.output()[-300:]}")
            return
        second = run_child(bsrnn_command(*args), logs / f"{run_dir.name}-b.log")
        if _refused_naming(outcome, trial, second.output, second.returncode, first.pid):
            outcome.count("refused_while_running")
        if first.poll() is not None:
            outcome.fail(trial, f"the holder died ({first.poll()}) while the second trainer was refused")
        with contextlib.suppress(ProcessLookupError):
            os.kill(first.pid, signal.SIGKILL)
        first.wait(30)
    holder = (run_dir / ".lock").read_text().strip()
    third = run_child(bsrnn_command(*args, "--max-steps", "1"), logs / f"{run_dir.name}-c.log")
    if third.returncode != 0 or "in use" in third.output:
        outcome.fail(trial, f"the stale lock of SIGKILLed PID {holder} was not taken over: exit {third.returncode}")
    else:
        outcome.count("stale_lock_taken_over")


def _simultaneous(outcome: Outcome, trial: str, workspace: Workspace) -> None:
    """Two fresh trainers started together on one empty run directory: exactly one trains."""
    run_dir = workspace.fresh_dir("concurrency")
    logs = workspace.root / "logs"
    args = workspace.train_args(run_dir, "--resume")
    with Child(bsrnn_command(*args), logs / f"{run_dir.name}-a.log") as one, \
            Child(bsrnn_command(*args), logs / f"{run_dir.name}-b.log") as two:
        ended = wait_until(lambda: one.poll() is not None or two.poll() is not None, 300, 0.05)
        if not ended:
            outcome.fail(trial, "neither of two simultaneous trainers was refused within 300 s")
            return
        loser, winner = (one, two) if one.poll() is not None else (two, one)
        if _refused_naming(outcome, trial, loser.output(), loser.poll(), winner.pid):
            outcome.count("refused_simultaneous")
        # The winner must be training undisturbed: let it log a step (then the block kills it).
        if not wait_until(lambda: any(e.get("event") == "step" for e in read_events(run_dir)[0]), 300, 0.05,
                          lambda: winner.poll() is None):
            outcome.fail(trial, f"the trainer that got the run directory exited {winner.poll()}")
    if damaged_checkpoints(run_dir):
        outcome.fail(trial, f"damaged: {damaged_checkpoints(run_dir)}")


def concurrency_campaign(workspace: Workspace, trials: int, seed: int) -> Outcome:
    """Alternately: a trainer started beside a running one, and two started at once."""
    outcome = Outcome("concurrency", trials, seed)
    order = [_while_running, _simultaneous]  # the first trial is always a trainer beside a running one
    for trial in range(trials):
        variant = order[trial % 2]
        variant(outcome, f"{trial} {variant.__name__.strip('_')}", workspace)
    return outcome
