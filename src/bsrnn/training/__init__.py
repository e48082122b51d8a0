"""``train(config)``: the old guide's workflow as one call (and the engine of ``bsrnn train``).

    from bsrnn import Config, train
    train(Config(epochs=200, save_model_dir="runs/ab5", data_dir="/data/vbd",
                 resume_from_checkpoint="runs/ab5", load_checkpoint_type="best"))

Resume sources: ``resume_from_checkpoint`` None starts fresh (and refuses a run directory
that already holds checkpoints, rather than overwrite them); ``"auto"`` resumes from
``save_model_dir`` when it holds a checkpoint and starts fresh otherwise (requeue-safe);
a directory resumes from that directory's checkpoint (``load_checkpoint_type``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import torch

from bsrnn.checkpoint import BEST_NAME, LAST_NAME, LoadedCheckpoint, load_checkpoint
from bsrnn.config import Config
from bsrnn.errors import UserError
from bsrnn.training.distributed import init_distributed, shutdown_distributed
from bsrnn.training.resume import check_resumable, explicit_fields_of, reconcile, summary_lines
from bsrnn.training.trainer import TrainingDivergedError, TrainResult, Trainer

__all__ = ["TrainResult", "TrainingDivergedError", "train"]

log = logging.getLogger("bsrnn.train")


def _holds_checkpoint(run_dir: Path) -> bool:
    return (run_dir / LAST_NAME).exists() or (run_dir / BEST_NAME).exists()


def _find_resume_checkpoint(config: Config) -> LoadedCheckpoint | None:
    run_dir = Path(config.save_model_dir)
    source = config.resume_from_checkpoint
    if source is None:
        if _holds_checkpoint(run_dir):
            raise UserError(
                f"{run_dir} already holds checkpoints of a run. Resume it with --resume (or "
                "--resume auto), or choose another --run-dir; a fresh run would overwrite them."
            )
        return None
    if source == "auto":
        if not _holds_checkpoint(run_dir):
            log.info("No checkpoint in %s: starting a fresh run", run_dir)
            return None
        return load_checkpoint(run_dir, config.load_checkpoint_type)
    source_path = Path(source)
    source_dir = source_path.parent if source_path.is_file() else source_path
    if source_dir.resolve() != run_dir.resolve() and _holds_checkpoint(run_dir):
        raise UserError(
            f"Resuming from {source_dir} into {run_dir}, which holds checkpoints of another run. "
            "Choose an empty --run-dir for the new run, or resume the run in place."
        )
    return load_checkpoint(source_path, config.load_checkpoint_type)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name} was asked for, but CUDA is not available here. Use --device cpu.")
    return torch.device(name)


def _corpus(config: Config):  # -> Corpus
    from bsrnn.data import check_data_dir, demo_corpus

    if config.demo:
        return demo_corpus(seed=0)
    if not config.data_dir:
        raise UserError("No training data: pass --data-dir DIR (a dataset root) or --demo (built-in demo set).")
    # Every file is decoded once here (NaN samples, silence, rates, names...): a bad file stops
    # the run now, with one message naming them all, not hours into the first epoch.
    return check_data_dir(config.data_dir, deep=True)


def train(config: Config, explicit: Iterable[str] | None = None) -> TrainResult:
    """Train (or resume) a run described by ``config``; see the module docstring.

    ``explicit`` names the fields the user set (the command line knows); by default, fields that
    differ from their defaults count as set. Unset architecture fields come from the checkpoint.
    """
    explicit = set(explicit) if explicit is not None else explicit_fields_of(config)
    source = config.resume_from_checkpoint
    if source not in (None, "auto") and "save_model_dir" not in explicit:
        # `--resume DIR` alone continues the run in DIR (SPEC: DIR is the run directory).
        source_path = Path(source)
        run_dir = source_path.parent if source_path.is_file() else source_path
        config = config.replace(save_model_dir=str(run_dir))
    run_dir = Path(config.save_model_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"The run directory {run_dir} is a file, not a directory. Choose another --run-dir, "
                        "or move the file away.")
    loaded = _find_resume_checkpoint(config)
    if loaded is not None:
        log.info("=" * 70)
        log.info("RESUMING FROM CHECKPOINT")
        log.info("Loading checkpoint from: %s", loaded.path)
        check_resumable(str(loaded.path), loaded.payload)
        config = reconcile(config, explicit, loaded.get("config"), str(loaded.path))
        completed = int(loaded.get("epoch", -1)) + 1
        if completed >= config.epochs and not loaded.get("step_in_epoch"):
            log.info(
                "Resume epoch >= target epochs: the checkpoint has completed %d epoch(s) and the target is "
                "--epochs %d. Nothing to train. To train more, raise the target, e.g. --epochs %d.",
                completed, config.epochs, completed + 20,
            )
            return TrainResult(0, Path(config.save_model_dir), completed - 1, int(loaded.get("global_step", 0)),
                               "already_done")
    device = _device(config.device)
    context = init_distributed(device.type)
    if device.type == "cuda":
        device = torch.device("cuda", context.local_rank)
        torch.cuda.set_device(device)
    try:
        corpus = _corpus(config)
        log.info("Data: %s", corpus.describe())
        trainer = Trainer(config, corpus, device, context, loaded,
                          lr_override=loaded is not None and "init_lr" in explicit)
        if loaded is not None:
            log.info("✓ Models, optimizers, schedulers and RNG streams loaded")
            for line in summary_lines(loaded.kind, str(loaded.path), loaded.payload, config,
                                      trainer.learning_rates(), trainer.superseded):
                log.info("%s", line)
        return trainer.run(config.max_steps)
    finally:
        shutdown_distributed(context)
