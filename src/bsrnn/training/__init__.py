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
from dataclasses import dataclass
from pathlib import Path

import torch

from bsrnn.checkpoint import (
    BEST_NAME,
    LAST_NAME,
    CheckpointError,
    CheckpointNotFoundError,
    LoadedCheckpoint,
    RunDirectoryLock,
    candidates,
    kept_states,
    load_checkpoint,
)
from bsrnn.config import Config
from bsrnn.data.holdout import ValidationSplit
from bsrnn.errors import UserError
from bsrnn.training.distributed import DistributedContext, broadcast_decision, init_distributed, shutdown_distributed
from bsrnn.training.resume import check_resumable, explicit_fields_of, reconcile, summary_lines
from bsrnn.training.run_files import RunFiles
from bsrnn.training.tensorboard import require_tensorboard
from bsrnn.training.trainer import (
    TrainingDivergedError,
    TrainResult,
    Trainer,
    validation_split,
    validation_split_is_legacy,
)

__all__ = ["TrainResult", "TrainingDivergedError", "train"]

log = logging.getLogger("bsrnn.train")


def _holds_checkpoint(run_dir: Path) -> bool:
    return any(path.exists() or path.is_symlink() for path in (run_dir / LAST_NAME, run_dir / BEST_NAME))


def _run_dir_of(config: Config, explicit: set[str]) -> Config:
    """``--resume DIR`` alone continues the run in DIR: the run directory is DIR."""
    source = config.resume_from_checkpoint
    if source in (None, "auto") or "save_model_dir" in explicit:
        return config
    source_path = Path(source)
    run_dir = source_path.parent if source_path.suffix == ".pt" or source_path.is_file() else source_path
    return config.replace(save_model_dir=str(run_dir))


def _must_exist(config: Config) -> None:
    """Refuse, before anything is created, a resume that names a place holding no checkpoint."""
    source = config.resume_from_checkpoint
    run_dir = Path(config.save_model_dir)
    if source == "auto" and config.load_checkpoint_type != "auto" and not run_dir.is_dir():
        raise CheckpointNotFoundError(
            [run_dir / (LAST_NAME if config.load_checkpoint_type == "last" else BEST_NAME)],
            hint=f"The run directory {run_dir} does not exist. Check --run-dir; only --resume with "
                 "--load auto starts a fresh run when there is nothing to resume.",
        )
    if source not in (None, "auto") and not Path(source).exists():
        source_path = Path(source)
        tried = [source_path] if source_path.suffix == ".pt" else candidates(source_path, config.load_checkpoint_type)
        raise CheckpointNotFoundError(tried, hint=f"{source} does not exist. Check the path given to --resume.")
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"The run directory {run_dir} is a file, not a directory. Choose another --run-dir, "
                        "or move the file away.")


def _refuse_kept_states(run_dir: Path, why: str) -> None:
    """Refuse a fresh start beside kept states (superseded or quarantined files): they are a
    run's work, and "starting a fresh run" would leave them unnamed and soon forgotten."""
    kept = kept_states(run_dir)
    if kept:
        resumable = [path for path in kept if path.suffix == ".pt"]
        how = (f" Resume from one with: bsrnn train --run-dir {run_dir} --resume {resumable[-1]}"
               if resumable else "")
        raise UserError(
            f"{run_dir} has no checkpoint_last.pt or checkpoint_best.pt, but holds kept training state: "
            + ", ".join(path.name for path in kept) + f". {why}{how}. Or choose another --run-dir for a new run."
        )


def _find_resume_checkpoint(config: Config) -> LoadedCheckpoint | None:
    """What to resume from, decided while the run directory's lock is held."""
    run_dir = Path(config.save_model_dir)
    source = config.resume_from_checkpoint
    if source is None:
        if _holds_checkpoint(run_dir):
            raise UserError(
                f"{run_dir} already holds checkpoints of a run. Resume it with --resume (or "
                "--resume auto), or choose another --run-dir; a fresh run would overwrite them."
            )
        _refuse_kept_states(run_dir, "A fresh run is not started there")
        return None
    if source == "auto":
        if config.load_checkpoint_type == "auto" and not _holds_checkpoint(run_dir):
            _refuse_kept_states(run_dir, "--resume auto does not start a fresh run there")
            log.info("No checkpoint in %s: starting a fresh run (--resume auto)", run_dir)
            return None
        return load_checkpoint(run_dir, config.load_checkpoint_type, accept=check_resumable)
    source_path = Path(source)
    source_dir = source_path.parent if source_path.is_file() else source_path
    if source_dir.resolve() != run_dir.resolve() and _holds_checkpoint(run_dir):
        raise UserError(
            f"Resuming from {source_dir} into {run_dir}, which holds checkpoints of another run. "
            "Choose an empty --run-dir for the new run, or resume the run in place."
        )
    return load_checkpoint(source_path, config.load_checkpoint_type, accept=check_resumable)


