"""CSIG/CBAK/COVL agree with the community compute_metrics.py, edge cases included.

Published CSIG/CBAK/COVL figures come from that script, so ours must give its numbers: the
same number of frames in each 95% trimmed mean (Python's half-to-even ``round``), the same
NaN LLR for digitally silent frames (it adds no epsilon to equal-length signals), and the same
clamp to [1, 5]. ``_script_*`` below restate its frame loops one frame at a time, as a slow
but obvious reference for our vectorised code; tests use small synthetic signals only.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.fft import fft
from scipy.linalg import toeplitz
from signals import speech_like

from bsrnn.metrics.composite import (
    CompositeDistortions,
    _critical_band_filters,
    composite_distortions,
    composite_ratings,
    llr_frames,
    trimmed_frame_count,
    trimmed_mean,
    wss_frames,
)

SAMPLE_RATE = 16000
WINDOW, HOP = 480, 120


def length_for_frames(frames: int) -> int:
    """Samples that give exactly ``frames`` analysis frames at 16 kHz."""
    return WINDOW + frames * HOP


def _hann() -> np.ndarray:
    return 0.5 * (1 - np.cos(2 * np.pi * np.arange(1, WINDOW + 1) / (WINDOW + 1)))


def _script_trimmed_mean(values: np.ndarray) -> float:
    ordered = np.sort(values)
    return float(np.mean(ordered[0:round(np.size(values) * 0.95)]))


def _script_llr(clean: np.ndarray, processed: np.ndarray) -> np.ndarray:
    order = 16
    frames = int((len(clean) - WINDOW) / HOP)
    out = np.empty(frames)
    with np.errstate(divide="ignore", invalid="ignore"):
        for index in range(frames):
            start = index * HOP
            models = []
            for signal in (clean, processed):
                frame = signal[start:start + WINDOW] * _hann()
                acf = np.array([np.dot(frame[:WINDOW - k], frame[k:]) for k in range(order + 1)])
                predictor, error = np.zeros(order), acf[0]
                for i in range(order):
                    previous = predictor[:i].copy()
                    reflection = (acf[i + 1] - np.dot(previous, acf[i:0:-1])) / error
                    predictor[i] = reflection
                    predictor[:i] = previous - reflection * previous[::-1]
                    error = (1 - reflection * reflection) * error
                models.append((acf, np.concatenate(([1.0], -predictor))))
            (clean_acf, clean_lpc), (_, processed_lpc) = models
            matrix = toeplitz(clean_acf)
            out[index] = math.log((processed_lpc @ matrix @ processed_lpc)
                                  / (clean_lpc @ matrix @ clean_lpc))
    return out


def _script_segsnr(clean: np.ndarray, processed: np.ndarray) -> float:
    frames = int(len(clean) / HOP - WINDOW / HOP)
    values = []
    for index in range(frames):
        start = index * HOP
        c = clean[start:start + WINDOW] * _hann()
        p = processed[start:start + WINDOW] * _hann()
        snr = 10 * math.log10(np.sum(c**2) / (np.sum((c - p) ** 2) + np.spacing(1))
                              + np.spacing(1))
        values.append(min(max(snr, -10.0), 35.0))
    return float(np.mean(values))


def _script_wss(clean: np.ndarray, processed: np.ndarray) -> np.ndarray:
    # The filterbank is ours; this restates the per-frame spectrum, the peak search and the
    # weighting band by band, as the script's loop does.
    n_fft, half = 1024, 512
    filters = _critical_band_filters(SAMPLE_RATE, half)
    frames = int(len(clean) / HOP - WINDOW / HOP)
    out = np.empty(frames)
    for index in range(frames):
        start = index * HOP
        energies, slopes, weights = [], [], []
        for signal in (clean, processed):
            frame = signal[start:start + WINDOW] / 32768 * _hann()
            power = np.abs(fft(frame, n_fft)) ** 2
            energy = 10 * np.log10(np.maximum(filters @ power[:half], 1e-10))
            slope = energy[1:] - energy[:-1]
            peak = np.empty(24)
            for band in range(24):
                n = band
                if slope[band] > 0:
                    while n < 24 and slope[n] > 0:
                        n += 1
                    peak[band] = energy[n - 1]
                else:
                    while n >= 0 and slope[n] <= 0:
                        n -= 1
                    peak[band] = energy[n + 1]
            weights.append(20.0 / (20.0 + energy.max() - energy[:24])
                           * (1.0 / (1.0 + peak - energy[:24])))
            energies.append(energy)
            slopes.append(slope)
        weight = (weights[0] + weights[1]) / 2
        out[index] = np.dot(weight, (slopes[0] - slopes[1]) ** 2) / np.sum(weight)
    return out


def _script_ratings(pesq: float, llr: float, wss: float, segsnr: float) -> tuple[float, ...]:
    csig = 3.093 - 1.029 * llr + 0.603 * pesq - 0.009 * wss
    cbak = 1.634 + 0.478 * pesq - 0.007 * wss + 0.063 * segsnr
    covl = 1.594 + 0.805 * pesq - 0.512 * llr - 0.007 * wss
    return tuple(min(5, max(1, value)) for value in (csig, cbak, covl))


def noisy_pair(frames: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Speech-like clean signal of ``frames`` frames and a copy in white noise at 20 dB SNR."""
    n = length_for_frames(frames)
    clean = speech_like(seed, seconds=n / SAMPLE_RATE + 0.01).astype(np.float64)[:n]
    noise = np.random.default_rng(seed + 10).standard_normal(n)
    noise *= np.sqrt(np.mean(clean**2) / np.mean(noise**2) / 10 ** 2.0)
    return clean, clean + noise


