"""One training step and one validation pass, for any recipe (``bsrnn.losses.Objective``).

A step (reference ``train_step``, with PESQ taken off the critical path):

1. STFT of clean and noisy crops; the generator's estimate; compressed magnitudes; the
   estimate's waveform (with its gradient when the time or consistency loss needs it).
2. The estimate's audio goes to the PESQ worker pool at once (PESQ(clean -> est) for the
   enhanced term, and for the third term PESQ(est -> noisy) as the reference has it, or
   PESQ(clean -> noisy), or nothing when the recipe leaves that term out).
3. Generator loss (reference: complex L1 + magnitude L1 [+ GAN term]; the recipe's extra
   terms), backward, gradient average over ranks, clipping at ``grad_clip``, optimizer step --
   while PESQ runs.
4. PESQ collected; the discriminator's loss with per-item masks (the reference drops the
   whole step when one item fails); backward, average, clipping (as the reference clips both
   networks), its step. Run every step from epoch 0, as the reference does.

A non-finite loss or gradient norm skips that network's update and is reported to the caller,
which counts consecutive skips (``max_nonfinite_steps``).

The one-step-delayed discriminator (``Config.delayed_discriminator``, off by default; pass a
``DelayedDiscriminator`` as ``delayed``) changes step 4 only: the discriminator learns from the
*previous* step's batch (its compressed magnitudes, the enhanced one detached, and its PESQ),
whose scores have had a whole generator step to finish, so the step does not wait for PESQ
even when the generator step is shorter than the PESQ work (a fast GPU). This step's batch is
held for the next step. The generator's GAN term still uses the current discriminator. The
first step of a run has no previous batch: the discriminator does not update on it. Why this is
a change of semantics: the discriminator's update at step t uses an estimate of the generator
as it was before its step t-1 update, one generator update staler than the reference's. The
held batch crosses epoch ends (an epoch's last batch is learnt at the next epoch's first step,
after validation and the scheduler step), and a batch whose generator loss was non-finite
costs two skipped updates (its generator's, then the discriminator's one step later).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from bsrnn.audio import istft, stft
from bsrnn.losses import (
    REFERENCE_OBJECTIVE,
    DiscriminatorLoss,
    GeneratorLoss,
    Objective,
    compressed_magnitude,
    discriminator_loss,
    generator_loss,
)
from bsrnn.metrics.pesq_pool import PendingPesq, PesqBatch, PesqPool
from bsrnn.metrics.si_sdr import si_sdr
from bsrnn.pcs import stretched_target
from bsrnn.training.distributed import DistributedContext, average_gradients

log = logging.getLogger(__name__)


@dataclass
class Networks:
    """Both networks, their optimizers, and how their forward passes run.

    ``run_generator`` / ``run_discriminator`` compute the forward passes (autocast,
    ``torch.compile``: see ``bsrnn.training.execution``); by default the modules themselves.
    Parameters, gradients and state dicts are always the plain modules'.
    """

    generator: nn.Module
    discriminator: nn.Module
    optimizer_g: torch.optim.Optimizer
    optimizer_d: torch.optim.Optimizer
    run_generator: Callable[..., torch.Tensor] | None = None
    run_discriminator: Callable[..., torch.Tensor] | None = None

    def __post_init__(self) -> None:
        if self.run_generator is None:
            self.run_generator = self.generator
        if self.run_discriminator is None:
            self.run_discriminator = self.discriminator


@dataclass
class StepResult:
    values: dict[str, float]
    generator_skipped: bool = False
    discriminator_skipped: bool = False
    pesq_wait_s: float = 0.0

    @property
    def nonfinite(self) -> bool:
        return self.generator_skipped or self.discriminator_skipped


def _finite(tensor: torch.Tensor) -> bool:
    return bool(torch.isfinite(tensor).all())


def _nanmean(scores: np.ndarray, valid: np.ndarray) -> float:
    return float(scores[valid].mean()) if valid.any() else math.nan


@dataclass
class _Forward:
    """One generator forward on a batch, with what the losses and PESQ need.

    ``target_*`` are what the reconstruction terms aim at: the clean signal's own tensors, or
    its perceptually contrast-stretched spectrum (``Objective.pcs_target``). The discriminator
    and PESQ always see the real clean (``clean_mag``, ``clean_samples``).
    """

    clean: torch.Tensor
    clean_spec: torch.Tensor
    est_spec: torch.Tensor
    clean_mag: torch.Tensor
    est_mag: torch.Tensor
    noisy_mag: torch.Tensor
    target_spec: torch.Tensor
    target_mag: torch.Tensor
    target_audio: torch.Tensor
    est_audio: torch.Tensor | None  # istft(est_spec) with its gradient, when a loss needs it
    pending_enhanced: PendingPesq  # PESQ(clean -> est)
    pending_noisy: PendingPesq | None  # the third discriminator term's PESQ; None when it is off
    clean_samples: np.ndarray  # (batch, samples) on the CPU, as PESQ gets them; validation's SI-SDR too
    est_samples: np.ndarray


def _forward(generator: Callable[..., torch.Tensor], clean: torch.Tensor, noisy: torch.Tensor, pesq_pool: PesqPool,
             objective: Objective = REFERENCE_OBJECTIVE) -> _Forward:
    """Generator forward; the estimate's PESQ starts in the pool before anything else runs."""
    clean_spec, noisy_spec = stft(clean), stft(noisy)
    est_spec = generator(noisy_spec)
    length = clean.shape[-1]
    est_waveform = istft(est_spec, length=length) if objective.needs_waveform else None
    # The same numbers either way: istft of the detached spectrum, or the detached istft.
    detached = est_waveform.detach() if est_waveform is not None else istft(est_spec.detach(), length=length)
    est_audio = detached.cpu().numpy()
    clean_audio, noisy_audio = clean.cpu().numpy(), noisy.cpu().numpy()
    pending_enhanced = pesq_pool.submit(list(clean_audio), list(est_audio))
    pending_noisy = {
        "enhanced": lambda: pesq_pool.submit(list(est_audio), list(noisy_audio)),
        "clean": lambda: pesq_pool.submit(list(clean_audio), list(noisy_audio)),
        "off": lambda: None,
    }[objective.disc_noisy_term]()
    exponent = objective.compress_factor
    clean_mag = compressed_magnitude(clean_spec, exponent)
    target_spec, target_mag, target_audio = clean_spec, clean_mag, clean
    if objective.pcs_target:
        target_spec = stretched_target(clean_spec)
        target_mag = compressed_magnitude(target_spec, exponent)
        target_audio = istft(target_spec, length=length)
    return _Forward(
        clean, clean_spec, est_spec, clean_mag, compressed_magnitude(est_spec, exponent),
        compressed_magnitude(noisy_spec, exponent), target_spec, target_mag, target_audio, est_waveform,
        pending_enhanced, pending_noisy, clean_audio, est_audio,
    )


