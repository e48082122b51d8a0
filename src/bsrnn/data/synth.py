"""Synthetic speech-like signals and noises for the built-in demo corpus.

Not speech, but with the structure a speech enhancer has to learn, so that a tiny model
trained for seconds visibly improves PESQ on it:

- a glottal source: Rosenberg pulses (differentiated, so about -6 dB/octave like radiated
  speech) driven by a pitch contour between 80 and 250 Hz with declination and slow wander;
- a vocal tract: three formant resonances that glide from vowel to vowel, applied as a
  time-varying filter in the STFT domain (one multiply per frame and bin, no loops);
- syllables of 120-320 ms with smooth envelopes, short gaps, occasional pauses and leading
  and trailing silence, some starting with a fricative noise burst;
- noises: white, pink (1/f power), brown (1/f^2), babble (a sum of other "speakers") and hum
  (mains harmonics plus a gliding whine).

Everything is drawn from the ``numpy.random.Generator`` passed in, so it is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from bsrnn.audio import HOP_LENGTH, N_FFT, SAMPLE_RATE

NOISE_KINDS: tuple[str, ...] = ("white", "pink", "brown", "babble", "hum")

# (F1, F2, F3) in Hz for a few vowels of an adult male voice (Peterson & Barney style).
_VOWELS = np.array(
    [[270, 2290, 3010], [530, 1840, 2480], [730, 1090, 2440], [570, 840, 2410],
     [300, 870, 2240], [660, 1720, 2410], [490, 1350, 1690]],
    dtype=np.float64,
)  # fmt: skip
NOISE_FLOOR_DB = -50.0
"""The clean speech's noise floor (pink), relative to its RMS: a quiet studio recording's."""
_BANDWIDTHS = np.array([80.0, 110.0, 150.0])
_FORMANT_GAINS = np.array([1.0, 0.5, 0.25])
_BINS_HZ = np.maximum(np.fft.rfftfreq(N_FFT, 1.0 / SAMPLE_RATE), 1.0)
_WINDOW = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic Hann


@dataclass(frozen=True)
class Speaker:
    """What makes one synthetic voice differ from another."""

    f0: float
    """Median pitch in Hz."""
    tract: float
    """Formant scale: above 1 a shorter vocal tract (higher formants)."""


PITCH_RANGE_HZ: tuple[float, float] = (95.0, 210.0)
"""The median pitches a synthetic voice can have."""


def random_speaker(rng: np.random.Generator, pitch_slice: tuple[int, int] | None = None) -> Speaker:
    """A voice with median pitch 95-210 Hz and a matching tract length, with some spread.

    ``pitch_slice=(k, n)`` draws the pitch from the ``k``-th of ``n`` equal slices of that range
    (0-based), so that ``n`` voices made with ``k = 0 .. n-1`` span it, low voices to high.
    """
    low, high = PITCH_RANGE_HZ
    if pitch_slice is not None:
        k, n = pitch_slice
        if not 0 <= k < n:
            raise ValueError(f"pitch_slice must be (k, n) with 0 <= k < n, got {pitch_slice}")
        low, high = low + (high - low) * k / n, low + (high - low) * (k + 1) / n
    f0 = float(rng.uniform(low, high))
    tract = 0.92 + 0.2 * (f0 - 95.0) / 115.0 + float(rng.uniform(-0.04, 0.04))
    return Speaker(f0=f0, tract=tract)


def unit_rms(signal: np.ndarray) -> np.ndarray:
    """``signal`` scaled to a mean power of 1."""
    return signal / np.sqrt(np.mean(signal**2) + 1e-20)


def _syllables(rng: np.random.Generator, n: int, continuous: bool) -> list[tuple[int, int]]:
    """(start, stop) sample ranges of syllables, with gaps, pauses and edge silences."""
    rate = SAMPLE_RATE
    edge = (0.0, 0.05) if continuous else (0.08, 0.2)
    position = int(rng.uniform(*edge) * rate)
    end = n - int(rng.uniform(*edge) * rate)
    spans = []
    while True:
        length = int(rng.uniform(0.12, 0.32) * rate)
        if position + length > end:
            break
        spans.append((position, position + length))
        position += length + int(rng.uniform(0.02, 0.08) * rate)
        if not continuous and rng.random() < 0.15:
            position += int(rng.uniform(0.15, 0.35) * rate)
    if not spans:  # a very short clip: one syllable in the middle
        spans.append((n // 4, max(n // 4 + 1, 3 * n // 4)))
    return spans


def _pitch_contour(rng: np.random.Generator, n: int, speaker: Speaker) -> np.ndarray:
    """Pitch in Hz per sample: declination plus a smooth random wander, within 80-250 Hz."""
    knots = np.arange(0, n + 1600, 1600)  # one control point every 100 ms
    decline = np.linspace(0.08, -0.08, knots.size)
    log_f0 = np.log(speaker.f0) + decline + rng.normal(0.0, 0.07, knots.size)
    contour = np.exp(np.interp(np.arange(n), knots, log_f0))
    return np.clip(contour, 80.0, 250.0)


def _rosenberg_source(f0: np.ndarray) -> np.ndarray:
    """Differentiated Rosenberg glottal pulses following ``f0`` (one pulse per period)."""
    phase = np.cumsum(f0) / SAMPLE_RATE % 1.0
    opening, closing = 0.4, 0.16
    flow = np.where(
        phase < opening,
        0.5 * (1.0 - np.cos(np.pi * phase / opening)),
        np.where(phase < opening + closing, np.cos(np.pi * (phase - opening) / (2 * closing)), 0.0),
    )
    return np.diff(flow, prepend=0.0)


def _formant_response(tracks: np.ndarray) -> np.ndarray:
    """Magnitude response [bins, frames] of parallel resonances at ``tracks`` [3, frames]."""
    f = _BINS_HZ[None, :, None]
    centre = tracks[:, None, :]
    width = _BANDWIDTHS[:, None, None]
    resonance = 1.0 / np.sqrt(1.0 + ((f**2 - centre**2) / (width * f)) ** 2)
    return (_FORMANT_GAINS[:, None, None] * resonance).sum(axis=0) + 0.01


def _filter_frames(signal: np.ndarray, response: np.ndarray) -> np.ndarray:
    """``signal`` filtered by a per-frame magnitude ``response`` [bins, frames].

    A numpy weighted overlap-add with the front end's frame grid (512-point periodic Hann,
    hop 128, frames centred on multiples of the hop): torch's STFT is not needed for test
    data, and numpy is several times faster on single short clips.
    """
    n = signal.shape[0]
    frames = n // HOP_LENGTH + 1
    padded = np.pad(signal, (N_FFT // 2, N_FFT // 2 + HOP_LENGTH))
    starts = np.arange(frames) * HOP_LENGTH
    segments = padded[starts[:, None] + np.arange(N_FFT)[None, :]] * _WINDOW
    shaped = np.fft.irfft(np.fft.rfft(segments, axis=1) * response.T, N_FFT, axis=1) * _WINDOW
    out = np.zeros((frames + N_FFT // HOP_LENGTH) * HOP_LENGTH)
    envelope = np.zeros_like(out)
    for quarter in range(N_FFT // HOP_LENGTH):
        part = slice(quarter * HOP_LENGTH, (quarter + 1) * HOP_LENGTH)
        target = slice(part.start, part.start + frames * HOP_LENGTH)
        out[target] += shaped[:, part].reshape(-1)
        envelope[target] += np.tile(_WINDOW[part] ** 2, frames)
    keep = slice(N_FFT // 2, N_FFT // 2 + n)
    return out[keep] / envelope[keep]  # the squared-window overlap is >= 0.42 at every kept sample


def speech_like(rng: np.random.Generator, n: int, speaker: Speaker, continuous: bool = False) -> np.ndarray:
    """``n`` samples of a speech-like utterance at 16 kHz, normalised to unit power.

    ``continuous`` drops the pauses and edge silences (for babble talkers).
    """
    spans = _syllables(rng, n, continuous)
    voiced_env = np.zeros(n)
    fricative_env = np.zeros(n)
    for start, stop in spans:
        x = np.linspace(0.0, 1.0, stop - start)
        voiced_env[start:stop] = rng.uniform(0.5, 1.0) * np.abs(np.sin(np.pi * x)) ** 0.6
        if rng.random() < 0.4:
            burst = min(int(rng.uniform(0.03, 0.07) * SAMPLE_RATE), stop - start)
            fricative_env[start : start + burst] = 0.25 * np.hanning(burst)
    source = unit_rms(_rosenberg_source(_pitch_contour(rng, n, speaker)))
    voiced = source * voiced_env + 0.03 * rng.standard_normal(n) * voiced_env

    frames = n // HOP_LENGTH + 1
    mids = np.array([(start + stop) / 2 for start, stop in spans]) / HOP_LENGTH
    vowels = _VOWELS[rng.integers(0, len(_VOWELS), len(spans))] * speaker.tract  # [syllables, 3]
    tracks = np.stack([np.interp(np.arange(frames), mids, vowels[:, j]) for j in range(3)])
    speech = _filter_frames(voiced, _formant_response(tracks))

    if fricative_env.any():
        centre = rng.uniform(3500.0, 6000.0)
        hiss = 1.0 / np.sqrt(1.0 + ((_BINS_HZ**2 - centre**2) / (2500.0 * _BINS_HZ)) ** 2)
        hiss_frames = np.repeat(hiss[:, None], frames, axis=1)
        speech += _filter_frames(rng.standard_normal(n) * fricative_env, hiss_frames)
    # A recording's noise floor (room and microphone), as every studio recording has: without
    # it the pauses are digital silence, for which the composite measures' LLR is undefined
    # and CSIG = COVL = 1 for every demo file (compute_metrics.py's clamp).
    speech = unit_rms(speech) + 10 ** (NOISE_FLOOR_DB / 20) * unit_rms(_coloured(rng, n, 1.0))
    return unit_rms(speech)


def _coloured(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Gaussian noise with power spectrum 1/f**exponent (flat below 20 Hz)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.maximum(np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE), 20.0)
    return np.fft.irfft(spectrum / freqs ** (exponent / 2.0), n)


def _hum(rng: np.random.Generator, n: int) -> np.ndarray:
    t = np.arange(n) / SAMPLE_RATE
    mains = float(rng.choice([50.0, 60.0]))
    hum = sum(
        k**-0.8 * np.sin(2 * np.pi * k * mains * t + rng.uniform(0, 2 * np.pi)) for k in range(1, 16)
    )
    whine_hz = rng.uniform(800.0, 3000.0)
    glide = 0.01 * whine_hz * np.sin(2 * np.pi * 0.3 * t) / (2 * np.pi * 0.3)
    whine = 0.4 * np.sin(2 * np.pi * (whine_hz * t + glide))
    return unit_rms(hum) + unit_rms(whine) * 0.5 + 0.05 * rng.standard_normal(n)


def make_noise(kind: str, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` samples of noise of ``kind`` (one of NOISE_KINDS), normalised to unit power."""
    if kind == "white":
        noise = rng.standard_normal(n)
    elif kind == "pink":
        noise = _coloured(rng, n, 1.0)
    elif kind == "brown":
        noise = _coloured(rng, n, 2.0)
    elif kind == "babble":
        talkers = int(rng.integers(3, 5))
        noise = sum(
            speech_like(rng, n, random_speaker(rng), continuous=True) * 10 ** (rng.uniform(-3, 3) / 20)
            for _ in range(talkers)
        )
    elif kind == "hum":
        noise = _hum(rng, n)
    else:
        raise ValueError(f"unknown noise kind {kind!r}; expected one of {NOISE_KINDS}")
    return unit_rms(noise)
