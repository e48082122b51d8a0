"""The life of a resume, as one function: ``plan_run`` decides everything, the trainer obeys.

A resume is a handful of decisions that depend on each other (which file, which config, is
there anything left to train, which pairs validate, how the learning rate continues). They
used to be spread over four modules, with the trainer rewriting its own config after it was
built; the data-loss bugs of that time lived in the gaps. Here they are taken in one place,
in this order, while the run directory's lock is held (``train()`` takes it first, so a
second trainer never reads anything), and returned as one frozen ``RunPlan``:

1. **Which state to continue** (``find_resume_checkpoint``): fresh, or which file, by the
   rules in ``train()``'s docstring. Every file is verified (digest, structure) and must pass
   ``check_resumable`` (what a resume needs), so ``--load auto`` falls back from a last that
   cannot be resumed from. A fresh start is refused beside a run's checkpoints, or beside only
   kept (superseded, quarantined) states, naming them. Under DDP rank 0 decides and the other
   ranks load exactly that file, checked by its digest.
2. **The config** (``resume.reconcile``): the checkpoint's config is the base, file and flags
   override it, architecture fields must agree; then the GAN start is fixed as an absolute epoch.
3. **Anything left to train?** A checkpoint that reached ``--epochs`` or ``--until-step`` gives a
   plan that is done.
4. **The data and the validation set** (``validation_split``, ``validation_record``): a run
   keeps the set, whole utterances or crops, and crop seed it started with; the plan's config
   says the run's ``validation_length``.
5. **The learning rate**: ``restart_learning_rate`` when ``--init-lr`` is given on a resume
   (``schedule.apply_resume_rule`` applies it to the restored optimizers and schedulers).
6. **Where in the epoch**: a checkpoint saved mid-epoch counts the batches done under its
   batch size, process count, seed and training items (``BatchGeometry``); under others the
   plan says which batch continues the epoch (``start_batch``; the sampler's docstring), and
   logs why it is not the saved count.

What the plan does not do itself is keep the states that the run does not continue: the
checkpoint engine's one function for that (``checkpoint/preserve.py``) runs when the trainer's
manager restores the plan's checkpoint, before any save; every writer, not only this trainer,
goes through it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bsrnn import keys
from bsrnn.checkpoint import (
    BEST_NAME,
    LAST_NAME,
    CheckpointNotFoundError,
    LoadedCheckpoint,
    candidates,
    kept_states,
    load_checkpoint,
)
from bsrnn.config import Config
from bsrnn.data.holdout import ValidationSplit, hold_out, legacy_test_split
from bsrnn.data.layout import Corpus
from bsrnn.data.sampler import BatchGeometry
from bsrnn.data.sources import Pair
from bsrnn.errors import UserError
from bsrnn.training.distributed import DistributedContext, broadcast_decision, first_problem
from bsrnn.training.progress import TrainingProgress, saved_progress
from bsrnn.training.resume import check_resumable, reconcile

log = logging.getLogger("bsrnn.train")


@dataclass(frozen=True)
class RunPlan:
    """Everything a trainer needs to know about the run it is about to train; see the module docstring."""

    config: Config
    """The final config: reconciled with the checkpoint, GAN start fixed, the run's validation length."""
    loaded: LoadedCheckpoint | None
    """The verified state to continue; None for a fresh run."""
    split: ValidationSplit | None
    """The pairs to train and validate on (None when there is nothing left to train)."""
    validation: dict[str, Any] = field(default_factory=dict)
    """The run's validation record, saved in every checkpoint (``validation_record``)."""
    restart_learning_rate: bool = False
    """An explicit ``--init-lr`` on a resume: both optimizers and schedulers restart from it."""
    done: bool = False
    """The checkpoint already reached the target (``--epochs``): nothing to train."""
    geometry: BatchGeometry | None = None
    """What the run's batches are made of now; saved with the progress."""
    start_batch: int | None = None
    """The batch of the epoch in progress that training continues at; None: the saved
    ``step_in_epoch`` (or 0 for a fresh run)."""

    @property
    def completed_epochs(self) -> int:
        return saved_progress(self.loaded.payload).current_epoch if self.loaded is not None else 0


