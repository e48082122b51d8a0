"""Hu & Loizou's composite quality measures (CSIG, CBAK, COVL) and their ingredients.

The composite measures are linear regressions of PESQ and three frame-level distortions (LLR,
WSS, segmental SNR) onto listening-test ratings (Hu & Loizou, "Evaluation of objective quality
measures for speech enhancement", IEEE TASLP 2008). Published CSIG/CBAK/COVL figures (CMGAN,
MP-SENet, SEMamba and most recent speech-enhancement tables) come from the community Python
port ``compute_metrics.py`` of Loizou's ``composite.m``, and numbers only compare across papers
when its conventions are kept, so this module matches that script exactly, quirks included:

- 30 ms Hann frames (MATLAB ``hanning``: no zero end points), hop of a quarter window, and the
  frame count ``(length - window) // hop`` (the last full frame is not used);
- no epsilon added to the signals: ``composite.m`` adds one always, but the script adds it only
  in the branch that trims signals of different lengths, so for the usual equal-length pair a
  frame of digital silence has no LPC model and its LLR is NaN (see ``llr_frames``);
- LLR with LPC order 10 below 10 kHz and 16 above (so 16 at 16 kHz), not clipped;
- WSS over Klatt's 25 Gaussian critical bands on a 2*window FFT, band energies floored at
  -100 dB after scaling the float signal by 1/32768 as the script does (it treats samples as
  16-bit counts; the floor therefore flattens quiet frames, which lowers WSS);
- LLR and WSS averaged over the lowest 95% of frames after a NumPy sort (NaN last), keeping
  Python's ``round(frames * 0.95)`` of them: round half to even, so 230 frames keep 218, not
  the 219 of MATLAB's half-up ``round`` (see ``trimmed_mean``);
- segmental SNR over all frames after clipping each to [-10, 35] dB;
- wide-band PESQ in the regressions, and their outputs clamped to [1, 5] with Python's
  ``max``/``min``, so an undefined (NaN) LLR mean clamps CSIG and COVL to 1 (see
  ``composite_ratings``).

Frames are processed as 2-D arrays, so a 3 s file takes milliseconds.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

FRAME_MILLISECONDS = 30
TRIMMED_FRACTION = 0.95
SEGSNR_FLOOR_DB = -10.0
SEGSNR_CEILING_DB = 35.0
RATING_RANGE = (1.0, 5.0)

_EPS = np.spacing(1.0)
_WSS_SIGNAL_SCALE = 1.0 / 32768.0
_WSS_ENERGY_FLOOR = 1e-10
_KLATT_KMAX = 20.0
_KLATT_KLOCMAX = 1.0
# Klatt's critical bands (centre frequency, bandwidth) in Hz, as tabulated in composite.m.
_BAND_CENTRES_HZ = np.array([
    50.0, 120.0, 190.0, 260.0, 330.0, 400.0, 470.0, 540.0, 617.372, 703.378, 798.717,
    904.128, 1020.38, 1148.30, 1288.72, 1442.54, 1610.70, 1794.16, 1993.93, 2211.08,
    2446.71, 2701.97, 2978.04, 3276.17, 3597.63,
])
_BAND_WIDTHS_HZ = np.array([
    70.0, 70.0, 70.0, 70.0, 70.0, 70.0, 70.0, 77.3724, 86.0056, 95.3398, 105.411, 116.256,
    127.914, 140.423, 153.823, 168.154, 183.457, 199.776, 217.153, 235.631, 255.255,
    276.072, 298.126, 321.465, 346.136,
])


@dataclass(frozen=True)
class CompositeDistortions:
    """The three frame-level distortions the regressions use, already averaged over frames."""

    llr: float
    wss: float
    segsnr: float


def frame_length(sample_rate: int) -> tuple[int, int]:
    """Window and hop in samples (480 and 120 at 16 kHz), rounded as the script rounds them."""
    window = int(np.round(FRAME_MILLISECONDS * sample_rate / 1000))
    return window, window // 4


def windowed_frames(signal: np.ndarray, sample_rate: int) -> np.ndarray:
    """Hann-windowed analysis frames ``[frames, window]`` (possibly zero frames)."""
    window, hop = frame_length(sample_rate)
    num_frames = max(0, (len(signal) - window) // hop)
    if num_frames == 0:
        return np.zeros((0, window))
    views = np.lib.stride_tricks.sliding_window_view(signal, window)[::hop][:num_frames]
    hann = 0.5 * (1.0 - np.cos(2.0 * np.pi * np.arange(1, window + 1) / (window + 1)))
    return views * hann


def trimmed_frame_count(num_frames: int, fraction: float = TRIMMED_FRACTION) -> int:
    """How many of the lowest frames ``trimmed_mean`` keeps: ``round(num_frames * fraction)``.

    Python's ``round`` (half to even) on the float product, because that is what the community
    ``compute_metrics.py`` does and published CSIG/CBAK/COVL figures come from it. It differs
    from MATLAB's half-up ``round`` in ``composite.m`` whenever the product lands on an even
    integer plus one half, i.e. for 30, 70, 110, ... (30 mod 40) frames: 230 frames keep 218.
    """
    return round(num_frames * fraction)


def trimmed_mean(frame_values: np.ndarray, fraction: float = TRIMMED_FRACTION) -> float:
    """Mean of the lowest ``fraction`` of the values: drops the worst, often silent, frames.

    NaN frames sort last (NumPy's order, as in the script), so a few are trimmed away; if more
    than the trimmed share are NaN, the mean is NaN, as it is in the script.
    """
    if frame_values.size == 0:
        return float("nan")
    keep = trimmed_frame_count(frame_values.size, fraction)
    return float(np.mean(np.sort(frame_values)[:keep]))


def segmental_snr_frames(clean: np.ndarray, processed: np.ndarray, sample_rate: int) -> np.ndarray:
    """Per-frame SNR in dB, clipped to [-10, 35] so silent frames cannot dominate the mean."""
    clean_frames = windowed_frames(clean, sample_rate)
    error_frames = clean_frames - windowed_frames(processed, sample_rate)
    signal_energy = np.sum(clean_frames**2, axis=1)
    noise_energy = np.sum(error_frames**2, axis=1)
    snr_db = 10.0 * np.log10(signal_energy / (noise_energy + _EPS) + _EPS)
    return np.clip(snr_db, SEGSNR_FLOOR_DB, SEGSNR_CEILING_DB)


def _autocorrelation(frames: np.ndarray, max_lag: int) -> np.ndarray:
    """Biased autocorrelation lags 0..max_lag of each frame, ``[frames, max_lag + 1]``."""
    window = frames.shape[1]
    lags = [np.sum(frames[:, : window - lag] * frames[:, lag:], axis=1)
            for lag in range(max_lag + 1)]
    return np.stack(lags, axis=1)


def levinson_durbin(autocorrelation: np.ndarray) -> np.ndarray:
    """LPC polynomials ``[1, -a_1, ..., -a_p]`` of every frame at once, ``[frames, p + 1]``."""
    num_frames, order = autocorrelation.shape[0], autocorrelation.shape[1] - 1
    predictor = np.zeros((num_frames, order))
    error = autocorrelation[:, 0].copy()
    for i in range(order):
        previous = predictor[:, :i].copy()
        sum_term = np.sum(previous * autocorrelation[:, i:0:-1], axis=1)
        reflection = (autocorrelation[:, i + 1] - sum_term) / error
        predictor[:, i] = reflection
        predictor[:, :i] = previous - reflection[:, None] * previous[:, ::-1]
        error = (1.0 - reflection**2) * error
    return np.concatenate([np.ones((num_frames, 1)), -predictor], axis=1)


def lpc_order(sample_rate: int) -> int:
    """The LPC order composite.m uses: 10 for narrow band, 16 from 10 kHz up."""
    return 10 if sample_rate < 10000 else 16


def llr_frames(clean: np.ndarray, processed: np.ndarray, sample_rate: int) -> np.ndarray:
    """Per-frame log-likelihood ratio of the processed LPC model under the clean spectrum.

    A frame that is digital silence in either signal has no LPC model (Levinson-Durbin divides
    0 by 0) and gets NaN, exactly as in ``compute_metrics.py``; ``trimmed_mean`` sorts these
    last. Values are not clipped to [0, 2] (some other ports do; the script does not).
    """
    order = lpc_order(sample_rate)
    clean_acf = _autocorrelation(windowed_frames(clean, sample_rate), order)
    processed_acf = _autocorrelation(windowed_frames(processed, sample_rate), order)
    with np.errstate(divide="ignore", invalid="ignore"):
        clean_lpc = levinson_durbin(clean_acf)
        processed_lpc = levinson_durbin(processed_acf)
        lag_index = np.abs(np.subtract.outer(np.arange(order + 1), np.arange(order + 1)))
        clean_toeplitz = clean_acf[:, lag_index]  # [frames, p + 1, p + 1]
        numerator = np.einsum("fi,fij,fj->f", processed_lpc, clean_toeplitz, processed_lpc)
        denominator = np.einsum("fi,fij,fj->f", clean_lpc, clean_toeplitz, clean_lpc)
        return np.log(numerator / denominator)


def _critical_band_filters(sample_rate: int, half_fft: int) -> np.ndarray:
    """Gaussian critical-band weights ``[25, half_fft]``, zeroed below their -30 dB point."""
    nyquist = sample_rate / 2.0
    centre_bins = np.floor(_BAND_CENTRES_HZ / nyquist * half_fft)
    width_bins = _BAND_WIDTHS_HZ / nyquist * half_fft
    norm = np.log(_BAND_WIDTHS_HZ[0]) - np.log(_BAND_WIDTHS_HZ)
    bins = np.arange(half_fft)
    filters = np.exp(-11.0 * ((bins[None, :] - centre_bins[:, None]) / width_bins[:, None]) ** 2
                     + norm[:, None])
    minimum = np.exp(-30.0 / (2.0 * 2.303))
    return np.where(filters > minimum, filters, 0.0)


def _nearest_peak(energy_db: np.ndarray, slope: np.ndarray) -> np.ndarray:
    """Energy at the spectral peak each band climbs towards, as composite.m finds it.

    A rising band searches right for the first non-rising slope ``n`` and takes band ``n - 1``
    (composite.m's off-by-one, kept); a falling band searches left for the last rising slope
    ``n`` and takes band ``n + 1``.
    """
    num_slopes = slope.shape[1]
    index = np.arange(num_slopes)
    rising = slope > 0
    first_not_rising_after = np.where(~rising, index, num_slopes)
    first_not_rising_after = np.minimum.accumulate(first_not_rising_after[:, ::-1], axis=1)[:, ::-1]
    last_rising_before = np.maximum.accumulate(np.where(rising, index, -1), axis=1)
    peak_band = np.where(rising, first_not_rising_after - 1, last_rising_before + 1)
    return np.take_along_axis(energy_db, peak_band, axis=1)


def wss_frames(clean: np.ndarray, processed: np.ndarray, sample_rate: int) -> np.ndarray:
    """Per-frame Klatt weighted spectral slope distance (weights favour spectral peaks)."""
    window, _ = frame_length(sample_rate)
    n_fft = int(2 ** np.ceil(np.log2(2 * window)))
    filters = _critical_band_filters(sample_rate, n_fft // 2)

    def band_energy_db(signal: np.ndarray) -> np.ndarray:
        frames = windowed_frames(signal * _WSS_SIGNAL_SCALE, sample_rate)
        power = np.abs(np.fft.rfft(frames, n=n_fft, axis=1)[:, : n_fft // 2]) ** 2
        energy = np.einsum("fk,bk->fb", power, filters)  # C loop: BLAS threads cost more here
        return 10.0 * np.log10(np.maximum(energy, _WSS_ENERGY_FLOOR))

    weights = []
    slopes = []
    for energy_db in (band_energy_db(clean), band_energy_db(processed)):
        slope = np.diff(energy_db, axis=1)
        below = energy_db[:, :-1]
        global_weight = _KLATT_KMAX / (_KLATT_KMAX + energy_db.max(axis=1, keepdims=True) - below)
        local_weight = _KLATT_KLOCMAX / (_KLATT_KLOCMAX + _nearest_peak(energy_db, slope) - below)
        weights.append(global_weight * local_weight)
        slopes.append(slope)
    weight = (weights[0] + weights[1]) / 2.0
    return np.sum(weight * (slopes[0] - slopes[1]) ** 2, axis=1) / np.sum(weight, axis=1)


def composite_distortions(
    clean: np.ndarray, processed: np.ndarray, sample_rate: int, *, add_epsilon: bool = False
) -> CompositeDistortions:
    """LLR, WSS and segmental SNR of two equal-length signals (NaN if shorter than 2 frames).

    ``add_epsilon`` adds ``np.spacing(1)`` to both signals, which ``compute_metrics.py`` does
    only when it was given signals of different lengths (the addition sits in its trimming
    branch); a caller that trimmed such a pair itself passes True to reproduce it. Without it,
    as for every equal-length pair in the script, digitally silent frames give NaN LLRs.
    """
    if clean.shape != processed.shape or clean.ndim != 1:
        raise ValueError(
            f"composite measures need two 1-D signals of equal length, got {clean.shape} and "
            f"{processed.shape}; trim both to the shorter one first"
        )
    clean = np.asarray(clean, dtype=np.float64)
    processed = np.asarray(processed, dtype=np.float64)
    if add_epsilon:
        clean, processed = clean + _EPS, processed + _EPS
    segsnr_values = segmental_snr_frames(clean, processed, sample_rate)
    llr_values = llr_frames(clean, processed, sample_rate)
    llr = trimmed_mean(llr_values)
    if math.isnan(llr) and llr_values.size:
        log.warning(
            "LLR undefined: %d of %d frames are digital silence in one of the signals, more "
            "than the %d the 95%% trimmed mean drops; compute_metrics.py then reports "
            "CSIG = COVL = 1, and so do we", int(np.isnan(llr_values).sum()), llr_values.size,
            llr_values.size - trimmed_frame_count(llr_values.size))
    return CompositeDistortions(
        llr=llr,
        wss=trimmed_mean(wss_frames(clean, processed, sample_rate)),
        segsnr=float(np.mean(segsnr_values)) if segsnr_values.size else float("nan"),
    )


def _clamp_like_compute_metrics(value: float) -> float:
    """``min(5, max(1, value))`` with Python's builtins, as the script clamps its ratings.

    ``max(1, nan)`` is 1 (NaN never compares greater), so a NaN rating becomes 1.0; NumPy's
    ``clip`` would keep NaN, and published tables contain the script's 1.0.
    """
    low, high = RATING_RANGE
    return float(min(high, max(low, value)))


def composite_ratings(pesq: float, distortions: CompositeDistortions) -> dict[str, float]:
    """CSIG, CBAK and COVL from wide-band PESQ and the distortions, clamped to [1, 5].

    The clamp is the script's: an undefined LLR mean (too many digitally silent frames, see
    ``composite_distortions``) gives CSIG = COVL = 1.0, the figure ``compute_metrics.py``
    publishes for such a file. A NaN PESQ (PESQ failed; the script raises there and publishes
    nothing) or a signal too short for one frame (NaN segmental SNR) gives NaN ratings rather
    than a number that looks valid.
    """
    if math.isnan(pesq) or math.isnan(distortions.segsnr):
        return {"csig": float("nan"), "cbak": float("nan"), "covl": float("nan")}
    llr, wss, segsnr = distortions.llr, distortions.wss, distortions.segsnr
    csig = 3.093 - 1.029 * llr + 0.603 * pesq - 0.009 * wss
    cbak = 1.634 + 0.478 * pesq - 0.007 * wss + 0.063 * segsnr
    covl = 1.594 + 0.805 * pesq - 0.512 * llr - 0.007 * wss
    return {name: _clamp_like_compute_metrics(value)
            for name, value in (("csig", csig), ("cbak", cbak), ("covl", covl))}
