"""The trainer's own counters, as stateful objects the checkpoint engine saves and restores.

``last_completed_epoch`` is the index of the last *completed* epoch, -1 before the first (saved as
``last_completed_epoch``; records from before the name said ``epoch``, and are read as such).
A mid-epoch checkpoint says how many batches of the next epoch are done (``step_in_epoch``, in
the batch geometry it records); the resumed run skips exactly those, by arithmetic
(``EpochBatches(start_batch=...)``), or, under another batch size or process count, the batches
that hold the items already trained (``training/plan.py`` decides which).
The running sums of the epoch in progress are saved too, so the epoch's summary line after a
resume is the one the uninterrupted run prints.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from bsrnn import keys

LEGACY_EPOCH_KEY = "epoch"
"""``last_completed_epoch`` in the progress records of checkpoints written before it was named so."""


@dataclass
class TrainingProgress:
    last_completed_epoch: int = -1
    step_in_epoch: int = 0
    global_step: int = 0
    nonfinite_in_a_row: int = 0
    nonfinite_skipped: int = 0
    epoch_sums: dict[str, float] = field(default_factory=dict)
    epoch_count: int = 0
    val_loss: float | None = None
    val_pesq: float | None = None
    best_val_loss: float | None = None
    epoch_geometry: dict[str, Any] = field(default_factory=dict)
    """The ``BatchGeometry`` record (items, seed, batch size, processes) that ``step_in_epoch``
    counts batches of; empty in checkpoints from before it was saved."""

    @property
    def current_epoch(self) -> int:
        """The epoch being trained (or about to be)."""
        return self.last_completed_epoch + 1

    def add_step(self, values: Mapping[str, float]) -> None:
        for key, value in values.items():
            self.epoch_sums[key] = self.epoch_sums.get(key, 0.0) + float(value)
        self.epoch_count += 1

    def epoch_means(self) -> dict[str, float]:
        return {key: total / max(self.epoch_count, 1) for key, total in self.epoch_sums.items()}

    def record_validation(self, val_loss: float, val_pesq: float) -> None:
        """Remember the epoch's validation; best_val_loss only moves on a finite improvement."""
        self.val_loss, self.val_pesq = val_loss, val_pesq
        if val_loss == val_loss and abs(val_loss) != float("inf"):
            if self.best_val_loss is None or val_loss < self.best_val_loss:
                self.best_val_loss = val_loss

    def finish_epoch(self) -> None:
        self.last_completed_epoch += 1
        self.step_in_epoch = 0
        self.epoch_sums = {}
        self.epoch_count = 0

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def top_level_values(self) -> dict[str, Any]:
        """The counters and the last validation under the top-level names users' scripts read
        with plain ``torch.load`` (``keys``); written beside the registered record, never read back
        except from a checkpoint that has no record (``saved_progress``)."""
        return {keys.EPOCH: self.last_completed_epoch, keys.GLOBAL_STEP: self.global_step,
                keys.STEP_IN_EPOCH: self.step_in_epoch, keys.VAL_LOSS: self.val_loss,
                keys.BEST_VAL_LOSS: self.best_val_loss, keys.VAL_PESQ: self.val_pesq}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if LEGACY_EPOCH_KEY in state and "last_completed_epoch" not in state:
            state = {**state, "last_completed_epoch": state[LEGACY_EPOCH_KEY]}
        for key, value in state.items():
            if hasattr(self, key):
                setattr(self, key, dict(value) if isinstance(value, Mapping) else value)


def saved_progress(payload: Mapping[str, Any]) -> TrainingProgress:
    """The progress a checkpoint holds: its registered record, or, in a migrated file that has
    none, the top-level counters. The one reader, so the plan, the resume summary and the
    trainer can never disagree about where a run stood (where it continues is the plan's
    ``start_batch``)."""
    progress = TrainingProgress()
    record = payload.get(keys.PROGRESS)
    if isinstance(record, Mapping) and record:
        progress.load_state_dict(record)
    else:
        progress.last_completed_epoch = int(payload.get(keys.EPOCH, -1))
        progress.global_step = int(payload.get(keys.GLOBAL_STEP, 0))
        progress.step_in_epoch = int(payload.get(keys.STEP_IN_EPOCH, 0))
    return progress


class StepRate:
    """Steps per second over this invocation, and when a time-based log line is due.

    Logging only every ``log_interval`` steps leaves a run under ``sbatch`` or ``nohup`` silent
    for hours (500 steps of a full-size model on a CPU); a line at least every ``log_seconds``
    shows it is alive, how fast it goes and when it should end. Not saved: a rate measured
    before a restart says nothing about the machine after it.
    """

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._started = clock()
        self._last_log = self._started
        self._steps = 0

    def step(self) -> float:
        """Count one step; return the mean rate so far (steps/s)."""
        self._steps += 1
        return self._steps / max(self._clock() - self._started, 1e-9)

    def log_due(self, every_seconds: float) -> bool:
        return every_seconds > 0 and self._clock() - self._last_log >= every_seconds

    def logged(self) -> None:
        self._last_log = self._clock()

    def eta(self, steps_left: int) -> str:
        """Time left at the current rate, as H:MM:SS."""
        if self._steps == 0:
            return "unknown"
        seconds = int(steps_left * (self._clock() - self._started) / self._steps)
        return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