def plan_run(config: Config, explicit: set[str], context: DistributedContext) -> RunPlan:
    """Decide a run, fresh or resumed, in the order of the module docstring; call with the lock held."""
    loaded = decide(config, context)
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
        config = reconcile(config, explicit, loaded.get(keys.CONFIG), str(loaded.path)).with_gan_start_fixed()
        progress = saved_progress(loaded.payload)
        completed = progress.current_epoch
        if completed >= config.epochs and not progress.step_in_epoch:
            log.info(
                "Resume epoch >= target epochs: the checkpoint has completed %d epoch(s) and the target is "
                "--epochs %d. Nothing to train. To train more, raise the target, e.g. --epochs %d.",
                completed, config.epochs, completed + 20,
            )
            return RunPlan(config, loaded, None, done=True)
        if config.until_step is not None and progress.global_step >= config.until_step:
            log.info("Resume step >= --until-step: the checkpoint is at global step %d and the run stops at %d. "
                     "Nothing to train. To train more, raise --until-step.", progress.global_step, config.until_step)
            return RunPlan(config, loaded, None, done=True)
    split = _validation_data(config, loaded)
    validation = validation_record(split, config, loaded)
    config = config.replace(validation_length=validation["length"])  # the run's own, recorded in config.toml too
    geometry = BatchGeometry(len(split.train), _names_sha256(split.train), config.seed, config.batch_size,
                             context.world_size)
    start_batch: int | None = None
    if loaded is not None:
        progress = saved_progress(loaded.payload)
        start_batch, why = geometry.continue_at(saved_geometry(loaded, progress, geometry), progress.step_in_epoch)
        if why is not None:
            log.warning("WARNING: resuming in the middle of epoch %d: %s.", progress.current_epoch, why)
    return RunPlan(config, loaded, split, validation,
                   restart_learning_rate=loaded is not None and "init_lr" in explicit,
                   geometry=geometry, start_batch=start_batch)


def _names_sha256(pairs: Sequence[Pair]) -> str:
    """The training items in sampling order: index i of the shuffle is the i-th pair."""
    return hashlib.sha256("\n".join(pair.name for pair in pairs).encode()).hexdigest()


def saved_geometry(loaded: LoadedCheckpoint, progress: TrainingProgress, now: BatchGeometry) -> BatchGeometry:
    """The geometry ``loaded``'s ``step_in_epoch`` (in its ``progress``) counts in. A checkpoint
    from before it was recorded has its config's batch size and seed; its items and process
    count are taken to be today's (nothing recorded says otherwise)."""
    recorded = BatchGeometry.from_record(progress.epoch_geometry)
    if recorded is not None:
        return recorded
    previous = loaded.get(keys.CONFIG) or {}
    return BatchGeometry(now.items, now.names_sha256, int(previous.get("seed", now.seed)),
                         int(previous.get("batch_size", now.batch_size)), now.world_size)


# ---------------------------------------------------------------------- 1. which state
def _holds_checkpoint(run_dir: Path) -> bool:
    return any(path.exists() or path.is_symlink() for path in (run_dir / LAST_NAME, run_dir / BEST_NAME))


def run_dir_of(config: Config, explicit: set[str]) -> Config:
    """``--resume DIR`` alone continues the run in DIR: the run directory is DIR."""
    source = config.resume_from_checkpoint
    if source in (None, "auto") or "save_model_dir" in explicit:
        return config
    source_path = Path(source)
    run_dir = source_path.parent if source_path.suffix == ".pt" or source_path.is_file() else source_path
    return config.replace(save_model_dir=str(run_dir))


def check_source_exists(config: Config) -> None:
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


def find_resume_checkpoint(config: Config) -> LoadedCheckpoint | None:
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
class Decision:
    """Rank 0's choice, as plain data every rank can receive: a path to load and the digest of
    what rank 0 read there, or an error."""

    path: str | None
    error: str | None = None
    digest: str | None = None


def decide(config: Config, context: DistributedContext) -> LoadedCheckpoint | None:
    """Rank 0 finds the checkpoint (under the lock); the other ranks load exactly that file."""
    if not context.enabled:
        return find_resume_checkpoint(config)
    if context.is_main:
        try:
            loaded = find_resume_checkpoint(config)
        except Exception as error:
            broadcast_decision(Decision(None, str(error)), context)
            raise
        broadcast_decision(Decision(str(loaded.path), digest=loaded.digest) if loaded else Decision(None), context)
        problem = None
    else:
        decision = broadcast_decision(None, context)
        if decision.error is not None:
            raise UserError(f"rank 0 stopped: {decision.error}")  # every rank got the same decision: all stop
        loaded, problem = None, None
        if decision.path is not None:
            try:
                loaded = load_checkpoint(decision.path, accept=check_resumable)
                problem = other_state_than_rank_0(loaded, decision, context.rank)
            except Exception as error:  # noqa: BLE001 (told to every rank below, then raised there)
                problem = f"rank {context.rank} could not load {decision.path}: {error}"
    # Every rank stops together: one rank raising alone would leave the others in their next collective.
    problem = first_problem(problem, context)
    if problem is not None:
        raise UserError(problem)
    return loaded