@dataclass(frozen=True)
class _Decision:
    """Rank 0's choice, as plain data every rank can receive: a path to load, or an error."""

    path: str | None
    error: str | None = None


def _decide(config: Config, context: DistributedContext) -> LoadedCheckpoint | None:
    """Rank 0 finds the checkpoint (under the lock); the other ranks load exactly that file."""
    if not context.enabled:
        return _find_resume_checkpoint(config)
    if context.is_main:
        try:
            loaded = _find_resume_checkpoint(config)
        except Exception as error:
            broadcast_decision(_Decision(None, str(error)), context)
            raise
        broadcast_decision(_Decision(str(loaded.path) if loaded else None), context)
        return loaded
    decision = broadcast_decision(None, context)
    if decision.error is not None:
        raise UserError(f"rank 0 stopped: {decision.error}")
    return load_checkpoint(decision.path, accept=check_resumable) if decision.path is not None else None


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name} was asked for, but CUDA is not available here. Use --device cpu.")
    return torch.device(name)


def _validation_data(config: Config, loaded: LoadedCheckpoint | None) -> ValidationSplit:
    """The corpus, checked, split into the pairs to train on and the pairs to validate on.

    Training reads no test file: ``evaluate`` is the one command that does (a run from before
    validation splits is the exception: it keeps validating on its test split).
    """
    from bsrnn.data import check_data_dir, demo_corpus
    from bsrnn.data.layout import splits_present

    if config.demo:
        corpus = demo_corpus(seed=0)
    elif not config.data_dir:
        raise UserError("No training data: pass --data-dir DIR (a dataset root) or --demo (built-in demo set).")
    else:
        splits = [split for split in splits_present(config.data_dir) if split != "test"]
        if loaded is not None and validation_split_is_legacy(loaded) and not config.allow_validation_change:
            splits.append("test")
        # Every file is decoded once here (NaN samples, silence, rates, names...): a bad file stops
        # the run now, with one message naming them all, not hours into the first epoch.
        corpus = check_data_dir(config.data_dir, splits=splits, deep=True)
    log.info("Data: %s", corpus.describe())
    split = validation_split(corpus, config, loaded)
    log.info("%s", split.describe())
    return split


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
        config = _run_dir_of(config, explicit)
        _must_exist(config)
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
                        broadcast_decision(_Decision(None, str(error)), context)
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
        loaded = _decide(config, context)
    files = RunFiles(Path(config.save_model_dir), enabled=context.is_main)
    try:
        files.log_records(decision_log)
        return _train_with_files(config, explicit, device, context, lock, files, loaded)
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


def _train_with_files(config: Config, explicit: set[str], device: torch.device, context: DistributedContext,
                      lock: RunDirectoryLock | None, files: RunFiles, loaded: LoadedCheckpoint | None) -> TrainResult:
    if loaded is None:
        halfway = config.gan_start_epoch is None  # not given, and not set by the recipe
        config = config.with_gan_start_fixed()
        if halfway:
            log.info("GAN term from epoch %d (half of --epochs %d; fixed for the life of this run)",
                     config.gan_start_epoch, config.epochs)
        elif "gan_start_epoch" not in explicit:
            log.info("GAN term from epoch %d (recipe %s)", config.gan_start_epoch, config.recipe)
    else:
        log.info("=" * 70)
        log.info("RESUMING FROM CHECKPOINT")
        log.info("Loading checkpoint from: %s", loaded.path)
        config = reconcile(config, explicit, loaded.get("config"), str(loaded.path)).with_gan_start_fixed()
        completed = int(loaded.get("epoch", -1)) + 1
        if completed >= config.epochs and not loaded.get("step_in_epoch"):
            log.info(
                "Resume epoch >= target epochs: the checkpoint has completed %d epoch(s) and the target is "
                "--epochs %d. Nothing to train. To train more, raise the target, e.g. --epochs %d.",
                completed, config.epochs, completed + 20,
            )
            return TrainResult(0, Path(config.save_model_dir), completed - 1, int(loaded.get("global_step", 0)),
                               "already_done")
    split = _validation_data(config, loaded)
    trainer = Trainer(config, split, device, context, loaded, lock, files,
                      init_lr_given=loaded is not None and "init_lr" in explicit)
    if loaded is not None:
        log.info("✓ Models, optimizers, schedulers and RNG streams loaded")
        for line in summary_lines(loaded.kind, str(loaded.path), loaded.payload, config,
                                  trainer.learning_rates(), trainer.kept, split.describe()):
            log.info("%s", line)
    return trainer.run(config.max_steps)