def _generator_loss(forward: _Forward, discriminator: Callable[..., torch.Tensor] | None, loss_weights: list[float],
                    objective: Objective) -> GeneratorLoss:
    return generator_loss(
        forward.est_spec, forward.target_spec, discriminator, loss_weights,
        est_mag=forward.est_mag, clean_mag=forward.target_mag, objective=objective,
        est_audio=forward.est_audio, clean_audio=forward.target_audio, discriminator_clean_mag=forward.clean_mag,
    )


def _scored_discriminator_loss(discriminator: Callable[..., torch.Tensor], clean_mag: torch.Tensor,
                               est_mag: torch.Tensor, noisy_mag: torch.Tensor, enhanced: PesqBatch,
                               noisy: PesqBatch | None, objective: Objective) -> DiscriminatorLoss:
    """D's loss on one batch's magnitudes and its collected PESQ (the synchronous and the
    delayed step share it, so both learn the same function of their inputs)."""
    return discriminator_loss(
        discriminator, clean_mag, est_mag, noisy_mag,
        torch.from_numpy(enhanced.scores), torch.from_numpy(noisy.scores) if noisy is not None else None,
        torch.from_numpy(enhanced.valid), torch.from_numpy(noisy.valid) if noisy is not None else None,
        noisy_pair=objective.disc_noisy_term, target=objective.metric_target,
    )


