"""``kill`` and ``signals``: interrupt the real trainer at random instants until the run is done.

A run is driven by the same command line every time (``--resume``, which starts fresh on an
empty run directory), as a requeued cluster job is. After each interruption the campaign checks
what a user would find: every checkpoint verifies, no process outlived the trainer, and no
logged step is lost beyond what the save order allows. When the run completes it must equal
the uninterrupted reference bit for bit.

How much a SIGKILL may lose, from the trainer's loop: a step is logged (``metrics.jsonl``) in
``_account``, then ``save`` snapshots the state and a background thread commits it. The next
step's ``save`` first waits for that commit. So when step L is logged, step L-1's commit may
still be in flight, and a SIGKILL then leaves step L-2 as the newest checkpoint: the bound is
``committed >= logged - 2`` (``logged - 1`` with ``--sync-save``). A preemption signal loses
nothing: the trainer saves after the step it finishes, so ``committed == logged``.

Where a kill lands is chosen from four plans so that every phase is hit, not only start-up
(which is most of a short process's life): a random instant; just after a step is logged
(mid-step or mid-save); the moment a save's temporary file appears (mid-save); during a
validation. The phase is then read from what the trainer had printed.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bsrnn.checkpoint import load_checkpoint
from bsrnn.training.run_files import read_metrics_log
from torture.common import (
    EPOCHS,
    RUN_TIMEOUT_S,
    STEPS_PER_EPOCH,
    TOTAL_STEPS,
    Child,
    Outcome,
    Workspace,
    bsrnn_command,
    committed_step,
    damaged_checkpoints,
    kill_group,
    last_logged_step,
    partial_files,
    read_events,
    run_differences,
    timing_of,
    wait_group_gone,
    wait_until,
)

PLANS = ("anytime", "step", "save", "validation")
ASYNC_SAVE_LAG = 2
"""Steps a SIGKILL may lose with asynchronous saves (1 with ``--sync-save``); see the module docstring."""
PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
MAX_INTERRUPTIONS_PER_RUN = 6


@dataclass(frozen=True)
class Plan:
    """When to interrupt: ``kind`` (one of ``PLANS``), the global step to wait for, a delay."""

    kind: str
    step: int
    delay: float


@dataclass(frozen=True)
class Timing:
    """A process's phases as measured on the reference run, to aim kills."""

    startup_s: float
    step_s: float
    validation_s: float


def measure_timing(workspace: Workspace) -> Timing:
    reference = workspace.reference()
    step_s, validation_s = timing_of(reference)
    events = read_events(reference)[0]
    training = events[-1]["time"] - events[0]["time"] if events else 10.0
    return Timing(max(workspace.reference_seconds - training, 2.0), step_s, validation_s)


def progress_of(run_dir: Path) -> tuple[int, bool]:
    """(committed global step, whether a validation is due first thing after a resume)."""
    if not (run_dir / "checkpoint_last.pt").exists():
        return 0, False
    payload = load_checkpoint(run_dir, "last").payload
    return int(payload["global_step"]), int(payload["step_in_epoch"]) == STEPS_PER_EPOCH


def choose_plan(rng: random.Random, run_dir: Path, timing: Timing, kind: str | None = None) -> Plan:
    kind = kind or rng.choice(PLANS)
    committed, validation_due = progress_of(run_dir)
    first = committed + 1
    if validation_due and (kind == "validation" or first > TOTAL_STEPS):
        # Resumed at an epoch's end: the validation runs right after start-up.
        return Plan("anytime", 0, timing.startup_s + rng.uniform(0.0, timing.validation_s * 1.2))
    if first > TOTAL_STEPS:  # complete (the kill came after the final save): a start-up is left
        return Plan("anytime", 0, rng.uniform(0.0, timing.startup_s))
    # Aim inside the process's life: an instant after its end costs a whole run and no trial.
    if kind == "anytime":
        remaining = TOTAL_STEPS - committed
        validations = sum(1 for e in range(1, EPOCHS + 1) if e * STEPS_PER_EPOCH > committed)
        lifetime = timing.startup_s + remaining * timing.step_s + validations * timing.validation_s
        return Plan(kind, 0, rng.uniform(0.0, 0.7 * lifetime))
    if kind == "validation":
        ends = [e * STEPS_PER_EPOCH for e in range(1, EPOCHS + 1) if e * STEPS_PER_EPOCH >= first]
        return Plan(kind, ends[0] if ends else TOTAL_STEPS, rng.uniform(0.0, timing.validation_s * 0.8))
    return Plan(kind, rng.randint(first, max(first, TOTAL_STEPS - 1)), rng.uniform(0.0, timing.step_s))


