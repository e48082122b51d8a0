"""The training run: setup (fresh or resumed), the epoch loop, saves, preemption, the end.

Everything with state is registered with the checkpoint engine under the documented key names,
so a checkpoint is the whole run: both networks, both optimizers and schedulers, every RNG
stream, the progress counters (with the position inside the epoch), the config.
"""

from __future__ import annotations

import hashlib
import logging
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from bsrnn import keys
from bsrnn.checkpoint import (
    CheckpointManager,
    KeptState,
    LoadedCheckpoint,
    NonFiniteStateError,
    PreemptionGuard,
    RNGStreams,
    RunDirectoryLock,
    SaveResult,
    StateMismatchError,
    deferred_signals,
)
from bsrnn.config import MIN_CUT_LEN, Config
from bsrnn.data.cache import cache_pairs
from bsrnn.data.datasets import FixedCrops, FullUtterances, TrainSet
from bsrnn.data.holdout import ValidationSplit, hold_out, legacy_test_split
from bsrnn.data.layout import Corpus
from bsrnn.data.sampler import EpochBatches
from bsrnn.errors import RunFailedError, UserError
from bsrnn.losses import Objective
from bsrnn.metrics.pesq_pool import PesqPool
from bsrnn.models import BSRNN, Discriminator
from bsrnn.training.distributed import DistributedContext, agree_on_stop, all_sum
from bsrnn.training.execution import describe_execution, forward_of
from bsrnn.training.observers import Observer
from bsrnn.training.progress import StepRate, TrainingProgress
from bsrnn.training.resume import check_resumable
from bsrnn.training.run_files import RunFiles
from bsrnn.training.schedule import apply_resume_rule, describe_schedule, learning_rate_schedule
from bsrnn.training.steps import DelayedDiscriminator, Networks, finish_validation, train_step, validate
from bsrnn.training.tensorboard import TensorBoardLog, examples_of

log = logging.getLogger("bsrnn.train")


class TrainingDivergedError(RunFailedError):
    """Too many consecutive non-finite losses: stop rather than save garbage."""


@dataclass(frozen=True)
class TrainResult:
    """How a ``train`` call ended. ``exit_code`` is 0, or 128+signal after a preemption save."""

    exit_code: int
    run_dir: Path
    epoch: int
    global_step: int
    stopped_by: str  # "completed", "max_steps", "already_done", or a signal name


def objective_of(config: Config) -> Objective:
    """The loss ingredients of ``config`` (its recipe's, and any field given over them)."""
    return Objective(
        complex_loss=config.complex_loss,  # type: ignore[arg-type]
        magnitude_loss=config.magnitude_loss,  # type: ignore[arg-type]
        phase_weight=config.phase_loss_weight,
        time_weight=config.time_loss_weight,
        consistency_weight=config.consistency_loss_weight,
        compress_factor=config.compress_factor,
        metric_target=config.metric_target,  # type: ignore[arg-type]
        disc_noisy_term=config.disc_noisy_term,  # type: ignore[arg-type]
    )


def make_optimizer(parameters: Any, config: Config) -> torch.optim.Optimizer:
    """Adam or AdamW as the config says; the reference's ``Adam(lr)`` is ``adam`` with betas
    (0.9, 0.999) and no weight decay, torch's defaults, so its updates are unchanged."""
    kind = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return kind(parameters, lr=config.init_lr, betas=(config.adam_betas[0], config.adam_betas[1]),
                weight_decay=config.weight_decay)


def apply_optimizer_settings(optimizer: torch.optim.Optimizer, config: Config) -> list[str]:
    """Give a restored optimizer the config's betas, weight decay and kind; say what changed.

    ``Optimizer.load_state_dict`` brings back the saved hyper-parameters with the moments, so
    without this a resume that changes them (a recipe switch, an explicit ``--adam-betas``)
    would silently keep the checkpoint's. The learning rate has its own rule (``schedule``).
    Adam and AdamW keep the same moments; AdamW is Adam with decoupled weight decay.
    """
    wanted = {"betas": (config.adam_betas[0], config.adam_betas[1]), "weight_decay": config.weight_decay,
              "decoupled_weight_decay": config.optimizer == "adamw"}
    changes = []
    for group in optimizer.param_groups:
        for key, value in wanted.items():
            if key in group and group[key] != value:
                changes.append(f"{key} {group[key]!r} -> {value!r}")
                group[key] = value
    return sorted(set(changes))


