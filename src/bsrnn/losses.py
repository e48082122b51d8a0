"""The generator and discriminator losses: the reference recipe's, and the ingredients that
the ``improved`` recipe adds (all off by default, so the reference is unchanged bit for bit).

Reference generator loss (reference ``train_step``)::

    w0 * L1(est_spec, clean_spec)                # complex: mean |est - clean| over all bins
  + w1 * L1(est_mag, clean_mag)                  # magnitudes compressed by (|.| + 1e-10) ** 0.3
  + w2 * MSE(D(clean_mag, est_mag), 1)           # only once the GAN term is switched on

The reference switches the GAN term on for ``epoch >= epochs / 2`` (epochs 60..119 of 120), in
training and in validation alike, so the validation loss jumps when it starts; ``use_gan`` is
the trainer's decision, expressed here by passing a discriminator or ``None``.

Ingredients (``Objective``; each one a config field, see RECIPES.md for what they bought):

- ``complex_loss="compressed_mse"``: the complex term on power-law compressed spectra
  ``|X| ** c * exp(j angle X)``, as mean squared modulus, instead of L1 on linear spectra.
  The linear L1 is dominated by the loudest bins; in the compressed domain quiet speech and
  residual noise count, which is what PESQ hears.
- ``magnitude_loss="mse"``: squared instead of absolute error on compressed magnitudes.
- ``linear_weight``: the reference's L1 on linear complex spectra, added beside a compressed
  complex term. The compressed terms weight every bin alike; the linear L1 weights the loud,
  speech-dominated bins. At the 1,500-step budget it added no STOI or SSNR to ``improved``
  (RECIPES.md), so both recipes leave it at 0.
- ``phase_weight``: the anti-wrapping phase losses of MP-SENet (Lu et al., 2023): instantaneous
  phase, group delay (difference along frequency) and instantaneous angular frequency
  (difference along time), each the mean of ``|x - 2 pi round(x / 2 pi)|``, so that a phase
  error of 2 pi k costs nothing. ``phase_weighting="magnitude"`` makes each a mean weighted by
  the clean magnitude: unweighted, the many quiet bins, whose clean phase is noise, dominate,
  and this network's mask gives them the largest phase gradients (1 / |X|).
- ``time_weight``: L1 between the enhanced and the clean waveform.
- ``consistency_weight``: the STFT of the enhanced waveform against the enhanced spectrum
  (compressed, mean squared modulus). A masked spectrum need not be the STFT of any signal;
  this term pulls it towards one, so what is scored (the waveform) is what was optimised.
- ``pcs_target``: every reconstruction term aims at the perceptually contrast-stretched clean
  spectrum (``bsrnn.pcs.stretched_target``, at the clean's energy) instead of the clean one, as
  Chao et al. (Interspeech 2022) train. The discriminator still scores against the real clean
  signal (its input pair and PESQ reference), so the GAN term still means "sounds like clean
  speech to PESQ". The caller stretches (``bsrnn.training.steps``); this module only learns the
  targets it is given, and ``generator_loss(discriminator_clean_mag=...)`` keeps the GAN term's
  condition on the real clean.
- ``metric_target="normalized"``: the discriminator learns ``(PESQ - 1) / 3.5`` (MP-SENet's
  mapping of the 1..4.5 range onto 0..1) instead of ``(PESQ + 0.5) / 5``.
- ``disc_noisy_term``: the discriminator's third term, as the reference has it
  (``"enhanced"``), in the MetricGAN+ form (``"clean"``), or left out (``"off"``, as MP-SENet;
  this also halves the PESQ computations per step).

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

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from bsrnn.audio import COMPRESSION_EXPONENT, MAGNITUDE_FLOOR, stft

DEFAULT_LOSS_WEIGHTS: tuple[float, float, float] = (0.5, 0.5, 1.0)
"""Weights of the complex (RI) L1, the compressed-magnitude L1 and the metric GAN term."""

COMPLEX_LOSSES = ("linear_l1", "compressed_mse")
MAGNITUDE_LOSSES = ("l1", "mse")
PHASE_WEIGHTINGS = ("uniform", "magnitude")
METRIC_TARGETS = ("reference", "normalized")
NOISY_PAIRS = ("enhanced", "clean", "off")

COMPLEX_POWER_FLOOR = 1e-9
"""Added to |X|^2 before the power law of a compressed complex spectrum: it bounds the gradient
at silent bins (about 1.4e3 for c = 0.3) where ``|X| ** (c - 1)`` has none."""

TWO_PI = 2 * math.pi


@dataclass(frozen=True)
class Objective:
    """The training objective's ingredients beyond the three reference weights.

    The defaults are the reference recipe's: with them every loss below computes exactly what
    the reference computes, in the same order, so a reference run stays bit-identical.
    """

    complex_loss: Literal["linear_l1", "compressed_mse"] = "linear_l1"
    magnitude_loss: Literal["l1", "mse"] = "l1"
    linear_weight: float = 0.0
    phase_weight: float = 0.0
    phase_weighting: Literal["uniform", "magnitude"] = "uniform"
    time_weight: float = 0.0
    consistency_weight: float = 0.0
    compress_factor: float = COMPRESSION_EXPONENT
    pcs_target: bool = False
    metric_target: Literal["reference", "normalized"] = "reference"
    disc_noisy_term: Literal["enhanced", "clean", "off"] = "enhanced"

    def __post_init__(self) -> None:
        for name, value, allowed in (("complex_loss", self.complex_loss, COMPLEX_LOSSES),
                                     ("magnitude_loss", self.magnitude_loss, MAGNITUDE_LOSSES),
                                     ("phase_weighting", self.phase_weighting, PHASE_WEIGHTINGS),
                                     ("metric_target", self.metric_target, METRIC_TARGETS),
                                     ("disc_noisy_term", self.disc_noisy_term, NOISY_PAIRS)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")

    @property
    def needs_waveform(self) -> bool:
        """Whether the generator loss needs the enhanced waveform with its gradient."""
        return self.time_weight > 0 or self.consistency_weight > 0


REFERENCE_OBJECTIVE = Objective()


@dataclass(frozen=True)
class GeneratorLoss:
    """The weighted total to back-propagate and its unweighted terms, for logging."""

    total: torch.Tensor
    ri: torch.Tensor
    magnitude: torch.Tensor
    gan: torch.Tensor | None
    """``MSE(D(clean, est), 1)``; None while the GAN term is off."""
    linear: torch.Tensor | None = None
    """L1 on linear complex spectra beside a compressed complex term; None when not weighted."""
    phase: torch.Tensor | None = None
    """Instantaneous phase + group delay + instantaneous frequency; None when not weighted."""
    time: torch.Tensor | None = None
    consistency: torch.Tensor | None = None

    reconstruction: torch.Tensor | None = None
    """The total without the GAN term: one meaning for the whole run, before and after the GAN
    term starts (None only where a caller built a loss by hand)."""

    def as_floats(self) -> dict[str, float]:
        """Plain floats for a metrics line (synchronises with the device)."""
        values = {"loss": self.total.item(), "loss_ri": self.ri.item(), "loss_mag": self.magnitude.item()}
        for key, term in (("loss_linear", self.linear), ("loss_phase", self.phase), ("loss_time", self.time),
                          ("loss_consistency", self.consistency), ("loss_gan", self.gan)):
            if term is not None:
                values[key] = term.item()
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
    """The noisy term over the items whose noisy PESQ is valid (zero when it is off)."""
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


def pesq_to_target(pesq: torch.Tensor, mapping: Literal["reference", "normalized"] = "reference") -> torch.Tensor:
    """Map wide-band PESQ to the discriminator's 0..1 scale.

    ``"reference"``: ``(p + 0.5) / 5``, the whole nominal range -0.5..4.5. ``"normalized"``:
    ``(p - 1) / 3.5``, MP-SENet's mapping of the range P.862.2 actually produces (1.0..4.64)
    onto about 0..1, so the discriminator's outputs spread over what it is asked to tell apart.
    """
    if mapping == "reference":
        return (pesq + 0.5) / 5
    if mapping == "normalized":
        return (pesq - 1) / 3.5
    raise ValueError(f"metric target must be one of {', '.join(METRIC_TARGETS)}, got {mapping!r}")


def _check_weights(weights: Sequence[float]) -> tuple[float, float, float]:
    if len(weights) != 3:
        raise ValueError(f"loss weights must be 3 numbers [ri, magnitude, gan], got {list(weights)}")
    return float(weights[0]), float(weights[1]), float(weights[2])


# ----------------------------------------------------------------------------- ingredients
def compressed_magnitude(spec: torch.Tensor, exponent: float = COMPRESSION_EXPONENT) -> torch.Tensor:
    """``(|spec| + 1e-10) ** exponent`` shaped [B, 1, 257, T], as the discriminator takes it.

    This is the representation the reference feeds its metric discriminator and its magnitude
    loss: the exponent (0.3 in the reference) lifts quiet bins so that they are not ignored next
    to loud ones. The channel axis added here is the discriminator's input channel.
    """
    if spec.dim() != 3:
        raise ValueError(f"compressed_magnitude expects a spectrogram [B, 257, T], got {tuple(spec.shape)}")
    return (spec.abs().unsqueeze(1) + MAGNITUDE_FLOOR) ** exponent


def compressed_spectrum(spec: torch.Tensor, exponent: float = COMPRESSION_EXPONENT) -> torch.Tensor:
    """The complex spectrum with its magnitude compressed, ``|X| ** c * exp(j angle X)``.

    Written as ``X * (|X|^2 + floor) ** ((c - 1) / 2)``: no angle is taken, so silent bins
    (where the angle has no gradient) stay finite.
    """
    power = spec.real.square() + spec.imag.square()
    return spec * (power + COMPLEX_POWER_FLOOR) ** ((exponent - 1) / 2)


def anti_wrapped(difference: torch.Tensor) -> torch.Tensor:
    """``|x - 2 pi round(x / 2 pi)|``: the distance of a phase difference to the nearest
    multiple of 2 pi, in [0, pi]. Its gradient is that of ``|x|`` (``round`` has none)."""
    return (difference - TWO_PI * torch.round(difference / TWO_PI)).abs()


def phase_of(spec: torch.Tensor) -> torch.Tensor:
    """The wrapped phase of a complex spectrum, with a zero gradient at exactly silent bins.

    ``atan2``'s gradient is ``0 / 0`` at the origin; such bins get the angle 0 instead.
    """
    real, imag = spec.real, spec.imag
    silent = (real == 0) & (imag == 0)
    return torch.atan2(imag, torch.where(silent, torch.ones_like(real), real))


def phase_losses(est_phase: torch.Tensor, clean_phase: torch.Tensor, weight: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The anti-wrapping instantaneous phase, group delay and instantaneous angular frequency
    losses for phases [..., F, T] (frequency second to last, time last).

    Unweighted (``weight`` None), each is a mean over bins (MP-SENet). With ``weight`` (same
    shape, >= 0: the clean magnitude, ``Objective.phase_weighting``), each is a weighted mean,
    a difference between two neighbouring bins weighted by the smaller of their weights: a
    phase difference means something only where both bins carry signal. Where every weight is
    0 (a silent crop) the term is 0.
    """
    instantaneous = anti_wrapped(est_phase - clean_phase)
    group_delay = anti_wrapped(torch.diff(est_phase, dim=-2) - torch.diff(clean_phase, dim=-2))
    angular_frequency = anti_wrapped(torch.diff(est_phase, dim=-1) - torch.diff(clean_phase, dim=-1))
    if weight is None:
        return instantaneous.mean(), group_delay.mean(), angular_frequency.mean()
    weight = weight.detach()
    pair_weights = (weight, torch.minimum(weight[..., 1:, :], weight[..., :-1, :]),
                    torch.minimum(weight[..., :, 1:], weight[..., :, :-1]))

    def weighted_mean(errors: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return (errors * weights).sum() / weights.sum().clamp_min(torch.finfo(weights.dtype).tiny)

    return tuple(weighted_mean(errors, weights)  # type: ignore[return-value]
                 for errors, weights in zip((instantaneous, group_delay, angular_frequency), pair_weights, strict=True))


def linear_l1(est: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The reference's complex loss: mean modulus of the difference of linear spectra
    (``nn.L1Loss`` on complex tensors computes the same)."""
    return (est - target).abs().mean()


def squared_error(est: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared modulus of a complex difference (twice MSE over the stacked real parts)."""
    difference = est - target
    return (difference.real.square() + difference.imag.square()).mean()


def consistency_loss(est_spec: torch.Tensor, est_audio: torch.Tensor, exponent: float = COMPRESSION_EXPONENT) -> torch.Tensor:
    """The STFT of the enhanced waveform against the enhanced spectrum, compressed.

    ``est_audio`` must be ``istft(est_spec)`` with its gradient: both sides learn, as in MP-SENet.
    """
    resynthesised = stft(est_audio)
    return squared_error(compressed_spectrum(resynthesised, exponent), compressed_spectrum(est_spec, exponent))


# ----------------------------------------------------------------------------- the losses
def generator_loss(
    est_spec: torch.Tensor,
    clean_spec: torch.Tensor,
    discriminator: Callable[..., torch.Tensor] | None = None,
    weights: Sequence[float] = DEFAULT_LOSS_WEIGHTS,
    *,
    est_mag: torch.Tensor | None = None,
    clean_mag: torch.Tensor | None = None,
    objective: Objective = REFERENCE_OBJECTIVE,
    est_audio: torch.Tensor | None = None,
    clean_audio: torch.Tensor | None = None,
    discriminator_clean_mag: torch.Tensor | None = None,
) -> GeneratorLoss:
    """The generator loss for complex spectra [B, 257, T].

    Pass ``discriminator`` to include the metric GAN term, ``None`` to leave it out (the
    reference's first half of training). Compressed magnitudes [B, 1, 257, T] may be passed
    in when the caller already has them (they are needed again for the discriminator step);
    they must use ``objective.compress_factor``. ``est_audio`` (``istft(est_spec)`` with its
    gradient) and ``clean_audio`` [B, samples] are needed only for the time and consistency
    terms. A term whose weight is 0 is not computed at all. ``clean_*`` are the targets;
    ``discriminator_clean_mag`` is the clean input of the GAN term's ``D(clean, est)`` when it
    differs from the target's (stretched targets, ``Objective.pcs_target``), else ``clean_mag``.
    """
    w_ri, w_mag, w_gan = _check_weights(weights)
    exponent = objective.compress_factor
    if est_mag is None:
        est_mag = compressed_magnitude(est_spec, exponent)
    if clean_mag is None:
        clean_mag = compressed_magnitude(clean_spec, exponent)
    if objective.complex_loss == "linear_l1":
        loss_ri = linear_l1(est_spec, clean_spec)
    else:
        loss_ri = squared_error(compressed_spectrum(est_spec, exponent), compressed_spectrum(clean_spec, exponent))
    loss_mag = F.l1_loss(est_mag, clean_mag) if objective.magnitude_loss == "l1" else F.mse_loss(est_mag, clean_mag)
    total = w_ri * loss_ri + w_mag * loss_mag
    terms: dict[str, torch.Tensor] = {}
    if objective.linear_weight > 0:
        terms["linear"] = linear_l1(est_spec, clean_spec)
        total = total + objective.linear_weight * terms["linear"]
    if objective.phase_weight > 0:
        weight = clean_spec.abs() if objective.phase_weighting == "magnitude" else None
        terms["phase"] = sum(phase_losses(phase_of(est_spec), phase_of(clean_spec), weight))  # type: ignore[assignment]
        total = total + objective.phase_weight * terms["phase"]
    if objective.needs_waveform and est_audio is None:
        raise ValueError("the time and consistency losses need est_audio = istft(est_spec) with its gradient")
    if objective.time_weight > 0:
        if clean_audio is None:
            raise ValueError("the time loss needs clean_audio")
        terms["time"] = F.l1_loss(est_audio, clean_audio)
        total = total + objective.time_weight * terms["time"]
    if objective.consistency_weight > 0:
        terms["consistency"] = consistency_loss(est_spec, est_audio, exponent)
        total = total + objective.consistency_weight * terms["consistency"]
    if discriminator is None:
        return GeneratorLoss(total=total, ri=loss_ri, magnitude=loss_mag, gan=None, reconstruction=total, **terms)
    condition = clean_mag if discriminator_clean_mag is None else discriminator_clean_mag
    prediction = discriminator(condition, est_mag).flatten()
    loss_gan = F.mse_loss(prediction, torch.ones_like(prediction))
    return GeneratorLoss(total=total + w_gan * loss_gan, ri=loss_ri, magnitude=loss_mag, gan=loss_gan,
                         reconstruction=total, **terms)


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
    noisy_pesq: torch.Tensor | Sequence[float] | None,
    enhanced_valid: torch.Tensor | Sequence[bool] | None = None,
    noisy_valid: torch.Tensor | Sequence[bool] | None = None,
    *,
    noisy_pair: Literal["enhanced", "clean", "off"] = "enhanced",
    target: Literal["reference", "normalized"] = "reference",
) -> DiscriminatorLoss:
    """The metric discriminator loss on compressed magnitudes [B, 1, 257, T].

    ``enhanced_pesq`` is raw wide-band PESQ of the enhanced crop against the clean one;
    ``noisy_pesq`` is raw PESQ of the noisy crop against the enhanced one (``noisy_pair=
    "enhanced"``, the reference) or against the clean one (``"clean"``, MetricGAN+); with
    ``"off"`` there is no third term and ``noisy_pesq`` is not read. Scores are mapped with
    ``pesq_to_target(.., target)`` here. ``*_valid`` flag the items whose PESQ succeeded
    (None: all). ``est_mag`` is detached here, so the generator gets no gradient.
    """
    if noisy_pair not in NOISY_PAIRS:
        raise ValueError(f"noisy_pair must be one of {', '.join(NOISY_PAIRS)}, got {noisy_pair!r}")
    batch = clean_mag.shape[0]
    est_mag = est_mag.detach()
    # Same calls, same order as the reference: spectral norm and dropout advance per call.
    predict_enhanced = discriminator(clean_mag, est_mag).flatten()
    predict_clean = discriminator(clean_mag, clean_mag).flatten()

    def target_for(pesq: torch.Tensor | Sequence[float], prediction: torch.Tensor) -> torch.Tensor:
        scores = torch.as_tensor(pesq, dtype=prediction.dtype).flatten().to(prediction.device)
        if scores.numel() != batch:
            raise ValueError(f"got {scores.numel()} PESQ scores for a batch of {batch} items")
        return pesq_to_target(scores, target)

    enhanced_mask = _as_mask(enhanced_valid, batch)
    loss_clean = F.mse_loss(predict_clean, torch.ones_like(predict_clean))
    loss_enhanced = masked_mse(predict_enhanced, target_for(enhanced_pesq, predict_enhanced), enhanced_mask)
    if noisy_pair == "off":
        return DiscriminatorLoss(total=loss_clean + loss_enhanced, clean=loss_clean, enhanced=loss_enhanced,
                                 noisy=torch.zeros((), device=loss_clean.device),
                                 enhanced_valid=int(enhanced_mask.sum()), noisy_valid=0)
    if noisy_pesq is None:
        raise ValueError(f"noisy_pair={noisy_pair!r} needs the noisy PESQ scores")
    noisy_reference = est_mag if noisy_pair == "enhanced" else clean_mag
    predict_noisy = discriminator(noisy_reference, noisy_mag).flatten()
    noisy_mask = _as_mask(noisy_valid, batch)
    loss_noisy = masked_mse(predict_noisy, target_for(noisy_pesq, predict_noisy), noisy_mask)
    return DiscriminatorLoss(
        total=loss_clean + loss_enhanced + loss_noisy,
        clean=loss_clean,
        enhanced=loss_enhanced,
        noisy=loss_noisy,
        enhanced_valid=int(enhanced_mask.sum()),
        noisy_valid=int(noisy_mask.sum()),
    )
