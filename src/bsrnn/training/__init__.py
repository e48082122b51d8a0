"""``train(config)``: the whole workflow as one call (and the engine of ``bsrnn train``).

    from bsrnn import Config, train

    if __name__ == "__main__":
        train(Config(epochs=200, save_model_dir="runs/ab5", data_dir="/data/vbd",
                     resume_from_checkpoint="runs/ab5", load_checkpoint_type="best"))

Resume sources, and what each does when the run directory holds no checkpoint:

- ``resume_from_checkpoint=None``: a fresh run. A run directory that already holds checkpoints
  is refused rather than overwritten.
- ``"auto"`` with ``load_checkpoint_type="auto"``: resume from ``save_model_dir`` if it holds a
  checkpoint, else start fresh and say so. This is the requeue form: one command line for
  every restart of a cluster job.
- ``"auto"`` with ``load_checkpoint_type`` ``best`` or ``last``, or a directory or file: that
  checkpoint, or ``Checkpoint not found`` with the paths tried. A mistyped run directory must
  never quietly start a new run.

The order matters (ARCHITECTURE.md, "life of a resume"): the run directory's lock is taken
first, and only then is anything read, so a second trainer on the same directory (a requeued
job overlapping its predecessor) is refused at once and can never commit an older state over
a newer one. Under DDP, rank 0 holds the lock and decides; the other ranks load what it chose.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from bsrnn.checkpoint import CheckpointError, RunDirectoryLock
from bsrnn.config import Config
from bsrnn.errors import UserError
from bsrnn.training.distributed import DistributedContext, broadcast_decision, init_distributed, shutdown_distributed
from bsrnn.training.plan import Decision, RunPlan, check_source_exists, plan_run, run_dir_of
from bsrnn.training.progress import TrainingProgress, saved_progress
from bsrnn.training.resume import explicit_fields_of, summary_lines
from bsrnn.training.run_files import RunFiles
from bsrnn.training.tensorboard import require_tensorboard
from bsrnn.training.trainer import TrainingDivergedError, TrainResult, Trainer

__all__ = ["TrainResult", "TrainingDivergedError", "train"]

log = logging.getLogger("bsrnn.train")


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name} was asked for, but CUDA is not available here. Use --device cpu.")
    return torch.device(name)


@contextlib.contextmanager
def console_logging() -> Iterator[None]:
    """Log to the console like ``bsrnn train`` does, unless the caller configured logging.

    A script calling ``train()`` with logging untouched would otherwise see nothing (Python's
    default level is WARNING) and ``train.log`` would miss every INFO line. A caller that set up
    handlers or levels keeps exactly what they chose.
    """
    package = logging.getLogger("bsrnn")
    if logging.getLogger().handlers or package.handlers or package.level != logging.NOTSET:
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    package.addHandler(handler)
    package.setLevel(logging.INFO)
    package.propagate = False
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.setLevel(logging.NOTSET)
        package.propagate = True


def train(config: Config, explicit: Iterable[str] | None = None) -> TrainResult:
    """Train (or resume) a run described by ``config``; see the module docstring.

    ``explicit`` names the fields the user set (the command line knows); by default, fields that
    differ from their defaults count as set. Unset architecture fields come from the checkpoint.
    """
    with console_logging():
        explicit = set(explicit) if explicit is not None else explicit_fields_of(config)
        config = run_dir_of(config, explicit)
        check_source_exists(config)
        if config.tensorboard:
            require_tensorboard()  # before anything is created, on every rank: not after an epoch
        device = _device(config.device)
        context = init_distributed(device.type)
        if device.type == "cuda":
            device = torch.device("cuda", context.local_rank)
            torch.cuda.set_device(device)
        lock = RunDirectoryLock(config.save_model_dir) if context.is_main else None
        try:
            if lock is not None:
                try:
                    lock.acquire()  # before anything is read: see the module docstring
                except CheckpointError as error:
                    if context.enabled:
                        broadcast_decision(Decision(None, str(error)), context)
                    raise
            return _train_locked(config, explicit, device, context, lock)
        finally:
            if lock is not None:
                lock.release()
            shutdown_distributed(context)


def _train_locked(config: Config, explicit: set[str], device: torch.device, context: DistributedContext,
                  lock: RunDirectoryLock | None) -> TrainResult:
    # The run's files are opened only once there is something to train: a resume that finds no
    # checkpoint must not leave train.log and metrics.jsonl in a mistyped directory. What was
    # logged while deciding is kept and written to train.log first.
    with held_log_records() as decision_log:
        plan = plan_run(config, explicit, context)
    files = RunFiles(Path(plan.config.save_model_dir), enabled=context.is_main)
    try:
        files.log_records(decision_log)
        if plan.done:
            progress = saved_progress(plan.loaded.payload) if plan.loaded is not None else TrainingProgress()
            return TrainResult(0, Path(plan.config.save_model_dir), progress.last_completed_epoch,
                               progress.global_step, "already_done")
        return _train_with_files(plan, device, context, lock, files)
    finally:
        files.close()


@contextlib.contextmanager
def held_log_records() -> Iterator[list[logging.LogRecord]]:
    """Collect the package's log records of a block (they still reach the console as usual)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append  # type: ignore[method-assign]
    package = logging.getLogger("bsrnn")
    package.addHandler(handler)
    try:
        yield records
    finally:
        package.removeHandler(handler)


def _train_with_files(plan: RunPlan, device: torch.device, context: DistributedContext,
                      lock: RunDirectoryLock | None, files: RunFiles) -> TrainResult:
    trainer = Trainer(plan, device, context, lock, files)
    if plan.loaded is not None:
        log.info("✓ Models, optimizers, schedulers and RNG streams loaded")
        for line in summary_lines(plan.loaded.kind, str(plan.loaded.path), plan.loaded.payload, plan.config,
                                  trainer.learning_rates(), trainer.kept, plan.split.describe(),
                                  start_batch=plan.start_batch):
            log.info("%s", line)
    return trainer.run(plan.config.max_steps)
