"""One training step and one validation pass of the reference recipe.

A step (reference ``train_step``, with PESQ taken off the critical path):

1. STFT of clean and noisy crops; the generator's estimate; compressed magnitudes.
2. The estimate's audio goes to the PESQ worker pool at once (PESQ(clean -> est) for the
   enhanced term, PESQ(est -> noisy) for the reference's third term).
3. Generator loss (complex L1 + magnitude L1 [+ GAN term]), backward, gradient average over
   ranks, clipping at ``grad_clip``, optimizer step -- while PESQ runs.
4. PESQ collected; the discriminator's three-term loss with per-item masks (the reference
   drops the whole step when one item fails); backward, average, clipping (as the reference
   clips both networks), its step. Run every step from epoch 0, as the reference does.

A non-finite loss or gradient norm skips that network's update and is reported to the caller,
which counts consecutive skips (``max_nonfinite_steps``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from bsrnn.audio import compress_magnitude, istft, stft
from bsrnn.losses import discriminator_loss, generator_loss
from bsrnn.metrics.pesq_pool import PesqPool
from bsrnn.training.distributed import DistributedContext, average_gradients


@dataclass
class Networks:
    generator: nn.Module
    discriminator: nn.Module
    optimizer_g: torch.optim.Optimizer
    optimizer_d: torch.optim.Optimizer


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
    inject_nonfinite: bool = False,
) -> StepResult:
    generator, discriminator = nets.generator, nets.discriminator
    clean_spec, noisy_spec = stft(clean), stft(noisy)
    est_spec = generator(noisy_spec)
    est_mag = compress_magnitude(est_spec)
    clean_mag = compress_magnitude(clean_spec)
    noisy_mag = compress_magnitude(noisy_spec)

    est_audio = istft(est_spec.detach(), length=clean.shape[-1]).cpu().numpy()
    clean_audio, noisy_audio = clean.cpu().numpy(), noisy.cpu().numpy()
    pending_enhanced = pesq_pool.submit(list(clean_audio), list(est_audio))
    pending_noisy = pesq_pool.submit(list(est_audio), list(noisy_audio))

    gen = generator_loss(
        est_spec, clean_spec, discriminator if use_gan else None, loss_weights,
        est_mag=est_mag, clean_mag=clean_mag,
    )
    total = gen.total * math.nan if inject_nonfinite else gen.total
    nets.optimizer_g.zero_grad(set_to_none=True)
    generator_skipped = not _finite(total)
    if not generator_skipped:
        total.backward()
        average_gradients(generator.parameters(), context)
        grad_norm = torch.nn.utils.clip_grad_norm_(generator.parameters(), max_norm=grad_clip)
        generator_skipped = not _finite(grad_norm)
        if not generator_skipped:
            nets.optimizer_g.step()
    nets.optimizer_g.zero_grad(set_to_none=True)

    enhanced, noisy_scores = pending_enhanced.result(), pending_noisy.result()
    pesq_wait = pending_enhanced.wait_s + pending_noisy.wait_s
    nets.optimizer_d.zero_grad(set_to_none=True)
    disc = discriminator_loss(
        discriminator, clean_mag, est_mag.detach(), noisy_mag,
        torch.from_numpy(enhanced.scores), torch.from_numpy(noisy_scores.scores),
        torch.from_numpy(enhanced.valid), torch.from_numpy(noisy_scores.valid),
    )
    discriminator_skipped = not _finite(disc.total)
    if not discriminator_skipped:
        disc.total.backward()
        average_gradients(discriminator.parameters(), context)
        disc_norm = torch.nn.utils.clip_grad_norm_(discriminator.parameters(), max_norm=grad_clip)
        discriminator_skipped = not _finite(disc_norm)
        if not discriminator_skipped:
            nets.optimizer_d.step()
    nets.optimizer_d.zero_grad(set_to_none=True)

    values = {"loss": float(total.detach()), **{k: v for k, v in gen.as_floats().items() if k != "loss"}}
    values.update(disc.as_floats())
    values["pesq"] = _nanmean(enhanced.scores, enhanced.valid)
    values["pesq_valid"] = float(enhanced.valid.sum())
    return StepResult(values, generator_skipped, discriminator_skipped, pesq_wait)


@torch.no_grad()
def validate(
    nets: Networks,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    *,
    use_gan: bool,
    loss_weights: list[float],
    pesq_pool: PesqPool,
    device: torch.device,
) -> dict[str, float]:
    """Sums over this process's validation batches: losses weighted by batch size, PESQ sums.

    Returned as sums (with counts) so that ranks can add theirs before dividing.
    """
    generator, discriminator = nets.generator, nets.discriminator
    generator.eval()
    discriminator.eval()
    sums = {"items": 0.0, "loss": 0.0, "disc_loss": 0.0, "pesq_sum": 0.0, "pesq_count": 0.0}
    try:
        for clean, noisy in batches:
            clean, noisy = clean.to(device), noisy.to(device)
            clean_spec, noisy_spec = stft(clean), stft(noisy)
            est_spec = generator(noisy_spec)
            est_mag, clean_mag = compress_magnitude(est_spec), compress_magnitude(clean_spec)
            noisy_mag = compress_magnitude(noisy_spec)
            est_audio = istft(est_spec, length=clean.shape[-1]).cpu().numpy()
            clean_audio, noisy_audio = clean.cpu().numpy(), noisy.cpu().numpy()
            pending_enhanced = pesq_pool.submit(list(clean_audio), list(est_audio))
            pending_noisy = pesq_pool.submit(list(est_audio), list(noisy_audio))
            gen = generator_loss(est_spec, clean_spec, discriminator if use_gan else None, loss_weights,
                                 est_mag=est_mag, clean_mag=clean_mag)
            enhanced, noisy_scores = pending_enhanced.result(), pending_noisy.result()
            disc = discriminator_loss(
                discriminator, clean_mag, est_mag, noisy_mag,
                torch.from_numpy(enhanced.scores), torch.from_numpy(noisy_scores.scores),
                torch.from_numpy(enhanced.valid), torch.from_numpy(noisy_scores.valid),
            )
            size = clean.shape[0]
            sums["items"] += size
            sums["loss"] += float(gen.total) * size
            sums["disc_loss"] += float(disc.total) * size
            sums["pesq_sum"] += float(enhanced.scores[enhanced.valid].sum())
            sums["pesq_count"] += float(enhanced.valid.sum())
    finally:
        generator.train()
        discriminator.train()
    return sums


def finish_validation(sums: dict[str, float]) -> dict[str, float]:
    items = max(sums["items"], 1.0)
    pesq = sums["pesq_sum"] / sums["pesq_count"] if sums["pesq_count"] else math.nan
    return {"val_loss": sums["loss"] / items, "val_disc_loss": sums["disc_loss"] / items, "val_pesq": pesq}

