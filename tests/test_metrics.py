"""Speech-quality metrics on small synthetic speech: sanity, monotonicity, failure reporting."""

from __future__ import annotations

import csv
import math
import time

import numpy as np
import pytest
from scipy.linalg import solve_toeplitz
from scipy.signal import butter, lfilter, sosfiltfilt

from bsrnn.audio import SAMPLE_RATE
from bsrnn.metrics import FileScore, format_table, parallel, score_files, score_pair, si_sdr, write_csv
from bsrnn.metrics.composite import (
    SEGSNR_CEILING_DB,
    SEGSNR_FLOOR_DB,
    levinson_durbin,
    _nearest_peak,
    segmental_snr_frames,
)
from bsrnn.metrics.si_sdr import EPSILON


def speech_like_signal(seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    """Voiced-speech stand-in: glottal pulses at a gliding pitch through changing formants."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    pitch_hz = 140 + 40 * np.sin(2 * np.pi * 0.9 * t) + 15 * np.sin(2 * np.pi * 3.1 * t)
    pulses = np.diff(np.floor(np.cumsum(pitch_hz) / SAMPLE_RATE), prepend=0.0)
    source = lfilter([1.0], [1.0, -0.9], pulses) + 0.05 * rng.standard_normal(n)
    speech = np.zeros(n)
    vowel = SAMPLE_RATE // 5
    for start in range(0, n, vowel):
        for centre, width in ((rng.uniform(300, 800), 90), (rng.uniform(900, 2200), 130),
                              (rng.uniform(2400, 3500), 250)):
            radius = np.exp(-np.pi * width / SAMPLE_RATE)
            resonator = [1, -2 * radius * np.cos(2 * np.pi * centre / SAMPLE_RATE), radius**2]
            piece = source[start:start + vowel]
            speech[start:start + vowel] += lfilter([1 - radius], resonator, piece)
    speech *= 0.2 + 0.8 * np.sin(np.pi * 2.5 * t) ** 2  # syllable-rate loudness
    return 0.5 * speech / np.max(np.abs(speech)) + 1e-3 * rng.standard_normal(n)


def with_white_noise(clean: np.ndarray, snr_db: float, seed: int = 5) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(len(clean))
    return clean + noise * np.sqrt(np.mean(clean**2) / np.mean(noise**2) / 10 ** (snr_db / 10))


@pytest.fixture(scope="module")
def clean() -> np.ndarray:
    return speech_like_signal()


def test_identical_signals_score_pesq_4_64_stoi_1_and_composite_at_their_maxima(clean):
    scores = score_pair(clean, clean)
    assert scores["pesq"] == pytest.approx(4.644, abs=1e-3)
    assert scores["stoi"] == pytest.approx(1.0, abs=1e-9)
    assert (scores["csig"], scores["cbak"], scores["covl"]) == (5.0, 5.0, 5.0)
    assert scores["ssnr"] == SEGSNR_CEILING_DB
    assert scores["si_sdr"] > 150  # finite: the error energy is 0, float64 epsilon keeps the ratio finite
    assert "error" not in scores


def test_a_half_scaled_copy_still_scores_high(clean):
    scores = score_pair(clean, 0.5 * clean)
    assert scores["pesq"] > 4.5 and scores["stoi"] > 0.99
    assert scores["csig"] == 5.0 and scores["covl"] == 5.0 and scores["cbak"] > 4.0
    assert scores["ssnr"] == pytest.approx(20 * math.log10(2), abs=0.01)  # error is half the signal
    assert scores["si_sdr"] > 150  # scale-invariant: a scaled copy is a perfect estimate


def test_more_noise_lowers_every_metric(clean):
    by_snr = [score_pair(clean, with_white_noise(clean, snr_db)) for snr_db in (20, 10, 0)]
    for metric in ("pesq", "stoi", "csig", "cbak", "covl", "ssnr", "si_sdr"):
        values = [scores[metric] for scores in by_snr]
        assert values[0] > values[1] > values[2], (metric, values)


def test_low_passing_scores_below_the_identical_signal(clean):
    low_passed = sosfiltfilt(butter(8, 2000, fs=SAMPLE_RATE, output="sos"), clean)
    identical, degraded = score_pair(clean, clean), score_pair(clean, low_passed)
    for metric in ("pesq", "stoi", "csig", "covl", "ssnr"):
        assert degraded[metric] < identical[metric], metric
    assert degraded["cbak"] <= identical["cbak"]


def test_segmental_snr_frames_are_clipped_to_minus_10_and_35_db(clean):
    exact = segmental_snr_frames(clean, clean, SAMPLE_RATE)
    drowned = segmental_snr_frames(clean, with_white_noise(clean, -40), SAMPLE_RATE)
    assert np.all(exact == SEGSNR_CEILING_DB)
    assert np.all(drowned == SEGSNR_FLOOR_DB)
    assert score_pair(clean, with_white_noise(clean, -40))["ssnr"] == SEGSNR_FLOOR_DB


def test_vectorisedlevinson_durbin_solves_the_normal_equations():
    frames = np.random.default_rng(1).standard_normal((4, 480))
    autocorrelation = np.stack(
        [np.sum(frames[:, : 480 - lag] * frames[:, lag:], axis=1) for lag in range(17)], axis=1)
    polynomials = levinson_durbin(autocorrelation)
    for acf, polynomial in zip(autocorrelation, polynomials):
        predictor = solve_toeplitz(acf[:16], acf[1:17])
        np.testing.assert_allclose(polynomial, np.concatenate([[1.0], -predictor]), atol=1e-10)


def test_vectorised_peak_search_matches_the_band_by_band_definition():
    energy = np.random.default_rng(2).normal(0, 10, size=(50, 25)).cumsum(axis=1)
    slope = np.diff(energy, axis=1)
    expected = np.empty_like(slope)
    for frame in range(energy.shape[0]):
        for band in range(24):
            n = band
            if slope[frame, band] > 0:  # climb right; composite.m takes the band before the stop
                while n < 24 and slope[frame, n] > 0:
                    n += 1
                expected[frame, band] = energy[frame, n - 1]
            else:  # climb left
                while n >= 0 and slope[frame, n] <= 0:
                    n -= 1
                expected[frame, band] = energy[frame, n + 1]
    np.testing.assert_array_equal(_nearest_peak(energy, slope), expected)


def test_silent_reference_gives_nan_with_an_error_instead_of_a_number(clean):
    scores = score_pair(np.zeros_like(clean), clean)
    metrics = ("pesq", "csig", "cbak", "covl", "ssnr", "stoi", "si_sdr")
    assert all(math.isnan(scores[metric]) for metric in metrics)
    assert "all zeros" in scores["error"]


def test_silent_estimate_makes_pesq_and_its_regressions_nan_and_says_why(clean):
    scores = score_pair(clean, np.zeros_like(clean))
    assert math.isnan(scores["pesq"]) and math.isnan(scores["csig"]) and math.isnan(scores["covl"])
    assert "PESQ" in scores["error"]
    assert math.isnan(scores["si_sdr"]) and "SI-SDR is undefined for a constant (or silent) estimate" in scores["error"]
    assert math.isfinite(scores["stoi"]) and math.isfinite(scores["ssnr"])


def test_signals_of_different_lengths_are_trimmed_to_the_shorter(clean):
    assert score_pair(clean, clean[:-1000])["pesq"] == pytest.approx(4.644, abs=1e-3)


def test_score_pair_takes_well_under_a_second_for_3_s(clean):
    noisy = with_white_noise(clean, 10)
    score_pair(clean, noisy)  # warm imports
    started = time.perf_counter()
    score_pair(clean, noisy)
    assert time.perf_counter() - started < 1.0


def test_score_files_keeps_input_order_and_numbers_in_helper_processes(clean, monkeypatch):
    pairs = [(f"file{index}", clean, with_white_noise(clean, snr_db))
             for index, snr_db in enumerate((30, 0, 15))]
    in_process = score_files(pairs, workers=1, progress=False)
    monkeypatch.setattr(parallel, "PARENT_TAKES_JOBS", False)  # helpers score every file
    pooled = score_files(pairs, workers=2, progress=False)
    assert [score.file for score in pooled] == ["file0", "file1", "file2"]
    assert pooled == in_process


def test_table_and_csv_leave_failed_metrics_out_of_the_means(tmp_path):
    good = FileScore("a.wav", 3.0, 4.0, 3.0, 3.5, 10.0, 0.9, 12.0, 2.0)
    failed = FileScore("b.wav", math.nan, math.nan, math.nan, math.nan, 5.0, 0.8, 8.0, 2.0,
                       error="PESQ failed (NoUtterancesError: No utterances detected)")
    table = format_table([good, failed])
    assert table.splitlines()[1].split() == ["pesq", "3.000", "1"] and "1 not fully scored" in table
    assert table.splitlines()[5].split() == ["ssnr", "7.50", "2"]
    write_csv([good, failed], tmp_path / "scores.csv")
    with open(tmp_path / "scores.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["file", "pesq", "csig", "cbak", "covl", "ssnr", "stoi", "si_sdr",
                             "duration_s", "error"]
    assert [row["file"] for row in rows] == ["a.wav", "b.wav"]
    assert rows[1]["pesq"] == "nan" and rows[1]["ssnr"] == "5.000000"


# ------------------------------------------------------------------------------- SI-SDR
def orthogonal_noise(reference: np.ndarray, energy_ratio: float, seed: int = 7) -> np.ndarray:
    """Zero-mean noise orthogonal to the zero-mean ``reference``, with ``energy_ratio`` times its energy."""
    reference = reference - reference.mean()
    noise = np.random.default_rng(seed).standard_normal(len(reference))
    noise -= noise.mean()
    noise -= (noise @ reference) / (reference @ reference) * reference
    return noise * np.sqrt(energy_ratio * (reference @ reference) / (noise @ noise))


def test_si_sdr_of_a_reference_plus_orthogonal_noise_is_the_energy_ratio(clean):
    """With the error orthogonal to the reference, the projection is the reference itself, and
    SI-SDR is 10 log10(|s|^2 / |n|^2): 10 dB for a tenth of its energy, -3.01 dB for twice it."""
    for ratio, expected_db in ((0.1, 10.0), (1.0, 0.0), (2.0, -10 * math.log10(2))):
        assert si_sdr(clean, clean + orthogonal_noise(clean, ratio)) == pytest.approx(expected_db, abs=1e-9)


def test_si_sdr_is_invariant_to_the_estimates_scale_and_offset(clean):
    estimate = clean + orthogonal_noise(clean, 0.3)
    value = si_sdr(clean, estimate)
    for scale, offset in ((0.01, 0.0), (7.5, 0.0), (-1.0, 0.0), (1.0, 0.2)):
        assert si_sdr(clean, scale * estimate + offset) == pytest.approx(value, abs=1e-9)


def test_si_sdr_of_a_scaled_copy_is_near_the_float64_ceiling(clean):
    assert si_sdr(clean, 0.25 * clean) > 150.0
    assert si_sdr(clean, clean) == pytest.approx(10 * math.log10(
        (np.sum((clean - clean.mean()) ** 2) + EPSILON) / EPSILON), rel=1e-9)


def test_si_sdr_of_a_constant_signal_is_refused_and_shapes_must_agree(clean):
    with pytest.raises(ValueError, match="constant .*reference"):
        si_sdr(np.full(100, 0.3), np.arange(100.0))
    with pytest.raises(ValueError, match="constant .*estimate"):
        si_sdr(np.arange(100.0), np.full(100, 0.3))
    with pytest.raises(ValueError, match="one length"):
        si_sdr(clean, clean[:-1])