def _discriminator_loss(discriminator: Callable[..., torch.Tensor], forward: _Forward,
                        objective: Objective = REFERENCE_OBJECTIVE) -> tuple[DiscriminatorLoss, PesqBatch, float]:
    """Collect the PESQ scores (blocking only if they are not ready) and compute D's loss."""
    enhanced = forward.pending_enhanced.result()
    noisy = forward.pending_noisy.result() if forward.pending_noisy is not None else None
    loss = _scored_discriminator_loss(discriminator, forward.clean_mag, forward.est_mag.detach(), forward.noisy_mag,
                                      enhanced, noisy, objective)
    wait = forward.pending_enhanced.wait_s + (forward.pending_noisy.wait_s if forward.pending_noisy is not None else 0.0)
    return loss, enhanced, wait


def _collect(scores: PendingPesq | PesqBatch) -> tuple[PesqBatch, float]:
    """The scores, and how long this call blocked for them (0 when they were already here)."""
    if isinstance(scores, PesqBatch):
        return scores, 0.0
    started = time.perf_counter()
    batch = scores.result()
    return batch, time.perf_counter() - started


@dataclass
class HeldBatch:
    """One step's batch as the discriminator learns from it: compressed magnitudes (the
    enhanced one detached from the generator) and the PESQ of the estimate, pending or scored.

    ``noisy_term`` records which third-term PESQ was submitted (``Objective.disc_noisy_term``),
    so that a later step under another objective does not read the wrong scores.
    """

    clean_mag: torch.Tensor
    est_mag: torch.Tensor
    noisy_mag: torch.Tensor
    enhanced: PendingPesq | PesqBatch
    noisy: PendingPesq | PesqBatch | None
    noisy_term: str


_HELD_TENSORS = ("clean_mag", "est_mag", "noisy_mag")


class DelayedDiscriminator:
    """The one-step-delayed discriminator's memory: the batch the next step's discriminator
    learns from (module docstring). ``train_step(..., delayed=...)`` swaps it every step.

    Stateful for the checkpoint engine (the trainer registers it as
    ``keys.DELAYED_DISCRIMINATOR``): ``state_dict`` waits for the held batch's PESQ and saves
    its tensors and scores, so a resumed run trains its discriminator on exactly the batch the
    uninterrupted run would have. Under DDP only rank 0 saves, so after a resume every rank's
    first delayed update uses rank 0's held batch (as every rank restores rank 0's RNG streams).
    """

    def __init__(self) -> None:
        self.held: HeldBatch | None = None

    def exchange(self, forward: _Forward, objective: Objective) -> HeldBatch | None:
        """Hold this step's batch (its PESQ still running); return the previous one, if any."""
        previous = self.held
        self.held = HeldBatch(
            forward.clean_mag.detach().contiguous(), forward.est_mag.detach().contiguous(),
            forward.noisy_mag.detach().contiguous(), forward.pending_enhanced, forward.pending_noisy,
            objective.disc_noisy_term,
        )
        return previous

    def wait(self) -> float:
        """Wait for the held batch's PESQ (a save needs the scores); return the seconds blocked."""
        if self.held is None:
            return 0.0
        self.held.enhanced, waited = _collect(self.held.enhanced)
        if self.held.noisy is not None:
            self.held.noisy, noisy_wait = _collect(self.held.noisy)
            waited += noisy_wait
        return waited

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain values only (``torch.load(weights_only=True)`` opens them)."""
        self.wait()
        held = self.held
        if held is None:
            return {"held": False}
        assert isinstance(held.enhanced, PesqBatch) and not isinstance(held.noisy, PendingPesq), "wait() scored them"
        state: dict[str, Any] = {"held": True, "noisy_term": held.noisy_term,
                                 **{name: getattr(held, name) for name in _HELD_TENSORS},
                                 "enhanced_scores": torch.from_numpy(held.enhanced.scores.copy()),
                                 "enhanced_valid": torch.from_numpy(held.enhanced.valid.copy())}
        if held.noisy is not None:
            state["noisy_scores"] = torch.from_numpy(held.noisy.scores.copy())
            state["noisy_valid"] = torch.from_numpy(held.noisy.valid.copy())
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the held batch; a malformed state raises ``ValueError`` naming what is wrong."""
        if not state.get("held"):
            self.held = None
            return
        needed = (*_HELD_TENSORS, "enhanced_scores", "enhanced_valid")
        missing = [name for name in needed if not isinstance(state.get(name), torch.Tensor)]
        if missing:
            raise ValueError(f"the held discriminator batch lacks the tensor(s) {', '.join(missing)}")

        def scored(prefix: str) -> PesqBatch:
            scores, valid = state[f"{prefix}_scores"].numpy(), state[f"{prefix}_valid"].numpy()
            if scores.shape != (state["clean_mag"].shape[0],) or valid.shape != scores.shape:
                raise ValueError(f"the held discriminator batch has {prefix} PESQ of shape {scores.shape} for a "
                                 f"batch of {state['clean_mag'].shape[0]}")
            return PesqBatch(scores=scores.astype(np.float32), valid=valid.astype(bool))

        self.held = HeldBatch(
            *(state[name].contiguous() for name in _HELD_TENSORS), scored("enhanced"),
            scored("noisy") if isinstance(state.get("noisy_scores"), torch.Tensor) else None,
            str(state.get("noisy_term", "enhanced")),
        )


