"""Helpers for end-to-end tests: run the real ``bsrnn`` command in a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from bsrnn.training.run_files import losses_by_step as logged_losses
from bsrnn.training.run_files import read_metrics_log

# A tiny but real configuration: 6 steps per epoch on the demo set, seconds per epoch.
# --monitor val_loss: its best is an earlier epoch than the last in these runs (the GAN term
# joins at epoch 1), so the best/last scenarios (superseded files, fallbacks) have two states.
TINY = ["--demo", "--num-channel", "4", "--num-layer", "1", "--batch-size", "8", "--cut-len", "8000",
        "--log-interval", "1", "--pesq-workers", "1", "--seed", "3", "--validation-length", "crops",
        "--monitor", "val_loss"]
"""A tiny model on the demo set. Validation on 0.5 s crops, not the default whole utterances
(~0.6 s more per epoch, over hundreds of epochs in the suite); test_validation_set runs the default."""
TINY_DEFAULT_MONITOR = TINY[: TINY.index("--monitor")]
"""TINY with the default monitor (validation PESQ)."""
STEPS_PER_EPOCH = 48 // 8


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def bsrnn(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bsrnn", *args], capture_output=True, text=True,
                          timeout=timeout, env=env(), check=False)


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bsrnn", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env())


def events(run_dir: Path, kind: str) -> list[dict[str, Any]]:
    """The run's events of one kind; a torn line fails the test (a finished run has none)."""
    logged, torn = read_metrics_log(run_dir)
    assert not torn, f"{run_dir}/metrics.jsonl: torn line(s) {torn}"
    return [event for event in logged if event.get("event") == kind]


def wait_for_step(run_dir: Path, step: int, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e["global_step"] >= step for e in events(run_dir, "step")):
            return
        if process.poll() is not None:
            raise AssertionError(f"trainer exited early with {process.returncode}: {process.stdout.read()}")
        time.sleep(0.05)
    raise AssertionError(f"no step {step} logged within {timeout}s")


def preempted_run(run_dir: Path, step: int, *args: str) -> str:
    """``bsrnn train ARGS --run-dir RUN_DIR``, sent SIGTERM once step ``step`` is logged; its output.

    The trainer must save and exit 143 (128 + SIGTERM)."""
    process = start("train", *args, "--run-dir", str(run_dir))
    wait_for_step(run_dir, step, process)
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 143, output
    return output


def losses_by_step(run_dir: Path) -> dict[int, tuple[float, float]]:
    """The last logged (loss, disc_loss) of every global step (``run_files.losses_by_step``)."""
    return logged_losses(events(run_dir, "step"))


def checkpoint(run_dir: Path, name: str = "checkpoint_last.pt") -> dict[str, Any]:
    return torch.load(run_dir / name, weights_only=True)


def assert_same_training_state(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Every tensor of both networks and optimizers, bit for bit, and the progress counters."""
    for key in ("model_state_dict", "discriminator_state_dict"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs"
    for key in ("optimizer_state_dict", "optimizer_disc_state_dict"):
        for index, state in a[key]["state"].items():
            for name, value in state.items():
                assert torch.equal(value, b[key]["state"][index][name]), f"{key}[{index}].{name} differs"
    for key in ("epoch", "global_step", "step_in_epoch", "val_loss", "best_val_loss"):
        assert a[key] == b[key], key


def _process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state letter) of every process, from /proc (Linux)."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # gone meanwhile
            continue
        fields = text[text.rfind(")") + 2:].split()  # after "pid (comm) ": state, ppid, ...
        table[int(stat.parent.name)] = (int(fields[1]), fields[0])
    return table


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (children, their children, ...)."""
    table = _process_table()
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, (parent, _) in table.items() if parent in frontier and child not in found}
        found |= frontier
    return found


def kill_and_assert_no_survivors(process: subprocess.Popen, helpers: set[int], within_s: float = 5.0) -> None:
    """SIGKILL ``process`` (it can clean nothing up) and assert that every process in ``helpers``
    (its descendants, taken just before) is gone within ``within_s``; survivors are killed."""
    process.kill()
    process.wait(timeout=30)
    deadline = time.monotonic() + within_s
    alive = set(helpers)
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        table = _process_table()
        alive = {pid for pid in alive if pid in table and table[pid][1] != "Z"}  # a zombie has exited
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not alive, f"helper processes {sorted(alive)} outlived their SIGKILLed parent by {within_s} s"