def build_networks(config: Config, device: torch.device) -> Networks:
    """Both networks (seeded), their optimizers, and forward passes as ``amp``/``compile`` ask.

    ``compile`` applies to the generator only: the discriminator's step is ~3 % of the
    generator's on CPU (BENCHMARKS.md), and its spectral norm updates its power-iteration
    vectors in place on every forward, which AOTAutograd's saved-tensor check refuses
    ("modified by an inplace operation") in the backward.
    """
    torch.manual_seed(config.seed)
    generator = BSRNN(num_channel=config.num_channel, num_layer=config.num_layer, causal=config.causal).to(device)
    discriminator = Discriminator(ndf=config.ndf).to(device)
    return Networks(
        generator,
        discriminator,
        make_optimizer(generator.parameters(), config),
        make_optimizer(discriminator.parameters(), config),
        run_generator=forward_of(generator, device, config.amp, config.compile),
        run_discriminator=forward_of(discriminator, device, config.amp, compile=False),
    )


def start_pesq_pool(workers: int) -> PesqPool:
    """The PESQ pool, its helper processes started with the preemption signals blocked.

    SLURM (``scancel --signal``) and Ctrl-C signal every process of the job, not only the
    trainer. The PESQ workers ignore those signals themselves, but the pool also starts
    multiprocessing's resource tracker, which ignores only SIGINT and SIGTERM: SIGUSR1 killed it,
    and the run ended with "resource_tracker: process died unexpectedly" and a KeyError traceback
    per semaphore (found by ``tools/torture.py signals``). A blocked signal mask is inherited
    across fork and exec, and the tracker never unblocks SIGUSR1, so it survives.
    """
    with deferred_signals():
        return PesqPool(workers=workers)


def check_adam_state_shapes(optimizer: torch.optim.Optimizer, name: str, path: Path) -> None:
    """Refuse optimizer moments whose shapes differ from their parameters' (a re-hashed edit).

    ``Optimizer.load_state_dict`` checks only the number of parameters, so a wrong-shaped
    ``exp_avg`` would load and fail at the first step with a raw size-mismatch traceback.
    """
    for group in optimizer.param_groups:
        for index, parameter in enumerate(group["params"]):
            for key, value in optimizer.state.get(parameter, {}).items():
                if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != parameter.shape:
                    raise StateMismatchError(
                        f"{path}: cannot restore {name!r}: state {key!r} of parameter {index} has shape "
                        f"{tuple(value.shape)}, the parameter {tuple(parameter.shape)}. The file was edited "
                        "or comes from another model; resume from the other checkpoint (--load best|last)."
                    )


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