def _logged_since(run_dir: Path, offset: int) -> list[dict]:
    """Step events appended to ``metrics.jsonl`` after byte ``offset`` (this process's)."""
    events, _torn = read_metrics_log(run_dir, start=offset)
    return [event for event in events if event.get("event") == "step"]


def _metrics_size(run_dir: Path) -> int:
    try:
        return (run_dir / "metrics.jsonl").stat().st_size
    except FileNotFoundError:
        return 0


def wait_for_plan(child: Child, run_dir: Path, plan: Plan, offset: int) -> bool:
    """Block until the plan's instant; False if the process exited first."""
    alive = lambda: child.poll() is None  # noqa: E731
    if plan.kind == "anytime":
        return child.wait(plan.delay) is None
    reached = wait_until(lambda: any(e["global_step"] >= plan.step for e in _logged_since(run_dir, offset)),
                         RUN_TIMEOUT_S, 0.01, alive)
    if not reached or not alive():
        return False
    if plan.kind == "save":
        wait_until(lambda: bool(partial_files(run_dir)), 2.0, 0.0005, alive)
        time.sleep(plan.delay * 0.005)
    else:
        time.sleep(plan.delay)
    return alive()


def phase_of(output: str, saving: bool) -> str:
    """Where the trainer was, from its last line of output (and a save temporary on disk)."""
    if saving:
        return "mid-save"
    lines = [line for line in output.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    if last.startswith("Epoch ") and ", Step " in last:
        return "step-save"
    if last.startswith("✓ Saved checkpoint_last.pt") and f"step {STEPS_PER_EPOCH})" in last:
        return "validation"
    if "Resuming from" in output and last.startswith("=") and f"step {STEPS_PER_EPOCH} of" in output:
        return "validation"
    if last.startswith("✓ Saved checkpoint_last.pt (epoch") and "step" in last:
        return "mid-step"
    if last.startswith(("VALID - ", "✓ Saved checkpoint_last.pt (epoch", "NEW BEST")):
        return "epoch-end"
    if any(line.startswith("Epoch ") for line in lines):
        return "mid-step"
    return "startup"


def after_interruption(outcome: Outcome, trial: int, run_dir: Path, child: Child, lag: int) -> None:
    """What a SIGKILL or signal may never break: files verify, no orphans, bounded loss."""
    survivors = wait_group_gone(child.pid)
    if survivors:
        outcome.fail(trial, f"processes {survivors} outlived the trainer (PID {child.pid}) by "
                            f"more than 5 s")
        kill_group(child.pid)
    damaged = damaged_checkpoints(run_dir)
    if damaged:
        outcome.fail(trial, "a checkpoint does not verify after the interruption: " + "; ".join(damaged))
        return
    committed = committed_step(run_dir) or 0
    logged = last_logged_step(run_dir)
    outcome.counts.setdefault("max_lag", 0)
    outcome.counts["max_lag"] = max(outcome.counts["max_lag"], logged - committed)
    if committed < logged - lag:
        outcome.fail(trial, f"step {logged} was logged but the newest checkpoint holds step {committed} "
                            f"(more than {lag} step(s) lost)")


def finish_run(outcome: Outcome, trial: int | str, workspace: Workspace, run_dir: Path, child: Child) -> bool:
    """Let the process finish; then the run must equal the reference. False if it hung."""
    code = child.wait(RUN_TIMEOUT_S)
    output = child.output()
    if code is None:
        outcome.fail(trial, f"the resumed run did not finish within {RUN_TIMEOUT_S:.0f} s")
        return False
    if code != 0 or "Traceback" in output:
        outcome.fail(trial, f"the resumed run exited {code}: {output.strip().splitlines()[-1:]}")
        return False
    for problem in run_differences(run_dir, workspace.reference()):
        outcome.fail(trial, problem)
    outcome.count("runs_completed")
    return True


def run_variant(rng: random.Random, outcome: Outcome) -> tuple[list[str], int]:
    """Flags for every process of one run, and the steps a SIGKILL may lose with them.

    A third of the runs save synchronously (the commit then runs in the training thread, under
    ``deferred_signals``), a third load data with 2 worker processes (more processes that must
    not outlive a killed trainer). Neither may change a single bit of the result.
    """
    flags: list[str] = []
    lag = ASYNC_SAVE_LAG
    if rng.random() < 1 / 3:
        flags.append("--sync-save")
        outcome.count("runs_sync_save")
        lag = 1
    if rng.random() < 1 / 3:
        flags += ["--workers", "2"]
        outcome.count("runs_2_loader_workers")
    return flags, lag


def interruption_campaign(name: str, workspace: Workspace, trials: int, seed: int, first_kind: str,
                          interrupt: Callable[[Outcome, int, random.Random, Child, Path, int], None]) -> Outcome:
    """``trials`` interruptions at random instants, each followed by ``--resume``, run after run.

    Each run draws its flags (``run_variant``) and a budget of interruptions; every cycle starts
    the same command line, waits for a planned instant (the first of the campaign of kind
    ``first_kind``) and calls ``interrupt``; a cycle without a plan, or whose process ended
    first, lets the run finish and compares it with the reference.
    """
    outcome = Outcome(name, trials, seed)
    rng = random.Random(seed)
    timing = measure_timing(workspace)
    done = 0
    while done < trials:
        run_dir = workspace.fresh_dir(name)
        budget = min(trials - done, rng.randint(3, MAX_INTERRUPTIONS_PER_RUN))
        flags, lag = run_variant(rng, outcome)
        for cycle in range(budget + 1):
            log = workspace.root / "logs" / f"{run_dir.name}-{cycle}.log"
            kind = first_kind if done == 0 else None
            plan = choose_plan(rng, run_dir, timing, kind) if cycle < budget else None
            offset = _metrics_size(run_dir)
            with Child(bsrnn_command(*workspace.train_args(run_dir, "--resume", *flags)), log) as child:
                if plan is None or not wait_for_plan(child, run_dir, plan, offset):
                    if plan is not None:
                        outcome.count(f"ended_before_{plan.kind}_plan")
                    finish_run(outcome, f"{run_dir.name}/end", workspace, run_dir, child)
                    break
                done += 1
                interrupt(outcome, done, rng, child, run_dir, lag)
    return outcome


def kill_cycle(outcome: Outcome, trial: int, rng: random.Random, child: Child, run_dir: Path, lag: int) -> None:
    """SIGKILL the trainer now; then what a kill may never break."""
    os.kill(child.pid, signal.SIGKILL)
    # Only this process's temporaries: an earlier killed one's stay until start-up.
    saving = any(f".{child.pid}." in name for name in partial_files(run_dir))
    child.wait(30)
    outcome.count(phase_of(child.output(), saving))
    after_interruption(outcome, trial, run_dir, child, lag)


def kill_campaign(workspace: Workspace, trials: int, seed: int) -> Outcome:
    """``trials`` SIGKILLs at random instants; the first always lands while a save is in flight,
    so that even 3 trials cover the worst case."""
    return interruption_campaign("kill", workspace, trials, seed, "save", kill_cycle)


def _send(pid: int, signum: int, to_group: bool) -> None:
    try:
        if to_group:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)
    except ProcessLookupError:
        pass


