"""Scale-invariant signal-to-distortion ratio (SI-SDR), as Le Roux et al. define it.

J. Le Roux, S. Wisdom, H. Erdogan, J. R. Hershey, "SDR - half-baked or well done?", ICASSP
2019, eqs. (1)-(4): both signals are made zero-mean, the reference is scaled to its projection
on the estimate's direction (``alpha = <s_hat, s> / |s|^2``, the target ``s_t = alpha s``),
everything else is the error ``e = s_hat - s_t``, and SI-SDR = 10 log10(|s_t|^2 / |e|^2) dB.
Rescaling the estimate by any non-zero factor leaves it unchanged, which is why papers on
enhancement and separation quote it beside PESQ: a quieter or louder output is not penalised.

The two energies get float64's machine epsilon added (as torchmetrics'
``scale_invariant_signal_distortion_ratio`` adds its dtype's), so a perfect estimate scores a
large finite number (~180 dB at speech levels) instead of infinity, and means stay finite.
What the ratio cannot describe (a reference without variation, a silent estimate) is refused
with ``ValueError`` for the caller to report, never returned as a number.
"""

from __future__ import annotations

import numpy as np

EPSILON = float(np.finfo(np.float64).eps)
"""Added to both energies of the ratio, so a perfect estimate scores a finite number."""


def si_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """SI-SDR in dB of ``estimate`` against ``reference`` (1-D, same length, same rate).

    Raises ``ValueError`` when the reference is constant (nothing to project on) or the
    estimate is (no direction to project), after both were made zero-mean.
    """
    reference = np.asarray(reference, dtype=np.float64)
    estimate = np.asarray(estimate, dtype=np.float64)
    if reference.ndim != 1 or reference.shape != estimate.shape:
        raise ValueError(f"si_sdr needs two 1-D signals of one length, got shapes {reference.shape} "
                         f"and {estimate.shape}")
    reference = reference - reference.mean()
    estimate = estimate - estimate.mean()
    reference_energy = float(reference @ reference)
    if reference_energy == 0.0:
        raise ValueError("SI-SDR is undefined for a constant (or silent) reference")
    if not np.any(estimate):
        raise ValueError("SI-SDR is undefined for a constant (or silent) estimate")
    target = (float(estimate @ reference) / reference_energy) * reference
    error = estimate - target
    return float(10.0 * np.log10((target @ target + EPSILON) / (error @ error + EPSILON)))
