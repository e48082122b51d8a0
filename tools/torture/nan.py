"""``nan``: non-finite losses are skipped, counted, and stop the run at the limit.

Non-finite losses injected at random steps (by ``tools/nonfinite_bsrnn.py``, from outside the trainer).
Predicted exactly from the rule (skip and count; stop after ``max_nonfinite_steps`` in a row,
exit 1), also across a ``--max-steps`` interruption and resume; no saved tensor and no best
value is ever non-finite.
"""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from bsrnn import keys
from bsrnn.checkpoint import load_checkpoint
from torture.common import (
    TOTAL_STEPS,
    Outcome,
    Workspace,
    damaged_checkpoints,
    read_events,
    run_child,
)


def nonfinite_command(injected: set[int]) -> Callable[..., list[str]]:
    """``bsrnn`` through the fault injector, NaN at the ``injected`` global steps."""
    script = str(Path(__file__).resolve().parents[1] / "nonfinite_bsrnn.py")
    steps = ",".join(str(step) for step in sorted(injected))
    return lambda *args: [sys.executable, script, steps, *args]


def predict(injected: set[int], limit: int) -> tuple[int | None, int, int]:
    """(0-based step that stops the run or None, the checkpoint's global step, its skip count)."""
    in_a_row = skipped = 0
    for step in range(TOTAL_STEPS):
        if step in injected:
            in_a_row += 1
            if in_a_row >= limit:
                return step, step, skipped
            skipped += 1
        else:
            in_a_row = 0
    return None, TOTAL_STEPS, skipped


def _all_finite(payload: dict) -> list[str]:
    bad = []
    for section in keys.NETWORKS:
        bad += [f"{section}.{n}" for n, t in payload[section].items() if not torch.isfinite(t).all()]
    for section in keys.OPTIMIZERS:
        for index, state in payload[section]["state"].items():
            bad += [f"{section}[{index}].{n}" for n, t in state.items()
                    if isinstance(t, torch.Tensor) and not torch.isfinite(t).all()]
    return bad


def nan_campaign(workspace: Workspace, trials: int, seed: int) -> Outcome:
    """``trials`` runs with random non-finite steps and limits, half of them interrupted."""
    outcome = Outcome("nan", trials, seed)
    rng = random.Random(seed)
    for trial in range(trials):
        injected = set(rng.sample(range(TOTAL_STEPS), rng.randint(1, TOTAL_STEPS - 1)))
        limit = rng.randint(2, 4)
        stop, expected_step, expected_skipped = predict(injected, limit)
        case = workspace.fresh_dir("nan")
        case.mkdir()
        run_dir = case / "run"
        args = workspace.train_args(run_dir, "--max-nonfinite-steps", str(limit), "--resume")
        command = nonfinite_command(injected)
        label = f"{trial} (steps {sorted(injected)}, limit {limit})"
        if rng.random() < 0.5:
            first = run_child(command(*args, "--max-steps", str(rng.randint(1, TOTAL_STEPS - 1))),
                              workspace.root / "logs" / f"{case.name}-a.log")
            outcome.count("interrupted")
            if first.returncode not in (0, 1):  # 1: it hit the limit already; the resume must again
                outcome.fail(label, f"the first part exited {first.returncode}")
                continue
        result = run_child(command(*args), workspace.root / "logs" / f"{case.name}-b.log")
        expected_code = 0 if stop is None else 1
        last = (result.output.strip().splitlines() or [""])[-1]
        if result.returncode != expected_code:
            outcome.fail(label, f"exit {result.returncode}, expected {expected_code}: {last}")
            continue
        if stop is not None and (f"{limit} consecutive steps had a NaN/inf loss" not in result.output
                                 or "Traceback" in result.output):
            outcome.fail(label, f"no clear divergence message: {last}")
        outcome.count("stopped" if stop is not None else "completed")
        if damaged_checkpoints(run_dir):
            outcome.fail(label, f"damaged: {damaged_checkpoints(run_dir)}")
            continue
        last_payload = load_checkpoint(run_dir, "last").payload
        if last_payload["global_step"] != expected_step:
            outcome.fail(label, f"checkpoint at global step {last_payload['global_step']}, expected {expected_step}")
        if last_payload["progress"]["nonfinite_skipped"] != expected_skipped:
            outcome.fail(label, f"nonfinite_skipped {last_payload['progress']['nonfinite_skipped']}, "
                                f"expected {expected_skipped}")
        bad = _all_finite(last_payload)
        if (run_dir / "checkpoint_best.pt").exists():
            best = load_checkpoint(run_dir, "best").payload
            bad += [f"best: {name}" for name in _all_finite(best)]
            if not math.isfinite(best["monitor"]["best"]) or not math.isfinite(best["best_val_loss"]):
                bad.append("best: a non-finite best value")
        if bad:
            outcome.fail(label, f"non-finite values saved: {bad[:3]}")
        skipped_events = {e["global_step"] for e in read_events(run_dir)[0] if e.get("event") == "nonfinite"}
        if skipped_events != {s + 1 for s in injected if stop is None or s <= stop}:
            outcome.fail(label, f"nonfinite events at {sorted(skipped_events)}")
    return outcome