class Trainer:
    """Owns one run's objects; ``run()`` trains until done, ``max_steps`` or a signal."""

    def __init__(self, config: Config, split: ValidationSplit, device: torch.device, context: DistributedContext,
                 loaded: LoadedCheckpoint | None, lock: RunDirectoryLock | None, files: RunFiles,
                 init_lr_given: bool) -> None:
        self.config = config
        self.device = device
        self.context = context
        self.run_dir = Path(config.save_model_dir)
        self.files = files
        self.nets = build_networks(config, device)
        self.objective = objective_of(config)
        self.scheduler_g = learning_rate_schedule(self.nets.optimizer_g, config)
        self.scheduler_d = learning_rate_schedule(self.nets.optimizer_d, config)
        self.progress = TrainingProgress()
        self.steps_this_run = 0  # training steps taken by this invocation (``max_steps`` counts these)
        self.rate = StepRate()
        execution = describe_execution(device, config.amp, config.compile)
        if execution and context.is_main:
            log.info(execution)
        self.train_set = TrainSet(split.train, cut_len=config.cut_len, seed=config.seed)
        self.validation = validation_record(split, config, loaded)
        if self.validation["length"] != config.validation_length:  # the run's own, recorded in config.toml too
            self.config = config = config.replace(validation_length=self.validation["length"])
        self.val_set = (FullUtterances(split.valid, min_len=MIN_CUT_LEN) if self.validation["length"] == "full"
                        else FixedCrops(split.valid, cut_len=self.validation["cut_len"], seed=self.validation["seed"]))
        if len(self.train_set) < config.batch_size * context.world_size:
            raise UserError(
                f"The training split has {len(self.train_set)} pairs, fewer than one batch "
                f"({config.batch_size} x {context.world_size} process(es)) after holding out {len(split.valid)} "
                "for validation. Lower --batch-size, or hold out less (--valid-fraction, --valid-speakers)."
            )
        if not split.valid:
            raise UserError("The validation split is empty: there is nothing to choose checkpoint_best.pt by. "
                            "Hold out pairs with --valid-fraction or --valid-speakers, or add a valid/ folder.")
        self.manager = CheckpointManager(
            self.run_dir, monitor=config.monitor, mode=config.monitor_mode,
            async_save=config.async_save, writer=context.is_main, lock=lock,
            require_finite=keys.NETWORKS, accept=check_resumable,
        )
        try:
            self._set_up(loaded, init_lr_given)
        except BaseException:
            # A refused checkpoint (wrong shapes, ...) must not keep the run directory locked:
            # from Python, the next train() in the same process would be turned away as
            # "in use by another bsrnn process" (its own PID).
            self.manager.close()
            raise

    def _set_up(self, loaded: LoadedCheckpoint | None, init_lr_given: bool) -> None:
        """Register the state, restore it, write config.toml, start the PESQ pool."""
        config, context = self.config, self.context
        for name, obj in zip(keys.REGISTERED, (
            self.nets.generator, self.nets.discriminator, self.nets.optimizer_g, self.nets.optimizer_d,
            self.scheduler_g, self.scheduler_d, RNGStreams(), self.progress,
        ), strict=True):
            self.manager.register(name, obj)
        # The held previous batch is part of the run's state (exact resume); only runs with the option have it.
        self.delayed = DelayedDiscriminator() if config.delayed_discriminator else None
        if self.delayed is not None:
            self.manager.register(keys.DELAYED_DISCRIMINATOR, self.delayed)
            if context.is_main:
                log.info("Delayed discriminator: it learns from the previous step's batch (the first step of a "
                         "run does not update it)")
        if config.cache_audio:  # after the lock: a refused second trainer must not decode everything
            self.train_set.pairs = cache_pairs(self.train_set.pairs, progress=context.is_main)
        self.kept: list[KeptState] = []  # states this resume does not continue, kept before any save
        if loaded is not None:
            self._restore(loaded, init_lr_given)
            self.files.event("resume", global_step=self.progress.global_step, epoch=self.progress.epoch,
                             kind=loaded.kind, path=str(loaded.path), gan_start_epoch=config.gan_epoch,
                             monitor=config.monitor)
        else:
            self.files.event("start", global_step=0, gan_start_epoch=config.gan_epoch, monitor=config.monitor,
                             recipe=config.recipe)
        if context.is_main:
            overrides = config.recipe_overrides()
            log.info("Recipe %s%s; checkpoint_best.pt by %s (%s)", config.recipe,
                     f" with {len(overrides)} field(s) of its own: {', '.join(overrides)}" if overrides else "",
                     config.monitor, config.monitor_mode)
            log.info(describe_schedule(config, self._steps_per_epoch()))
        self.files.write_config(config)

        def tensorboard_log() -> TensorBoardLog:
            return TensorBoardLog(self.run_dir, examples_of(self.val_set), self.progress.global_step)

        # An observer: it can fail only by one warning and switching itself off (training/observers.py).
        self.tensorboard = Observer("TensorBoard logs", tensorboard_log if config.tensorboard and context.is_main
                                    else None)
        self.pesq_pool = start_pesq_pool(config.pesq_workers)

    # ------------------------------------------------------------------------------ resume
    def _restore(self, loaded: LoadedCheckpoint, init_lr_given: bool) -> None:
        restored = self.manager.restore(loaded, strict=False)
        missing = restored.missing
        for name, optimizer in zip(keys.OPTIMIZERS, (self.nets.optimizer_g, self.nets.optimizer_d), strict=True):
            check_adam_state_shapes(optimizer, name, loaded.path)
        for name, optimizer in zip(keys.OPTIMIZERS, (self.nets.optimizer_g, self.nets.optimizer_d), strict=True):
            for change in apply_optimizer_settings(optimizer, self.config):
                log.info("  %s: %s", name, change)
        self.kept = restored.kept
        if keys.PROGRESS in missing:  # a migrated checkpoint: only weights and the epoch
            self.progress.epoch = int(loaded.get("epoch", -1))
            self.progress.global_step = int(loaded.get("global_step", 0))
        for name in missing:
            log.warning("The checkpoint has no %s: it starts fresh", name)
        for optimizer, scheduler in ((self.nets.optimizer_g, self.scheduler_g),
                                     (self.nets.optimizer_d, self.scheduler_d)):
            apply_resume_rule(optimizer, scheduler, self.config, init_lr_given=init_lr_given)

    def learning_rates(self) -> dict[str, float]:
        return {
            "generator": self.nets.optimizer_g.param_groups[0]["lr"],
            "discriminator": self.nets.optimizer_d.param_groups[0]["lr"],
        }

    # ------------------------------------------------------------------------------- saves
    def _save(self, metric: float | None) -> None:
        if not self.context.is_main:
            return
        progress = self.progress
        values: dict[str, Any] = {
            "epoch": progress.epoch,
            "global_step": progress.global_step,
            "step_in_epoch": progress.step_in_epoch,
            "val_loss": progress.val_loss,
            "best_val_loss": progress.best_val_loss,
            "val_pesq": progress.val_pesq,
            "validation": self.validation,
            keys.CONFIG: self.config.to_dict(),
        }
        where = f"epoch {progress.epoch}" if progress.step_in_epoch == 0 else (
            f"epoch {progress.current_epoch} step {progress.step_in_epoch}")
        val = f", val_loss: {progress.val_loss:.4f}" if progress.val_loss is not None and metric is not None else ""
        monitor = self.config.monitor

        def report(result: SaveResult) -> None:
            """The save lines, printed once the files are durable (async: from the writer)."""
            log.info("✓ Saved checkpoint_last.pt (%s%s)", where, val)
            if result.is_best:
                log.info("NEW BEST! Saved checkpoint_best.pt (%s: %.4f)", monitor, metric)

        try:
            self.manager.save(metric=metric, values=values, on_commit=report)
        except NonFiniteStateError as error:
            raise TrainingDivergedError(f"Training stopped: {error}") from error

    # -------------------------------------------------------------------------------- loop
    def run(self, max_steps: int | None) -> TrainResult:
        config, progress = self.config, self.progress
        guard = PreemptionGuard().install()
        self.steps_this_run = 0
        started = time.perf_counter()
        pesq_wait = 0.0
        try:
            while progress.current_epoch < config.epochs:
                epoch = progress.current_epoch
                batches = EpochBatches(
                    len(self.train_set), config.batch_size, config.seed, epoch,
                    rank=self.context.rank, world_size=self.context.world_size,
                    start_batch=progress.step_in_epoch,
                )
                loader = DataLoader(
                    self.train_set, batch_sampler=batches, num_workers=config.workers,
                    generator=torch.Generator(), pin_memory=self.device.type == "cuda",
                )
                use_gan = epoch >= config.gan_epoch
                stop_at_epoch_end = False
                bar = tqdm(loader, total=batches.remaining, desc=f"epoch {epoch}", leave=False,
                           disable=None if self.context.is_main else True, dynamic_ncols=True)
                for clean, noisy in bar:
                    result = train_step(
                        self.nets, clean.to(self.device, non_blocking=True), noisy.to(self.device, non_blocking=True),
                        use_gan=use_gan, loss_weights=config.loss_weights, grad_clip=config.grad_clip,
                        pesq_pool=self.pesq_pool, context=self.context, objective=self.objective,
                        delayed=self.delayed,
                    )
                    pesq_wait += result.pesq_wait_s
                    self.steps_this_run += 1
                    self._account(result, epoch)
                    bar.set_postfix(loss=f"{result.values['loss']:.4f}", refresh=False)
                    signum = agree_on_stop(guard.requested, self.context, self.device)
                    if signum is not None:
                        return self._preempted(signum)
                    save_due = bool(config.save_every_steps) and progress.global_step % config.save_every_steps == 0
                    stop = max_steps is not None and self.steps_this_run >= max_steps
                    if stop and progress.step_in_epoch == len(batches):
                        stop_at_epoch_end = True  # validate and save the epoch, as a longer run would
                        break
                    if save_due or stop:
                        self._save(metric=None)
                    if stop:
                        return self._stopped_by_max_steps(max_steps)
                bar.close()
                self._end_epoch(epoch, use_gan)
                if stop_at_epoch_end:
                    return self._stopped_by_max_steps(max_steps)
                signum = agree_on_stop(guard.requested, self.context, self.device)
                if signum is not None:  # arrived during validation: the epoch is saved already
                    return self._preempted(signum)
            self.manager.wait_until_finished()  # "complete" only once the last save is durable
            log.info("Training complete: %d epochs, %d steps", config.epochs, progress.global_step)
            self.files.event("completed", epoch=progress.epoch, global_step=progress.global_step)
            return self._result(0, "completed")
        finally:
            elapsed = time.perf_counter() - started
            if self.steps_this_run:
                log.debug("PESQ wait: %.1f%% of %.1fs", 100 * pesq_wait / max(elapsed, 1e-9), elapsed)
            try:
                self.close()  # waits for the last async save: still under the guard, so a
            finally:          # signal now cannot kill the process before that save commits
                guard.uninstall()

    def _stopped_by_max_steps(self, max_steps: int | None) -> TrainResult:
        self.manager.wait_until_finished()
        log.info("Stopped after --max-steps %d (global step %d); resume to continue",
                 max_steps, self.progress.global_step)
        self.files.event("stopped", reason="max_steps", epoch=self.progress.epoch,
                         global_step=self.progress.global_step)
        return self._result(0, "max_steps")

    def _account(self, result: Any, epoch: int) -> None:
        config, progress = self.config, self.progress
        progress.global_step += 1
        progress.step_in_epoch += 1
        self.tensorboard.notify(TensorBoardLog.waited_for_pesq, result.pesq_wait_s)
        if result.nonfinite:
            progress.nonfinite_in_a_row += 1
            progress.nonfinite_skipped += 1
            log.warning("Non-finite loss at epoch %d step %d (global %d): update skipped (%d in a row)",
                        epoch, progress.step_in_epoch, progress.global_step - 1, progress.nonfinite_in_a_row)
            self.files.event("nonfinite", epoch=epoch, step=progress.step_in_epoch,
                             global_step=progress.global_step, **result.values)
            if progress.nonfinite_in_a_row >= config.max_nonfinite_steps:
                raise TrainingDivergedError(
                    f"Training stopped: {progress.nonfinite_in_a_row} consecutive steps had a NaN/inf loss "
                    f"(limit max_nonfinite_steps={config.max_nonfinite_steps}). checkpoint_best.pt and the "
                    "last good checkpoint_last.pt are unchanged. Lower --init-lr or check the data, then "
                    "resume with --load best."
                )
            return
        progress.nonfinite_in_a_row = 0
        progress.add_step({k: v for k, v in result.values.items() if math.isfinite(v)})
        rate = self.rate.step()
        if progress.step_in_epoch % config.log_interval == 0 or self.rate.log_due(config.log_seconds):
            values = result.values
            eta = self.rate.eta(self._steps_left())
            log.info("Epoch %d, Step %d, loss: %.4f, disc_loss: %.4f, PESQ: %.2f, %.2f steps/s, ETA %s",
                     epoch, progress.step_in_epoch, values["loss"], values["disc_loss"], values["pesq"], rate, eta)
            self.files.event("step", epoch=epoch, step=progress.step_in_epoch, global_step=progress.global_step,
                             **values, lr=self.learning_rates(), steps_per_s=rate, eta=eta)
            self.tensorboard.notify(TensorBoardLog.step, progress.global_step, values, self.learning_rates(), rate)
            self.rate.logged()

    def _steps_per_epoch(self) -> int:
        return len(EpochBatches(len(self.train_set), self.config.batch_size, self.config.seed, 0,
                                rank=self.context.rank, world_size=self.context.world_size))

    def _steps_left(self) -> int:
        """Training steps from here to the target epochs, or to ``max_steps`` of this invocation if
        that comes first (validation time not included)."""
        per_epoch = self._steps_per_epoch()
        epochs_after = self.config.epochs - self.progress.current_epoch - 1
        to_target = max(per_epoch - self.progress.step_in_epoch, 0) + max(epochs_after, 0) * per_epoch
        if self.config.max_steps is None:
            return to_target
        return min(to_target, max(self.config.max_steps - self.steps_this_run, 0))

    def _end_epoch(self, epoch: int, use_gan: bool) -> None:
        shard = range(self.context.rank, len(self.val_set), self.context.world_size)
        batch = self.config.batch_size if self.validation["length"] == "crops" else 1  # whole utterances differ in length
        indices = list(shard)
        batches = []
        for start in range(0, len(indices), batch):
            items = [self.val_set[i] for i in indices[start:start + batch]]
            batches.append((torch.stack([item[0] for item in items]), torch.stack([item[1] for item in items])))
        sums = validate(self.nets, batches, use_gan=use_gan, loss_weights=self.config.loss_weights,
                        pesq_pool=self.pesq_pool, device=self.device, objective=self.objective)
        keys = sorted(sums)
        totals = dict(zip(keys, all_sum([sums[k] for k in keys], self.context, self.device)))
        val = finish_validation(totals)
        means = self.progress.epoch_means()
        # The monitored value must mean the same thing in every epoch: validation PESQ does; the
        # validation loss gains the GAN term at the GAN start, after which it can rarely beat
        # the epochs before (selectable, and kept by runs that chose it).
        metric = val["val_loss"] if self.config.monitor == "val_loss" else val["val_pesq"]
        log.info("VALID - Generator loss: %.4f (without GAN term: %.4f), Discriminator loss: %.4f, PESQ: %.2f; %s",
                 val["val_loss"], val["val_recon"], val["val_disc_loss"], val["val_pesq"], self._best_so_far(metric))
        lrs = self.learning_rates()
        self.files.event("epoch", epoch=epoch, global_step=self.progress.global_step, use_gan=use_gan,
                         train=means, **val, lr=lrs, nonfinite_skipped=self.progress.nonfinite_skipped)
        self.tensorboard.notify(TensorBoardLog.validation, self.progress.global_step, epoch, val, means, self.nets,
                                self.device)
        self.scheduler_g.step()
        self.scheduler_d.step()
        self.progress.record_validation(val["val_loss"], val["val_pesq"])
        self.progress.finish_epoch()
        self._save(metric=metric)

    def _best_so_far(self, metric: float) -> str:
        """'best so far: ...' for the epoch's validation line: this epoch, or the value and its epoch."""
        monitor = self.config.monitor
        if self.manager.is_improvement(metric):
            return f"best {monitor} so far: this epoch"
        entry = self.manager.best()
        where = f" (epoch {entry.epoch})" if entry is not None and entry.epoch is not None else ""
        best = self.manager.best_value
        return f"best {monitor} so far: {best:.4f}{where}" if best is not None else f"no finite {monitor} yet"

    def _preempted(self, signum: int) -> TrainResult:
        self._save(metric=None)
        self.manager.wait_until_finished()
        name = signal.Signals(signum).name
        progress = self.progress
        print(f"Preempted by {name}: saved checkpoint_last.pt at epoch {progress.current_epoch} "
              f"step {progress.step_in_epoch} (global step {progress.global_step}); "
              f"exiting with {128 + signum}. Resume with the same command.", flush=True)
        self.files.event("preempted", signal=name, global_step=progress.global_step)
        return self._result(128 + signum, name)

    def _result(self, code: int, how: str) -> TrainResult:
        return TrainResult(code, self.run_dir, self.progress.epoch, self.progress.global_step, how)

    def close(self) -> None:
        try:
            self.tensorboard.close()  # flushed on every exit: completed, max_steps, signal, error
        finally:
            try:
                self.manager.close()
            finally:
                self.pesq_pool.close()