def _delayed_discriminator_loss(discriminator: Callable[..., torch.Tensor], held: HeldBatch, device: torch.device,
                                objective: Objective) -> tuple[DiscriminatorLoss, PesqBatch, float] | None:
    """D's loss on the previous step's batch (held), or None when it cannot be used: scored for
    another third term than the objective's (a resume that changed ``disc_noisy_term``)."""
    if held.noisy_term != objective.disc_noisy_term:
        log.warning("The held discriminator batch was scored for disc_noisy_term %r, the run now uses %r: the "
                    "discriminator skips it", held.noisy_term, objective.disc_noisy_term)
        return None
    enhanced, wait = _collect(held.enhanced)
    noisy = None
    if held.noisy is not None:
        noisy, noisy_wait = _collect(held.noisy)
        wait += noisy_wait
    clean_mag, est_mag, noisy_mag = (getattr(held, name).to(device) for name in _HELD_TENSORS)
    loss = _scored_discriminator_loss(discriminator, clean_mag, est_mag, noisy_mag, enhanced, noisy, objective)
    return loss, enhanced, wait


_NO_DISCRIMINATOR_UPDATE = {"disc_loss": math.nan, "disc_clean": math.nan, "disc_enhanced": math.nan,
                            "disc_noisy": math.nan, "pesq": math.nan, "pesq_valid": 0.0}
"""A delayed step's discriminator values when it had no batch to learn from (a run's first step)."""


def _update(loss: torch.Tensor, module: nn.Module, optimizer: torch.optim.Optimizer, grad_clip: float,
            context: DistributedContext) -> bool:
    """Backward, average over ranks, clip, step; False (nothing applied) if anything is non-finite."""
    optimizer.zero_grad(set_to_none=True)
    applied = False
    if _finite(loss):
        loss.backward()
        average_gradients(module.parameters(), context)
        if _finite(torch.nn.utils.clip_grad_norm_(module.parameters(), max_norm=grad_clip)):
            optimizer.step()
            applied = True
    optimizer.zero_grad(set_to_none=True)
    return applied


def train_step(
    nets: Networks,
    clean: torch.Tensor,
    noisy: torch.Tensor,
    *,
    use_gan: bool,
    loss_weights: list[float],
    grad_clip: float,
    pesq_pool: PesqPool,
    context: DistributedContext,
    objective: Objective = REFERENCE_OBJECTIVE,
    delayed: DelayedDiscriminator | None = None,
) -> StepResult:
    """One training step (module docstring); with ``delayed``, the one-step-delayed discriminator.

    With ``delayed``, the discriminator values and ``pesq`` of the result are those of the
    batch the discriminator learnt from (the previous step's); NaN, with ``pesq_valid`` 0, on a
    step where it did not update (a run's first).
    """
    forward = _forward(nets.run_generator, clean, noisy, pesq_pool, objective)
    gen = _generator_loss(forward, nets.run_discriminator if use_gan else None, loss_weights, objective)
    total = gen.total
    # The GAN term also fills D's gradients; _update zeroes them before D's own backward.
    generator_applied = _update(total, nets.generator, nets.optimizer_g, grad_clip, context)
    values = {"loss": float(total.detach()), **{k: v for k, v in gen.as_floats().items() if k != "loss"}}
    if delayed is None:
        scored: tuple[DiscriminatorLoss, PesqBatch, float] | None = _discriminator_loss(
            nets.run_discriminator, forward, objective)
    else:
        previous = delayed.exchange(forward, objective)
        scored = None if previous is None else _delayed_discriminator_loss(
            nets.run_discriminator, previous, forward.clean_mag.device, objective)
    if scored is None:  # delayed, nothing to learn from: no update, and nothing skipped
        values.update(_NO_DISCRIMINATOR_UPDATE)
        return StepResult(values, not generator_applied, False, 0.0)
    disc, enhanced, pesq_wait = scored
    discriminator_applied = _update(disc.total, nets.discriminator, nets.optimizer_d, grad_clip, context)

    values.update(disc.as_floats())
    values["pesq"] = _nanmean(enhanced.scores, enhanced.valid)
    values["pesq_valid"] = float(enhanced.valid.sum())
    return StepResult(values, not generator_applied, not discriminator_applied, pesq_wait)


