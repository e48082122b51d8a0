"""Perceptual contrast stretching (PCS): of an enhanced spectrum at inference, or of the
training targets.

Chao et al., "Perceptual Contrast Stretching on Target Feature for Speech Enhancement"
(Interspeech 2022). A module of its own because it is signal processing on a spectrum, with
its own published table, and knows nothing about checkpoints, chunking or losses: ``bsrnn
enhance`` and ``bsrnn evaluate`` apply it to each chunk's enhanced spectrum when ``--pcs`` is
given (``enhancement.enhance_waveform(pcs=True)``), and a run with ``pcs_target`` trains the
generator towards stretched clean spectra (``stretched_target``), so that its own output is
stretched (the ``improved`` recipe does). RECIPES.md has what each does to PESQ and STOI.
"""

from __future__ import annotations

import numpy as np
import torch

from bsrnn.audio import N_FFT, NUM_BINS, SAMPLE_RATE

SII_CRITICAL_BANDS: tuple[tuple[float, float, float], ...] = (
    (100, 200, 0.0103), (200, 300, 0.0261), (300, 400, 0.0419), (400, 510, 0.0577),
    (510, 630, 0.0577), (630, 770, 0.0577), (770, 920, 0.0577), (920, 1080, 0.0577),
    (1080, 1270, 0.0577), (1270, 1480, 0.0577), (1480, 1720, 0.0577), (1720, 2000, 0.0577),
    (2000, 2320, 0.0577), (2320, 2700, 0.0577), (2700, 3150, 0.0577), (3150, 3700, 0.0577),
    (3700, 4400, 0.0577), (4400, 5300, 0.0460), (5300, 6400, 0.0343), (6400, 7700, 0.0226),
    (7700, 9500, 0.0110),
)
"""The band-importance function of the Speech Intelligibility Index: ANSI S3.5-1997 (R2017),
*Methods for Calculation of the Speech Intelligibility Index*, Table 1 (critical-band
procedure, average speech): ``(lower Hz, upper Hz, importance)`` of its 21 bands, importances
summing to 1. Perceptual contrast stretching derives its exponents from it."""

PCS_MAX_EXPONENT = 1.4
"""The exponent of the most important bands (Chao et al., "Perceptual Contrast Stretching on
Target Feature for Speech Enhancement", Interspeech 2022: their preset maximum)."""


