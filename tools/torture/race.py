"""``race``: two trainers with the same command line on one run directory, started at random offsets.

This is what a requeued cluster job does when it starts while its predecessor is still shutting
down. Whatever the offset, the committed progress must never go backwards: the second trainer
is refused at once (exit 2, naming the holder's PID, or the run's checkpoints for a fresh run),
or it starts after the first has finished and continues from the first's checkpoint.

Each race samples ``checkpoint_last.pt``'s ``global_step`` every few milliseconds while the
two run, and checks that the samples never decrease and that the final file holds the highest
step ever committed. Three shapes, drawn at random: both resume a run that already has a
checkpoint (``--resume``), both start a requeue-style run on an empty directory (``--resume``
alone), both start a fresh run (no ``--resume``).
"""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path

from torture.common import Child, Outcome, Workspace, bsrnn_command, committed_step, damaged_checkpoints, run_child

RACE_STEPS = 3  # steps each trainer is asked for: long enough that most offsets overlap
MAX_OFFSET_S = 4.0  # a trainer's start-up is 3-6 s here: offsets span before and after the first save
SHAPES = ("resume", "requeue-empty", "fresh")


def _base_run(workspace: Workspace) -> Path:
    """A run with a committed checkpoint at step 2, copied into each 'resume' race."""
    path = workspace.root / "race-base"
    if not (path / "checkpoint_last.pt").exists():
        shutil.rmtree(path, ignore_errors=True)
        done = run_child(bsrnn_command(*workspace.train_args(path, "--max-steps", "2")),
                         workspace.root / "logs" / "race-base.log")
        if done.returncode != 0:
            raise RuntimeError(f"the base run failed ({done.returncode}): {done.output[-300:]}")
    return path


def _committed(run_dir: Path) -> int | None:
    try:
        return committed_step(run_dir)
    except Exception:  # noqa: BLE001 - a damaged file is reported by damaged_checkpoints below
        return None


def _check_trainer(outcome: Outcome, trial: str, name: str, code: int | None, output: str) -> None:
    last = (output.strip().splitlines() or [""])[-1]
    if "Traceback" in output:
        outcome.fail(trial, f"trainer {name} printed a traceback: {last}")
    elif code == 2:
        if "PID " not in output and "already holds checkpoints" not in output:
            outcome.fail(trial, f"trainer {name} was refused without naming the holder: {last}")
        elif "Saved checkpoint" in output:
            outcome.fail(trial, f"trainer {name} was refused after saving")
        else:
            outcome.count("refused")
    elif code == 0:
        outcome.count("trained")
    else:
        outcome.fail(trial, f"trainer {name} exited {code}: {last}")


def _race(outcome: Outcome, trial: str, workspace: Workspace, rng: random.Random) -> None:
    shape = rng.choice(SHAPES)
    offset = rng.uniform(0.0, MAX_OFFSET_S)
    run_dir = workspace.fresh_dir(f"race-{shape}")
    extra = ["--max-steps", str(RACE_STEPS)]
    if shape == "resume":
        shutil.copytree(_base_run(workspace), run_dir, ignore=shutil.ignore_patterns(".lock"))
        extra += ["--resume"]
    elif shape == "requeue-empty":
        extra += ["--resume"]
    command = bsrnn_command(*workspace.train_args(run_dir, *extra))
    logs = workspace.root / "logs"
    samples: list[int] = []
    with Child(command, logs / f"{run_dir.name}-a.log") as first:
        deadline = time.monotonic() + offset
        while time.monotonic() < deadline:
            if (step := _committed(run_dir)) is not None:
                samples.append(step)
            time.sleep(0.005)
        with Child(command, logs / f"{run_dir.name}-b.log") as second:
            deadline = time.monotonic() + 300
            while (first.poll() is None or second.poll() is None) and time.monotonic() < deadline:
                if (step := _committed(run_dir)) is not None:
                    samples.append(step)
                time.sleep(0.005)
            if first.poll() is None or second.poll() is None:
                outcome.fail(trial, "a trainer did not exit within 300 s")
                return
            _check_trainer(outcome, trial, "A", first.poll(), first.output())
            _check_trainer(outcome, trial, "B", second.poll(), second.output())
    final = _committed(run_dir)
    if final is not None:
        samples.append(final)
    backwards = [(a, b) for a, b in zip(samples, samples[1:]) if b < a]
    if backwards:
        outcome.fail(trial, f"{shape}, offset {offset:.2f}s: the committed step went back {backwards[0][0]} -> "
                            f"{backwards[0][1]}")
    elif samples and final != max(samples):
        outcome.fail(trial, f"{shape}: the final checkpoint holds step {final}, {max(samples)} was committed")
    else:
        outcome.count(f"races_{shape}")
    if damaged := damaged_checkpoints(run_dir):
        outcome.fail(trial, f"damaged: {damaged}")


def race_campaign(workspace: Workspace, trials: int, seed: int) -> Outcome:
    """``trials`` races of two identical trainers, each shape and offset drawn from ``seed``."""
    outcome = Outcome("race", trials, seed)
    rng = random.Random(seed)
    for trial in range(trials):
        _race(outcome, str(trial), workspace, rng)
    return outcome
