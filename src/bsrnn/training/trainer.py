"""The training run: setup (fresh or resumed), the epoch loop, saves, preemption, the end.

Everything with state is registered with the checkpoint engine under the documented key names,
so a checkpoint is the whole run: both networks, both optimizers and schedulers, every RNG
stream, the progress counters (with the position inside the epoch), the config.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from collections.abc import Callable, Iterator
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
)
from bsrnn.config import MIN_CUT_LEN
from bsrnn.data.cache import cache_pairs
from bsrnn.data.datasets import FixedCrops, FullUtterances, TrainSet
from bsrnn.data.sampler import EpochBatches
from bsrnn.errors import RunFailedError, UserError
from bsrnn.training.distributed import DistributedContext, agree_on_stop, all_sum
from bsrnn.training.execution import describe_execution
from bsrnn.training.builders import (
    apply_optimizer_settings,
    build_networks,
    check_adam_state_shapes,
    objective_of,
    start_pesq_pool,
)
from bsrnn.training.observers import Observer
from bsrnn.training.plan import RunPlan
from bsrnn.training.progress import StepRate, TrainingProgress, saved_progress
from bsrnn.training.resume import check_resumable
from bsrnn.training.run_files import RunFiles, RunFilesError
from bsrnn.training.schedule import apply_resume_rule, describe_schedule, learning_rate_schedule
from bsrnn.training.steps import DelayedDiscriminator, finish_validation, train_step, validate
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
    stopped_by: str  # "completed", "max_steps", "until_step", "already_done", or a signal name

class Trainer:
    """Owns one run's objects; ``run()`` trains until done, ``max_steps`` or a signal."""

    def __init__(self, plan: RunPlan, device: torch.device, context: DistributedContext,
                 lock: RunDirectoryLock | None, files: RunFiles) -> None:
        assert plan.split is not None, "a plan with nothing to train builds no trainer"
        self.plan = plan
        self.config = config = plan.config  # final: the trainer never changes it (training/plan.py)
        split = plan.split
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
        self.validation = plan.validation
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
            self._set_up(plan.loaded)
        except BaseException:
            # A refused checkpoint (wrong shapes, ...) must not keep the run directory locked:
            # from Python, the next train() in the same process would be turned away as
            # "in use by another bsrnn process" (its own PID).
            self.manager.close()
            raise

    def _set_up(self, loaded: LoadedCheckpoint | None) -> None:
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
            self._restore(loaded)
            if self.plan.start_batch is not None:
                self.progress.step_in_epoch = self.plan.start_batch  # the plan's, counted in this run's batches
        # What this run's step_in_epoch counts from now on (the plan has one whenever it trains).
        self.progress.epoch_geometry = self.plan.geometry.as_record() if self.plan.geometry is not None else {}
        if loaded is not None:
            self.files.event("resume", global_step=self.progress.global_step, epoch=self.progress.last_completed_epoch,
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
    def _restore(self, loaded: LoadedCheckpoint) -> None:
        restored = self.manager.restore(loaded, strict=False)
        missing = restored.missing
        for name, optimizer in zip(keys.OPTIMIZERS, (self.nets.optimizer_g, self.nets.optimizer_d), strict=True):
            check_adam_state_shapes(optimizer, name, loaded.path)
        for name, optimizer in zip(keys.OPTIMIZERS, (self.nets.optimizer_g, self.nets.optimizer_d), strict=True):
            for change in apply_optimizer_settings(optimizer, self.config):
                log.info("  %s: %s", name, change)
        self.kept = restored.kept
        if keys.PROGRESS in missing:  # a migrated checkpoint: only weights and the top-level counters
            self.progress.load_state_dict(saved_progress(loaded.payload).state_dict())
        for name in missing:
            log.warning("The checkpoint has no %s: it starts fresh", name)
        for optimizer, scheduler in ((self.nets.optimizer_g, self.scheduler_g),
                                     (self.nets.optimizer_d, self.scheduler_d)):
            apply_resume_rule(optimizer, scheduler, self.config, restart=self.plan.restart_learning_rate)

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
        values: dict[str, Any] = {**progress.top_level_values(), keys.VALIDATION: self.validation,
                                  keys.CONFIG: self.config.to_dict()}
        where = f"epoch {progress.last_completed_epoch}" if progress.step_in_epoch == 0 else (
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
                    stop = self._stop_reason(max_steps)
                    if stop and progress.step_in_epoch == len(batches):
                        stop_at_epoch_end = True  # validate and save the epoch, as a longer run would
                        break
                    if save_due or stop:
                        self._save(metric=None)
                    if stop:
                        return self._stopped(stop)
                bar.close()
                self._end_epoch(epoch, use_gan)
                if stop_at_epoch_end:
                    return self._stopped(self._stop_reason(max_steps))
                signum = agree_on_stop(guard.requested, self.context, self.device)
                if signum is not None:  # arrived during validation: the epoch is saved already
                    return self._preempted(signum)
            self.manager.wait_until_finished()  # "complete" only once the last save is durable
            log.info("Training complete: %d epochs, %d steps", config.epochs, progress.global_step)
            self.files.event("completed", epoch=progress.last_completed_epoch, global_step=progress.global_step)
            return self._result(0, "completed")
        finally:
            elapsed = time.perf_counter() - started
            if self.steps_this_run:
                log.debug("PESQ wait: %.1f%% of %.1fs", 100 * pesq_wait / max(elapsed, 1e-9), elapsed)
            try:
                self.close()  # waits for the last async save: still under the guard, so a
            finally:          # signal now cannot kill the process before that save commits
                guard.uninstall()

    def _stop_reason(self, max_steps: int | None) -> str | None:
        """Why the run stops after this step: this invocation's ``max_steps``, or the run's
        ``until_step`` reached (a total, so a requeue loop repeating one command ends there)."""
        if self.config.until_step is not None and self.progress.global_step >= self.config.until_step:
            return "until_step"
        if max_steps is not None and self.steps_this_run >= max_steps:
            return "max_steps"
        return None

    def _stopped(self, reason: str) -> TrainResult:
        self.manager.wait_until_finished()
        limit = (f"--until-step {self.config.until_step}" if reason == "until_step"
                 else f"--max-steps {self.config.max_steps}")
        log.info("Stopped at %s (global step %d); resume to continue", limit, self.progress.global_step)
        self.files.event("stopped", reason=reason, epoch=self.progress.last_completed_epoch,
                         global_step=self.progress.global_step)
        return self._result(0, reason)

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
            self._record("nonfinite", self._save_mid_epoch, epoch=epoch, step=progress.step_in_epoch,
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
            self._record("step", self._save_mid_epoch, epoch=epoch, step=progress.step_in_epoch,
                         global_step=progress.global_step, **values, lr=self.learning_rates(), steps_per_s=rate,
                         eta=eta)
            self.tensorboard.notify(TensorBoardLog.step, progress.global_step, values, self.learning_rates(), rate)
            self.rate.logged()

    def _steps_per_epoch(self) -> int:
        return len(EpochBatches(len(self.train_set), self.config.batch_size, self.config.seed, 0,
                                rank=self.context.rank, world_size=self.context.world_size))

    def _steps_left(self) -> int:
        """Training steps from here to the target epochs, or to ``max_steps`` of this invocation or
        the run's ``until_step`` if one comes first (validation time not included)."""
        per_epoch = self._steps_per_epoch()
        epochs_after = self.config.epochs - self.progress.current_epoch - 1
        steps = [max(per_epoch - self.progress.step_in_epoch, 0) + max(epochs_after, 0) * per_epoch]
        if self.config.max_steps is not None:
            steps.append(max(self.config.max_steps - self.steps_this_run, 0))
        if self.config.until_step is not None:
            steps.append(max(self.config.until_step - self.progress.global_step, 0))
        return min(steps)

    def _end_epoch(self, epoch: int, use_gan: bool) -> None:
        shard = range(self.context.rank, len(self.val_set), self.context.world_size)
        batch = self.config.batch_size if self.validation["length"] == "crops" else 1  # whole utterances differ in length
        indices = list(shard)

        def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:  # decoded as validated, not all at once
            for start in range(0, len(indices), batch):
                items = [self.val_set[i] for i in indices[start:start + batch]]
                yield torch.stack([item[0] for item in items]), torch.stack([item[1] for item in items])

        sums = validate(self.nets, batches(), use_gan=use_gan, loss_weights=self.config.loss_weights,
                        pesq_pool=self.pesq_pool, device=self.device, objective=self.objective)
        keys = sorted(sums)
        totals = dict(zip(keys, all_sum([sums[k] for k in keys], self.context, self.device)))
        val = finish_validation(totals)
        means = self.progress.epoch_means()
        # The monitored value must mean the same thing in every epoch: validation PESQ does; the
        # validation loss gains the GAN term at the GAN start, after which it can rarely beat
        # the epochs before (selectable, and kept by runs that chose it).
        metric = val["val_loss"] if self.config.monitor == "val_loss" else val["val_pesq"]
        log.info("VALID - Generator loss: %.4f (without GAN term: %.4f), Discriminator loss: %.4f, PESQ: %.2f, "
                 "SI-SDR: %.2f dB; %s", val["val_loss"], val["val_recon"], val["val_disc_loss"], val["val_pesq"],
                 val["val_si_sdr"], self._best_so_far(metric))
        lrs = self.learning_rates()

        def close_epoch() -> None:
            self.scheduler_g.step()
            self.scheduler_d.step()
            self.progress.record_validation(val["val_loss"], val["val_pesq"])
            self.progress.finish_epoch()
            self._save(metric=metric)

        self._record("epoch", close_epoch, epoch=epoch, global_step=self.progress.global_step, use_gan=use_gan,
                     train=means, **val, lr=lrs, nonfinite_skipped=self.progress.nonfinite_skipped)
        self.tensorboard.notify(TensorBoardLog.validation, self.progress.global_step, epoch, val, means, self.nets,
                                self.device)
        close_epoch()

    def _record(self, kind: str, save: Callable[[], None], /, **fields: Any) -> None:
        """Append an event to ``metrics.jsonl``. The log is the run's record, so a line that cannot
        be written (a full disk, a lost mount) stops the run, as ``RunFiles.event`` says; but
        ``save`` keeps the training state first, so the failure never costs the work since the
        last save (an epoch by default, its validation included)."""
        try:
            self.files.event(kind, **fields)
        except RunFilesError:
            save()
            self.manager.wait_until_finished()
            raise

    def _save_mid_epoch(self) -> None:
        self._save(metric=None)

    def _best_so_far(self, metric: float) -> str:
        """'best so far: ...' for the epoch's validation line: this epoch, or the value and its epoch."""
        monitor = self.config.monitor
        if self.manager.is_improvement(metric):
            return f"best {monitor} so far: this epoch"
        entry = self.manager.best()
        # The epoch of checkpoint_best.pt only where that file is this run's own best: after a
        # resume from a kept or superseded state it may be another line of training's.
        own = entry is not None and entry.epoch is not None and entry.digest == self.manager.best_digest
        where = f" (epoch {entry.epoch})" if own else ""
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
        return TrainResult(code, self.run_dir, self.progress.last_completed_epoch, self.progress.global_step, how)

    def close(self) -> None:
        try:
            self.tensorboard.close()  # flushed on every exit: completed, max_steps, signal, error
        finally:
            try:
                self.manager.close()
            finally:
                self.pesq_pool.close()