def pcs_exponents(n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE,
                  max_exponent: float = PCS_MAX_EXPONENT) -> torch.Tensor:
    """The exponent of each STFT bin ``[n_fft // 2 + 1]`` (float32) for perceptual contrast stretching.

    Chao et al. (Interspeech 2022) stretch the spectrum more where speech matters more to
    intelligibility, by the SII band-importance function (``SII_CRITICAL_BANDS``): a bin takes
    the importance of the critical band its centre frequency ``k * sample_rate / n_fft`` falls in
    (``lower <= f < upper``; 0 below 100 Hz and from 9500 Hz), scaled linearly so that the most
    important bands (400-4400 Hz) get ``max_exponent`` and unimportant ones 1 (no change):

        gamma(f) = 1 + (max_exponent - 1) * importance(f) / max(importance)

    For the 512-point STFT at 16 kHz: 1 from 0 to 94 Hz, rising through 1.07, 1.18, 1.29 over
    100-400 Hz, 1.4 over 400-4400 Hz, then 1.32, 1.24, 1.16 and 1.08 up to 8 kHz. The curve
    the paper's authors published for a 512-point STFT agrees within 0.005 on 234 of the 257
    bins; the other 23 lie at band edges, which theirs place 1-5 bins lower (one step of the
    staircase, at most 0.11), and at 8 kHz, which theirs leaves at 1.
    """
    if n_fft < 2 or sample_rate <= 0 or max_exponent < 1:
        raise ValueError(f"pcs_exponents: expected n_fft >= 2, sample_rate > 0 and max_exponent >= 1, "
                         f"found {n_fft}, {sample_rate} and {max_exponent}")
    frequencies = np.arange(n_fft // 2 + 1) * (sample_rate / n_fft)
    importance = np.zeros_like(frequencies)
    for lower, upper, band_importance in SII_CRITICAL_BANDS:
        importance[(frequencies >= lower) & (frequencies < upper)] = band_importance
    top = max(band_importance for _, _, band_importance in SII_CRITICAL_BANDS)
    return torch.from_numpy(1 + (max_exponent - 1) * importance / top).float()


def perceptual_contrast_stretch(spectrum: torch.Tensor, exponents: torch.Tensor | None = None) -> torch.Tensor:
    """Perceptual contrast stretching (PCS) of a complex spectrum ``[..., 257, frames]``; phase kept.

    Chao et al., "Perceptual Contrast Stretching on Target Feature for Speech Enhancement"
    (Interspeech 2022) multiply the log-magnitude ``log(1 + |X|)`` of each bin by an exponent
    ``gamma(f) >= 1`` that follows the SII band importance (``pcs_exponents``), i.e. raise
    ``1 + |X|`` to it:

        |Y| = (1 + |X|) ** gamma(f) - 1,    angle(Y) = angle(X)

    Above ~1 the magnitude grows faster than linearly, so strong speech components rise above
    the weak residual noise around them (more contrast) most in the bands that carry speech;
    near 0 it is a gain of ``gamma``. It acts on the magnitude of the unnormalised STFT of
    samples in [-1, 1] (``bsrnn.audio.stft``), as in the paper, so its effect depends on the
    level. Used after the generator at inference (``enhance_waveform(pcs=True)``) and, as the
    paper also does, on training targets (``stretched_target``). ``exponents`` (``[257]``)
    overrides the SII curve. A bin of magnitude 0 stays 0.
    """
    if not spectrum.is_complex() or spectrum.ndim < 2 or spectrum.shape[-2] != NUM_BINS:
        raise ValueError(f"perceptual_contrast_stretch: expected a complex spectrum [..., {NUM_BINS}, frames], "
                         f"found {spectrum.dtype} {tuple(spectrum.shape)}")
    magnitude = spectrum.abs()
    gamma = (pcs_exponents() if exponents is None else exponents).to(magnitude.device, magnitude.dtype)
    if gamma.shape != (NUM_BINS,):
        raise ValueError(f"perceptual_contrast_stretch: expected {NUM_BINS} exponents, found {tuple(gamma.shape)}")
    stretched = torch.expm1(gamma[:, None] * torch.log1p(magnitude))
    return spectrum * (stretched / magnitude.clamp_min(torch.finfo(magnitude.dtype).tiny))


def stretched_target(clean_spectrum: torch.Tensor) -> torch.Tensor:
    """A training target: the clean spectrum ``[batch, 257, frames]`` stretched by
    ``perceptual_contrast_stretch`` and scaled back to the clean's energy, item by item.

    Chao et al. train on stretched targets, so the network learns the contrast the post-filter
    would add, weighing it against the residual noise it can remove. Stretching alone makes a
    signal louder by a level-dependent factor (1.4x for quiet bins, more for loud ones), which
    level-sensitive scores (SSNR, CBAK) count as error; scaling each item back to the clean's
    energy (sum of squared magnitudes, so also its waveform's energy, by Parseval) keeps the
    contrast and drops the gain, as the inference post-filter restores its input's peak level.
    A silent item stays silent. No gradient flows here: a target is data.
    """
    if not clean_spectrum.is_complex() or clean_spectrum.ndim != 3:
        raise ValueError(f"stretched_target: expected a complex spectrum [batch, {NUM_BINS}, frames], "
                         f"found {clean_spectrum.dtype} {tuple(clean_spectrum.shape)}")
    with torch.no_grad():
        stretched = perceptual_contrast_stretch(clean_spectrum)
        energy = clean_spectrum.abs().square().sum(dim=(1, 2), keepdim=True)
        stretched_energy = stretched.abs().square().sum(dim=(1, 2), keepdim=True)
        scale = torch.sqrt(energy / stretched_energy.clamp_min(torch.finfo(energy.dtype).tiny))
        return stretched * scale