@pytest.mark.parametrize(("frames", "kept"), [
    (10, 10), (30, 28), (50, 48), (70, 66), (210, 200), (230, 218), (236, 224), (309, 294)])
def test_kept_frame_count_is_pythons_half_to_even_round_of_95_percent(frames, kept):
    # 30 frames -> 28.5 -> 28 (half-up would keep 29); 230 -> 218.5 -> 218 (half-up 219).
    assert trimmed_frame_count(frames) == kept == round(frames * 0.95)


def test_trimmed_mean_of_30_frames_keeps_28_not_29():
    values = np.random.default_rng(3).permutation(np.arange(30.0))
    assert trimmed_mean(values) == pytest.approx(np.mean(np.arange(28.0)))  # 13.5, not 14.0


def test_llr_and_wss_means_of_a_30_frame_signal_keep_the_lowest_28_frames():
    clean, noisy = noisy_pair(frames=30)
    distortions = composite_distortions(clean, noisy, SAMPLE_RATE)
    for mean, frames in ((distortions.llr, llr_frames(clean, noisy, SAMPLE_RATE)),
                         (distortions.wss, wss_frames(clean, noisy, SAMPLE_RATE))):
        assert frames.size == 30
        ordered = np.sort(frames)
        assert mean == pytest.approx(np.mean(ordered[:28]), rel=1e-12)
        assert mean != pytest.approx(np.mean(ordered[:29]), rel=1e-9)