def signal_cycle(outcome: Outcome, trial: int, rng: random.Random, child: Child, run_dir: Path,
                 lag: int) -> None:
    """Send one preemption signal (and maybe a second during the save); judge the exit."""
    first = rng.choice(PREEMPTION_SIGNALS)
    to_group = rng.random() < 0.3  # as Ctrl-C and SLURM do: every process of the job
    second = rng.choice(PREEMPTION_SIGNALS) if rng.random() < 0.5 else None
    _send(child.pid, first, to_group)
    if second is not None:
        # A save in flight shows as its temporary file (the "✓ Saved" line comes only once the
        # commit is durable). If none is seen in time, the save may be over already: the second
        # signal still lands during the preemption exit and is counted as such.
        alive = lambda: child.poll() is None  # noqa: E731
        during_save = wait_until(lambda: bool(partial_files(run_dir)), 30.0, 0.0005, alive)
        if alive():
            _send(child.pid, second, to_group)
            outcome.count("second_signal_in_save" if during_save else "second_signal_after_save")
    code = child.wait(120)
    output = child.output()
    name = signal.Signals(first).name
    outcome.count(f"{name}{'-group' if to_group else ''}")
    if code is None:
        outcome.fail(trial, f"{name}: the trainer did not exit within 120 s")
        return
    logged_here = any(line.startswith("Epoch ") for line in output.splitlines())
    # Two signals that reach Python's handlers together run in signal-number order, so the
    # second one sent may be the one the trainer reports.
    reported = [s for s in (first, second) if s is not None and f"Preempted by {signal.Signals(s).name}" in output]
    if "Traceback" in output and (reported or "Training complete" in output):
        outcome.fail(trial, f"{name}: a traceback in the output: "
                            f"{[line for line in output.splitlines() if line.strip()][-2:]}")
    if reported:
        outcome.count("preempted")
        if code != 128 + reported[0]:
            outcome.fail(trial, f"{name}: preempted by {signal.Signals(reported[0]).name} but exited {code}, "
                                f"not {128 + reported[0]}")
        after_interruption(outcome, trial, run_dir, child, 0)
        if partial_files(run_dir):
            outcome.fail(trial, f"{name}: a save temporary survived the preemption save")
    elif "Training complete" in output:
        # The last save has committed before the guard goes (Trainer.run); a signal after that
        # can only cut the interpreter's exit short: 0, or death by the signal, loses nothing.
        outcome.count("finished_anyway")
        if code not in (0, -first, 128 + first):
            outcome.fail(trial, f"{name}: training completed but exited {code}")
        after_interruption(outcome, trial, run_dir, child, 0)
    else:
        outcome.count("before_training")
        if logged_here:
            outcome.fail(trial, f"{name} after training started, but no preemption save (exit {code}): "
                                f"{output.strip().splitlines()[-3:]}")
        elif code not in (-first, 128 + first):
            outcome.fail(trial, f"{name} during start-up: exit {code}, expected {128 + first} "
                                f"(or death by the signal): {output.strip().splitlines()[-3:]}")
        elif "Traceback" in output and not output.rstrip().endswith("KeyboardInterrupt"):
            outcome.fail(trial, f"{name} during start-up printed a traceback: {output.strip().splitlines()[-1:]}")
        after_interruption(outcome, trial, run_dir, child, lag)


def signals_campaign(workspace: Workspace, trials: int, seed: int) -> Outcome:
    """``trials`` preemption signals (SIGTERM/SIGUSR1/SIGINT) at random instants; the first always
    comes mid-training, so that even 3 trials see a preemption save."""
    return interruption_campaign("signals", workspace, trials, seed, "step", signal_cycle)