VALIDATION_LOOKAHEAD = 8
"""Validation batches enhanced ahead of their losses: enough to keep a few PESQ workers busy
with whole utterances, small enough to hold on any device (8 utterances' spectra)."""


@torch.no_grad()
def validate(
    nets: Networks,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    use_gan: bool,
    loss_weights: list[float],
    pesq_pool: PesqPool,
    device: torch.device,
    objective: Objective = REFERENCE_OBJECTIVE,
) -> dict[str, float]:
    """Sums over this process's validation batches: losses weighted by batch size, PESQ and
    SI-SDR sums with their counts (an utterance where one cannot be computed is not counted).

    Returned as sums (with counts) so that ranks can add theirs before dividing. ``recon`` is
    the generator loss without the GAN term, comparable across the GAN start. The generator
    runs up to ``VALIDATION_LOOKAHEAD`` batches ahead of the losses, so the PESQ pool scores
    several batches (whole utterances come one per batch) while the next ones are enhanced;
    the sums are added in batch order either way. ``batches`` is read once, in order: pass a
    generator, so that only the batches in flight are decoded (whole utterances of a user's
    corpus can be minutes long each).
    """
    nets.generator.eval()
    nets.discriminator.eval()
    sums = {"items": 0.0, "loss": 0.0, "recon": 0.0, "disc_loss": 0.0, "pesq_sum": 0.0, "pesq_count": 0.0,
            "si_sdr_sum": 0.0, "si_sdr_count": 0.0}

    def add(forward: _Forward) -> None:
        gen = _generator_loss(forward, nets.run_discriminator if use_gan else None, loss_weights, objective)
        disc, enhanced, _ = _discriminator_loss(nets.run_discriminator, forward, objective)
        size = forward.clean.shape[0]
        sums["items"] += size
        sums["loss"] += float(gen.total) * size
        sums["recon"] += float(gen.reconstruction if gen.reconstruction is not None else gen.total) * size
        sums["disc_loss"] += float(disc.total) * size
        sums["pesq_sum"] += float(enhanced.scores[enhanced.valid].sum())
        sums["pesq_count"] += float(enhanced.valid.sum())
        for reference, estimate in zip(forward.clean_samples, forward.est_samples, strict=True):
            try:  # microseconds per utterance, beside PESQ's tenths of a second
                sums["si_sdr_sum"] += si_sdr(reference, estimate)
                sums["si_sdr_count"] += 1.0
            except ValueError:  # a silent crop or estimate: no ratio to report
                pass

    ahead: list[_Forward] = []
    try:
        for clean, noisy in batches:
            ahead.append(_forward(nets.run_generator, clean.to(device), noisy.to(device), pesq_pool, objective))
            if len(ahead) == VALIDATION_LOOKAHEAD:
                add(ahead.pop(0))
        for forward in ahead:
            add(forward)
    finally:
        nets.generator.train()
        nets.discriminator.train()
    return sums


def finish_validation(sums: dict[str, float]) -> dict[str, float]:
    items = max(sums["items"], 1.0)
    pesq = sums["pesq_sum"] / sums["pesq_count"] if sums["pesq_count"] else math.nan
    values = {"val_loss": sums["loss"] / items, "val_disc_loss": sums["disc_loss"] / items, "val_pesq": pesq}
    if "recon" in sums:
        values["val_recon"] = sums["recon"] / items
    if "si_sdr_count" in sums:
        values["val_si_sdr"] = sums["si_sdr_sum"] / sums["si_sdr_count"] if sums["si_sdr_count"] else math.nan
    return values

