"""``ddp``: SIGKILL one of two gloo ranks under torchrun; nothing may hang, nothing may be lost.

A trial starts a 2-rank run (``--resume``, so the same command line resumes), waits until a
random step was logged, SIGKILLs rank 0 or rank 1 (found from the ``RANK`` variable of
torchrun's children), and measures how long the survivor and torchrun take to exit. A
survivor blocked in a collective would wait for the process group's timeout; the bound below
is what a cluster job may lose to that. Then the run is resumed with 2 ranks and must end
bit-identical to the uninterrupted 2-rank run.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

from torture.common import (
    RUN_TIMEOUT_S,
    TOTAL_STEPS,
    Child,
    Outcome,
    Workspace,
    committed_step,
    damaged_checkpoints,
    kill_group,
    last_logged_step,
    read_events,
    run_child,
    run_differences,
    torchrun_command,
    wait_group_gone,
    wait_until,
)

EXIT_BOUND_S = 60.0
"""How long torchrun and the survivor may take to exit after a rank was SIGKILLed."""


def rank_pids(agent: int) -> dict[int, int]:
    """rank -> PID of torchrun's worker processes (read from their environment)."""
    ranks = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        parent = int(stat[stat.rfind(")") + 2 :].split()[1])
        if parent != agent:
            continue
        for item in environ:
            if item.startswith(b"RANK="):
                ranks[int(item[5:])] = int(entry.name)
    return ranks


def ddp_campaign(workspace: Workspace, trials: int, seed: int) -> Outcome:
    """``trials`` rank kills, each followed by a 2-rank resume to a bit-identical end."""
    outcome = Outcome("ddp", trials, seed)
    rng = random.Random(seed)
    reference = workspace.ddp_reference()
    exit_times = []
    for trial in range(trials):
        run_dir = workspace.fresh_dir("ddp")
        logs = workspace.root / "logs"
        # A third of the kills land at a random instant from the start (start-up, rendezvous,
        # process-group set-up, where a survivor could wait for a peer that never comes).
        early = rng.random() < 1 / 3
        step = 0 if early else rng.randint(1, TOTAL_STEPS - 1)
        victim_rank = rng.randrange(2)
        with Child(torchrun_command(*workspace.ddp_args(run_dir, "--resume")), logs / f"{run_dir.name}-a.log") as run:
            alive = lambda: run.poll() is None  # noqa: E731
            if early:
                reached = wait_until(lambda: victim_rank in rank_pids(run.pid), 60, 0.01, alive)
                time.sleep(rng.uniform(0.0, 8.0))
            else:
                reached = wait_until(
                    lambda: any(e.get("event") == "step" and e["global_step"] >= step
                                for e in read_events(run_dir)[0]),
                    RUN_TIMEOUT_S, 0.02, alive)
                time.sleep(rng.uniform(0.0, 0.5))
            ranks = rank_pids(run.pid)
            if not reached or victim_rank not in ranks or not alive():
                outcome.fail(trial, f"the 2-rank run did not reach {'its start' if early else f'step {step}'} "
                                    f"(exit {run.poll()})")
                continue
            outcome.count("early_kill" if early else "kill_after_a_step")
            killed_at = time.monotonic()
            os.kill(ranks[victim_rank], signal.SIGKILL)
            code = run.wait(EXIT_BOUND_S)
            if code is None:
                outcome.fail(trial, f"rank {victim_rank} SIGKILLed at step {step}: torchrun still runs after "
                                    f"{EXIT_BOUND_S:.0f} s (the survivor hangs)")
                kill_group(run.pid)
                continue
            survivors = wait_group_gone(run.pid)
            elapsed_all = time.monotonic() - killed_at
            if survivors:
                outcome.fail(trial, f"processes {survivors} outlived torchrun by more than 5 s")
            exit_times.append(elapsed_all)
            outcome.count(f"killed_rank{victim_rank}")
            if code == 0:
                outcome.fail(trial, "torchrun reported success although a rank was SIGKILLed")
        damaged = damaged_checkpoints(run_dir)
        if damaged:
            outcome.fail(trial, f"damaged after the kill: {damaged}")
            continue
        committed, logged = committed_step(run_dir) or 0, last_logged_step(run_dir)
        if committed < logged - 2:
            outcome.fail(trial, f"step {logged} was logged but the checkpoint holds step {committed}")
        resumed = run_child(torchrun_command(*workspace.ddp_args(run_dir, "--resume")), logs / f"{run_dir.name}-b.log")
        if resumed.returncode != 0:
            outcome.fail(trial, f"the 2-rank resume exited {resumed.returncode}: "
                                f"{resumed.output.strip().splitlines()[-1:]}")
            continue
        for problem in run_differences(run_dir, reference):
            outcome.fail(trial, problem)
    if exit_times:
        outcome.counts["exit_s_max"] = round(max(exit_times), 1)
        outcome.counts["exit_s_mean"] = round(sum(exit_times) / len(exit_times), 1)
    return outcome