@pytest.mark.parametrize("frames", [30, 47, 70])
def test_frame_values_and_trimmed_means_agree_with_the_scripts_frame_loops(frames):
    clean, noisy = noisy_pair(frames, seed=frames % 3)
    ours_llr = llr_frames(clean, noisy, SAMPLE_RATE)
    ours_wss = wss_frames(clean, noisy, SAMPLE_RATE)
    np.testing.assert_allclose(ours_llr, _script_llr(clean, noisy), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(ours_wss, _script_wss(clean, noisy), rtol=1e-9, atol=1e-9)
    distortions = composite_distortions(clean, noisy, SAMPLE_RATE)
    script = (_script_trimmed_mean(_script_llr(clean, noisy)),
              _script_trimmed_mean(_script_wss(clean, noisy)), _script_segsnr(clean, noisy))
    assert (distortions.llr, distortions.wss, distortions.segsnr) == pytest.approx(script,
                                                                                  rel=1e-10)
    ours = composite_ratings(2.0, distortions)
    assert tuple(ours.values()) == pytest.approx(_script_ratings(2.0, *script), abs=1e-10)


def test_digitally_silent_frames_get_nan_llr_and_are_trimmed_like_the_script():
    # 3 silent frames out of 70 (the trimmed mean drops 4): the script, which adds no epsilon
    # to equal-length signals, gets NaN there, sorts it last and trims it away. Adding an
    # epsilon (composite.m, and this module before) gives finite LLRs that can displace real
    # frames from the kept set and shift CSIG and COVL.
    clean, noisy = noisy_pair(frames=70, seed=1)
    processed = noisy.copy()
    processed[:WINDOW + 2 * HOP] = 0.0  # frames 0, 1 and 2 are entirely zero
    values = llr_frames(clean, processed, SAMPLE_RATE)
    assert np.isnan(values[:3]).all() and np.isfinite(values[3:]).all()
    np.testing.assert_array_equal(np.isnan(_script_llr(clean, processed)), np.isnan(values))
    distortions = composite_distortions(clean, processed, SAMPLE_RATE)
    script_llr = _script_trimmed_mean(_script_llr(clean, processed))
    assert math.isfinite(distortions.llr)
    assert distortions.llr == pytest.approx(script_llr, rel=1e-10)
    assert distortions.llr == pytest.approx(np.mean(np.sort(values[3:])[:66]), rel=1e-12)
    with_epsilon = composite_distortions(clean, processed, SAMPLE_RATE, add_epsilon=True)
    assert np.isfinite(llr_frames(clean + np.spacing(1), processed + np.spacing(1),
                                  SAMPLE_RATE)).all() and math.isfinite(with_epsilon.llr)
    assert abs(with_epsilon.llr - distortions.llr) > 0.01  # the shift the script does not have
    assert with_epsilon.wss == pytest.approx(distortions.wss, rel=1e-9)


def test_too_many_silent_frames_clamp_csig_and_covl_to_1_as_the_script_does(caplog):
    # More NaN frames than the 5% trimmed away: the LLR mean is NaN, and the script's
    # max(1, nan) is 1, so it publishes CSIG = COVL = 1.0; CBAK has no LLR term.
    clean, noisy = noisy_pair(frames=70, seed=2)
    processed = noisy.copy()
    processed[:WINDOW + 9 * HOP] = 0.0  # 10 silent frames, 4 trimmed
    with caplog.at_level("WARNING", logger="bsrnn.metrics.composite"):
        distortions = composite_distortions(clean, processed, SAMPLE_RATE)
    assert math.isnan(distortions.llr) and math.isfinite(distortions.wss)
    assert "10 of 70 frames" in caplog.text
    ratings = composite_ratings(2.5, distortions)
    script = _script_ratings(2.5, distortions.llr, distortions.wss, distortions.segsnr)
    assert (ratings["csig"], ratings["covl"]) == (1.0, 1.0) == (script[0], script[2])
    assert ratings["cbak"] == pytest.approx(script[1], abs=1e-12) and 1.0 < ratings["cbak"] < 5


def test_ratings_are_clamped_to_1_and_5_and_nan_pesq_stays_nan():
    high = composite_ratings(4.6, CompositeDistortions(llr=0.0, wss=0.0, segsnr=35.0))
    low = composite_ratings(1.0, CompositeDistortions(llr=3.0, wss=150.0, segsnr=-10.0))
    assert set(high.values()) == {5.0} and set(low.values()) == {1.0}
    failed = composite_ratings(math.nan, CompositeDistortions(llr=0.5, wss=30.0, segsnr=5.0))
    assert all(math.isnan(value) for value in failed.values())
