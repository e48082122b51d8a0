"""The reference recipe's MetricGAN losses, with per-item masks for PESQ failures.

Generator loss (reference ``train_step``)::

    w0 * L1(est_spec, clean_spec)                # complex: mean |est - clean| over all bins
  + w1 * L1(est_mag, clean_mag)                  # magnitudes compressed by (|.| + 1e-10) ** 0.3
  + w2 * MSE(D(clean_mag, est_mag), 1)           # only once the GAN term is switched on

The reference switches the GAN term on for ``epoch >= epochs / 2`` (epochs 60..119 of 120), in
training and in validation alike, so the validation loss jumps when it starts; ``use_gan`` is
the trainer's decision, expressed here by passing a discriminator or ``None``.

Discriminator loss (reference, MetricGAN+ style), three terms::

    MSE(D(clean, clean), 1)
  + MSE(D(clean, est.detach()), (PESQ(clean -> est) + 0.5) / 5)
  + MSE(D(est.detach(), noisy), (PESQ(est -> noisy) + 0.5) / 5)      # reference, see below

What the reference does, and where we differ:

- The third term in the reference is ``D(est_mag.detach(), noisy_mag)`` with target
  ``batch_pesq(est_audio, noisy_audio)``, i.e. PESQ with the *enhanced* signal as the reference
  and the noisy one as the degraded signal -- not MetricGAN+'s ``D(clean, noisy)`` with
  ``PESQ(clean -> noisy)``. ``noisy_pair="enhanced"`` (default) reproduces the reference;
  ``noisy_pair="clean"`` gives the MetricGAN+ form. The caller must score the matching pair.
- The reference computes and steps the discriminator loss on *every* training step from
  epoch 0, also while the generator's GAN term is still off; it is also computed (without a
  step) in every validation step.
- The reference calls D three times, in the order enhanced, clean, noisy. Its spectral norm
  runs one power iteration per call in train mode and its dropout draws random numbers, so
  this module keeps the same calls in the same order.
- PESQ fails on silent crops. The reference then drops the whole discriminator step (and
  logs a loss of 0). Here each item carries a ``valid`` flag: a PESQ term averages only over
  its valid items, and a term with no valid item contributes zero (still attached to the
  graph, so every parameter gets a gradient under DDP). When every item is valid the result
  equals the reference's ``F.mse_loss`` exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from bsrnn.audio import compress_magnitude

DEFAULT_LOSS_WEIGHTS: tuple[float, float, float] = (0.5, 0.5, 1.0)
"""Weights of the complex (RI) L1, the compressed-magnitude L1 and the metric GAN term."""


@dataclass(frozen=True)
class GeneratorLoss:
    """The weighted total to back-propagate and its unweighted terms, for logging."""

    total: torch.Tensor
    ri: torch.Tensor
    magnitude: torch.Tensor
    gan: torch.Tensor | None
    """``MSE(D(clean, est), 1)``; None while the GAN term is off."""

    def as_floats(self) -> dict[str, float]:
        """Plain floats for a metrics line (synchronises with the device)."""
        values = {"loss": self.total.item(), "loss_ri": self.ri.item(), "loss_mag": self.magnitude.item()}
        if self.gan is not None:
            values["loss_gan"] = self.gan.item()
        return values


@dataclass(frozen=True)
class DiscriminatorLoss:
    """The discriminator's total and its three terms, plus how many PESQ items counted."""

    total: torch.Tensor
    clean: torch.Tensor
    """``MSE(D(clean, clean), 1)`` over the whole batch."""
    enhanced: torch.Tensor
    """``MSE(D(clean, est), pesq target)`` over the items whose enhanced PESQ is valid."""
    noisy: torch.Tensor
    """The noisy term over the items whose noisy PESQ is valid."""
    enhanced_valid: int
    noisy_valid: int

    def as_floats(self) -> dict[str, float]:
        """Plain floats for a metrics line (synchronises with the device)."""
        return {
            "disc_loss": self.total.item(),
            "disc_clean": self.clean.item(),
            "disc_enhanced": self.enhanced.item(),
            "disc_noisy": self.noisy.item(),
        }


def pesq_to_target(pesq: torch.Tensor) -> torch.Tensor:
    """Map wide-band PESQ (about -0.5..4.5) to the discriminator's 0..1 scale: (p + 0.5) / 5."""
    return (pesq + 0.5) / 5


def _check_weights(weights: Sequence[float]) -> tuple[float, float, float]:
    if len(weights) != 3:
        raise ValueError(f"loss weights must be 3 numbers [ri, magnitude, gan], got {list(weights)}")
    return float(weights[0]), float(weights[1]), float(weights[2])