def other_state_than_rank_0(loaded: LoadedCheckpoint, decision: Decision, rank: int) -> str | None:
    """Why ``loaded`` is not the state rank 0 chose, or None: compared by digest, not by path (a
    node-local or stale copy of the run directory has the same path and other contents)."""
    if decision.digest is None or loaded.digest == decision.digest:
        return None
    return (f"rank {rank} read another file at {decision.path} than rank 0 did (digest {loaded.digest[:16]}, rank 0: "
            f"{decision.digest[:16]}): the ranks would start from different weights. The run directory must be "
            "one shared file system path on every node. Fix: put --run-dir on storage every node sees alike")


# --------------------------------------------------------------- 4. data and validation
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


def validation_split_is_legacy(loaded: LoadedCheckpoint) -> bool:
    """Whether ``loaded`` comes from a run that validated on the test split (no recorded rule)."""
    recorded = loaded.get("validation")
    return not (isinstance(recorded, dict) and "rule" in recorded)


def validation_split(corpus: Corpus, config: Config, loaded: LoadedCheckpoint | None) -> ValidationSplit:
    """The pairs this run validates on (``bsrnn.data.holdout`` has the rules).

    A run keeps the split it started with. Runs from before validation splits (their record has
    no ``rule``) validated on the test split and keep doing so, with a warning, unless the user
    allows the change: a best checkpoint chosen on one set cannot be compared with another's.
    """
    if loaded is not None and validation_split_is_legacy(loaded) and not config.allow_validation_change:
        log.warning("WARNING: this run started before validation splits and validates on the test split; it "
                    "keeps doing so, so that its best checkpoint stays comparable. A new run (or "
                    "--allow-validation-change) holds out training data instead.")
        return legacy_test_split(corpus)
    return hold_out(corpus, config.valid_speakers, config.valid_fraction)


def validation_record(split: ValidationSplit, config: Config, loaded: LoadedCheckpoint | None) -> dict[str, Any]:
    """The validation set of this run: how it was chosen, what of each utterance is scored
    (``length``: whole utterances, or crops of ``cut_len`` under ``seed``), which utterances.

    Fixed for the life of a run and saved in every checkpoint, because ``checkpoint_best.pt`` is
    chosen by comparing validation values across epochs: a resume with another ``cut_len``,
    ``seed`` or ``validation_length`` keeps the run's, and a resume whose validation utterances
    differ is refused (unless ``allow_validation_change``) rather than compare values over
    different sets. Runs from before ``length`` was recorded validated on crops.
    """
    names = sorted(pair.name for pair in split.valid)
    current = {"rule": split.rule, "length": config.validation_length, "cut_len": config.cut_len,
               "seed": config.seed, "items": len(names),
               "names_sha256": hashlib.sha256("\n".join(names).encode()).hexdigest()}
    if loaded is None:
        return current
    recorded = loaded.get("validation")
    if not isinstance(recorded, dict):  # a checkpoint from before the record: its config's crops
        previous = loaded.get(keys.CONFIG) or {}
        return {**current, "length": "crops", "cut_len": previous.get("cut_len", config.cut_len),
                "seed": previous.get("seed", config.seed)}
    if (recorded.get("items"), recorded.get("names_sha256")) != (current["items"], current["names_sha256"]):
        change = (f"it held {recorded.get('items')} utterances ({recorded.get('rule', {'kind': 'test'})}), the data "
                  f"and options now give {current['items']} ({split.rule})")
        if not config.allow_validation_change:
            raise UserError(
                f"The validation set changed since {loaded.path} was saved: {change}. checkpoint_best.pt is chosen "
                "by comparing validation values across epochs, which needs the same set. Resume with the run's "
                "data and --valid-* options, start a new run in another --run-dir, or pass "
                "--allow-validation-change to switch sets (best-so-far values then mix the two sets)."
            )
        log.warning("WARNING: the validation set changes (--allow-validation-change): %s. The best value so far "
                    "was measured on the old set.", change)
        return current
    kept = {"length": recorded.get("length", "crops"), "cut_len": recorded["cut_len"], "seed": recorded["seed"]}
    if kept["length"] != config.validation_length:
        log.info("Validation keeps the run's %s (validation_length %r, not this invocation's %r)",
                 "whole utterances" if kept["length"] == "full" else "crops", kept["length"],
                 config.validation_length)
    elif kept["length"] == "crops" and (kept["cut_len"], kept["seed"]) != (config.cut_len, config.seed):
        log.info("Validation keeps the run's crops (cut_len %s, seed %s); training uses cut_len %s, seed %s",
                 kept["cut_len"], kept["seed"], config.cut_len, config.seed)
    return {**current, **kept}
