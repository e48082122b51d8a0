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
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

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
from bsrnn.training.distributed import DistributedContext, average_gradients


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
    """One generator forward on a batch, with what the losses and PESQ need."""

    clean: torch.Tensor
    clean_spec: torch.Tensor
    est_spec: torch.Tensor
    clean_mag: torch.Tensor
    est_mag: torch.Tensor
    noisy_mag: torch.Tensor
    est_audio: torch.Tensor | None  # istft(est_spec) with its gradient, when a loss needs it
    pending_enhanced: PendingPesq  # PESQ(clean -> est)
    pending_noisy: PendingPesq | None  # the third discriminator term's PESQ; None when it is off


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
    return _Forward(
        clean, clean_spec, est_spec, compressed_magnitude(clean_spec, exponent), compressed_magnitude(est_spec, exponent),
        compressed_magnitude(noisy_spec, exponent), est_waveform, pending_enhanced, pending_noisy,
    )


def _generator_loss(forward: _Forward, discriminator: Callable[..., torch.Tensor] | None, loss_weights: list[float],
                    objective: Objective) -> GeneratorLoss:
    return generator_loss(
        forward.est_spec, forward.clean_spec, discriminator, loss_weights,
        est_mag=forward.est_mag, clean_mag=forward.clean_mag, objective=objective,
        est_audio=forward.est_audio, clean_audio=forward.clean,
    )


def _discriminator_loss(discriminator: Callable[..., torch.Tensor], forward: _Forward,
                        objective: Objective = REFERENCE_OBJECTIVE) -> tuple[DiscriminatorLoss, PesqBatch, float]:
    """Collect the PESQ scores (blocking only if they are not ready) and compute D's loss."""
    enhanced = forward.pending_enhanced.result()
    noisy = forward.pending_noisy.result() if forward.pending_noisy is not None else None
    loss = discriminator_loss(
        discriminator, forward.clean_mag, forward.est_mag.detach(), forward.noisy_mag,
        torch.from_numpy(enhanced.scores), torch.from_numpy(noisy.scores) if noisy is not None else None,
        torch.from_numpy(enhanced.valid), torch.from_numpy(noisy.valid) if noisy is not None else None,
        noisy_pair=objective.disc_noisy_term, target=objective.metric_target,
    )
    wait = forward.pending_enhanced.wait_s + (forward.pending_noisy.wait_s if forward.pending_noisy is not None else 0.0)
    return loss, enhanced, wait


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
) -> StepResult:
    forward = _forward(nets.run_generator, clean, noisy, pesq_pool, objective)
    gen = _generator_loss(forward, nets.run_discriminator if use_gan else None, loss_weights, objective)
    total = gen.total
    # The GAN term also fills D's gradients; _update zeroes them before D's own backward.
    generator_applied = _update(total, nets.generator, nets.optimizer_g, grad_clip, context)
    disc, enhanced, pesq_wait = _discriminator_loss(nets.run_discriminator, forward, objective)
    discriminator_applied = _update(disc.total, nets.discriminator, nets.optimizer_d, grad_clip, context)

    values = {"loss": float(total.detach()), **{k: v for k, v in gen.as_floats().items() if k != "loss"}}
    values.update(disc.as_floats())
    values["pesq"] = _nanmean(enhanced.scores, enhanced.valid)
    values["pesq_valid"] = float(enhanced.valid.sum())
    return StepResult(values, not generator_applied, not discriminator_applied, pesq_wait)


@torch.no_grad()
def validate(
    nets: Networks,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    *,
    use_gan: bool,
    loss_weights: list[float],
    pesq_pool: PesqPool,
    device: torch.device,
    objective: Objective = REFERENCE_OBJECTIVE,
) -> dict[str, float]:
    """Sums over this process's validation batches: losses weighted by batch size, PESQ sums.

    Returned as sums (with counts) so that ranks can add theirs before dividing. ``recon`` is
    the generator loss without the GAN term, comparable across the GAN start.
    """
    nets.generator.eval()
    nets.discriminator.eval()
    sums = {"items": 0.0, "loss": 0.0, "recon": 0.0, "disc_loss": 0.0, "pesq_sum": 0.0, "pesq_count": 0.0}
    try:
        for clean, noisy in batches:
            forward = _forward(nets.run_generator, clean.to(device), noisy.to(device), pesq_pool, objective)
            gen = _generator_loss(forward, nets.run_discriminator if use_gan else None, loss_weights, objective)
            disc, enhanced, _ = _discriminator_loss(nets.run_discriminator, forward, objective)
            size = clean.shape[0]
            sums["items"] += size
            sums["loss"] += float(gen.total) * size
            sums["recon"] += float(gen.reconstruction if gen.reconstruction is not None else gen.total) * size
            sums["disc_loss"] += float(disc.total) * size
            sums["pesq_sum"] += float(enhanced.scores[enhanced.valid].sum())
            sums["pesq_count"] += float(enhanced.valid.sum())
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
    return values