def generator_loss(
    est_spec: torch.Tensor,
    clean_spec: torch.Tensor,
    discriminator: Callable[..., torch.Tensor] | None = None,
    weights: Sequence[float] = DEFAULT_LOSS_WEIGHTS,
    *,
    est_mag: torch.Tensor | None = None,
    clean_mag: torch.Tensor | None = None,
) -> GeneratorLoss:
    """The reference generator loss for complex spectra [B, 257, T].

    Pass ``discriminator`` to include the metric GAN term, ``None`` to leave it out (the
    reference's first half of training). Compressed magnitudes [B, 1, 257, T] may be passed
    in when the caller already has them (they are needed again for the discriminator step).
    """
    w_ri, w_mag, w_gan = _check_weights(weights)
    if est_mag is None:
        est_mag = compress_magnitude(est_spec)
    if clean_mag is None:
        clean_mag = compress_magnitude(clean_spec)
    # nn.L1Loss on complex tensors is the mean complex modulus of the difference.
    loss_ri = (est_spec - clean_spec).abs().mean()
    loss_mag = F.l1_loss(est_mag, clean_mag)
    if discriminator is None:
        return GeneratorLoss(total=w_ri * loss_ri + w_mag * loss_mag, ri=loss_ri, magnitude=loss_mag, gan=None)
    prediction = discriminator(clean_mag, est_mag).flatten()
    loss_gan = F.mse_loss(prediction, torch.ones_like(prediction))
    total = w_ri * loss_ri + w_mag * loss_mag + w_gan * loss_gan
    return GeneratorLoss(total=total, ri=loss_ri, magnitude=loss_mag, gan=loss_gan)


def _as_mask(valid: torch.Tensor | Sequence[bool] | None, batch: int) -> torch.Tensor:
    if valid is None:
        return torch.ones(batch, dtype=torch.bool)
    mask = torch.as_tensor(valid, dtype=torch.bool).flatten().cpu()
    if mask.numel() != batch:
        raise ValueError(f"valid mask has {mask.numel()} entries, the batch has {batch} items")
    return mask


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the items where ``valid`` is True; zero if there are none.

    With every item valid this is ``F.mse_loss`` itself (bit-identical to the reference).
    Invalid targets may hold anything, NaN included: they are never read.
    """
    count = int(valid.sum())
    if count == prediction.numel():
        return F.mse_loss(prediction, target)
    if count == 0:
        return prediction.sum() * 0.0
    index = torch.nonzero(valid).flatten().to(prediction.device)
    return F.mse_loss(prediction.index_select(0, index), target.index_select(0, index))


def discriminator_loss(
    discriminator: Callable[..., torch.Tensor],
    clean_mag: torch.Tensor,
    est_mag: torch.Tensor,
    noisy_mag: torch.Tensor,
    enhanced_pesq: torch.Tensor | Sequence[float],
    noisy_pesq: torch.Tensor | Sequence[float],
    enhanced_valid: torch.Tensor | Sequence[bool] | None = None,
    noisy_valid: torch.Tensor | Sequence[bool] | None = None,
    *,
    noisy_pair: Literal["enhanced", "clean"] = "enhanced",
) -> DiscriminatorLoss:
    """The three-term metric discriminator loss on compressed magnitudes [B, 1, 257, T].

    ``enhanced_pesq`` is raw wide-band PESQ of the enhanced crop against the clean one;
    ``noisy_pesq`` is raw PESQ of the noisy crop against the enhanced one (``noisy_pair=
    "enhanced"``, the reference) or against the clean one (``"clean"``, MetricGAN+). Both are
    mapped with ``pesq_to_target`` here. ``*_valid`` flag the items whose PESQ succeeded
    (None: all). ``est_mag`` is detached here, so the generator gets no gradient.
    """
    if noisy_pair not in ("enhanced", "clean"):
        raise ValueError(f"noisy_pair must be 'enhanced' or 'clean', got {noisy_pair!r}")
    batch = clean_mag.shape[0]
    est_mag = est_mag.detach()
    # Same calls, same order as the reference: spectral norm and dropout advance per call.
    predict_enhanced = discriminator(clean_mag, est_mag).flatten()
    predict_clean = discriminator(clean_mag, clean_mag).flatten()
    noisy_reference = est_mag if noisy_pair == "enhanced" else clean_mag
    predict_noisy = discriminator(noisy_reference, noisy_mag).flatten()

    def target_for(pesq: torch.Tensor | Sequence[float], prediction: torch.Tensor) -> torch.Tensor:
        scores = torch.as_tensor(pesq, dtype=prediction.dtype).flatten().to(prediction.device)
        if scores.numel() != batch:
            raise ValueError(f"got {scores.numel()} PESQ scores for a batch of {batch} items")
        return pesq_to_target(scores)

    enhanced_mask = _as_mask(enhanced_valid, batch)
    noisy_mask = _as_mask(noisy_valid, batch)
    loss_clean = F.mse_loss(predict_clean, torch.ones_like(predict_clean))
    loss_enhanced = masked_mse(predict_enhanced, target_for(enhanced_pesq, predict_enhanced), enhanced_mask)
    loss_noisy = masked_mse(predict_noisy, target_for(noisy_pesq, predict_noisy), noisy_mask)
    return DiscriminatorLoss(
        total=loss_clean + loss_enhanced + loss_noisy,
        clean=loss_clean,
        enhanced=loss_enhanced,
        noisy=loss_noisy,
        enhanced_valid=int(enhanced_mask.sum()),
        noisy_valid=int(noisy_mask.sum()),
    )
