"""Which resampler `bsrnn data prepare` uses for 48 kHz -> 16 kHz, decided by measurement.

Why: VoiceBank+DEMAND ships at 48 kHz and the model trains at 16 kHz, so every training and
test file goes through one resampler, once. What matters is what survives into 16-bit output:
gain errors in the band the model and the metrics see (0-8 kHz), energy from above 8 kHz
folded back into it (aliasing), and the time the whole corpus takes. Compared:

- soxr VHQ and soxr HQ (libsoxr, linear phase; the candidates),
- scipy.signal.resample_poly with its default Kaiser window (beta 5), what ``bsrnn score`` and
  ``bsrnn enhance`` use for occasional files.

Figures, each on float64 signals so that the method and not the sample format is measured:

1. Passband: sines from 50 Hz to 7.95 kHz at 48 kHz, the gain of each through the resampler
   (least-squares fit away from the edges). Ripple over 0-7 kHz (max - min, dB) and the gain
   near the band edge, where the methods differ.
2. Stopband: sines from 8 kHz to 23.9 kHz; the level of whatever comes out (all of it is an
   alias folded into 0-8 kHz or leakage), in dB relative to the input sine. Worst case over
   8-8.5 kHz (the transition band) and over 8.5-24 kHz.
3. A speech-like 48 kHz signal (harmonic voice with gliding pitch and formants, fricative hiss
   up to 16 kHz, pink noise up to 24 kHz): split at 8 kHz by FFT; the resamplers are linear,
   so resampling the part above 8 kHz alone gives exactly the aliased energy, reported
   relative to the resampled whole.
4. The largest difference between the methods' outputs on that signal, in 16-bit steps
   (LSB = 1/32768) and as an RMS level in dB relative to the signal; and on its part below
   7.3 kHz alone, which shows whether two methods differ in the band or only at its edge.
5. Time per hour of 48 kHz mono audio on one core (round-robin repetitions, median).

For scale: rounding to 16 bits adds noise at -101 dB relative to a full-scale sine, and about
-75 dB relative to speech at the usual -26 dBFS. Errors below that are invisible in the output.

    .venv/bin/python benchmarks/resampler_choice.py              # about 20 s
    .venv/bin/python benchmarks/resampler_choice.py --seconds 120 --repeats 5
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import scipy
import soxr
from bench_common import Timings, describe_machine, load_average, round_robin
from scipy.signal import resample_poly

IN_RATE = 48000
OUT_RATE = 16000
EDGE_S = 0.05  # seconds left out at both ends: every method starts and ends with a filter transient

Resampler = Callable[[np.ndarray], np.ndarray]

METHODS: dict[str, Resampler] = {
    "soxr VHQ": lambda x: soxr.resample(x, IN_RATE, OUT_RATE, quality="VHQ"),
    "soxr HQ": lambda x: soxr.resample(x, IN_RATE, OUT_RATE, quality="HQ"),
    "scipy resample_poly (kaiser 5)": lambda x: resample_poly(x, 1, 3, window=("kaiser", 5.0)),
}


def db(ratio: float) -> float:
    return float(20 * np.log10(max(ratio, 1e-300)))


def sine(freq: float, seconds: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * IN_RATE)) / IN_RATE
    return np.sin(2 * np.pi * freq * t)


def inner(x: np.ndarray, rate: int) -> np.ndarray:
    edge = int(EDGE_S * rate)
    return x[edge:-edge]


def gain_at(method: Resampler, freq: float) -> float:
    """Amplitude gain of ``method`` for a sine at ``freq`` (fit of sin and cos at the output rate)."""
    out = inner(method(sine(freq)), OUT_RATE)
    t = (np.arange(len(out)) + int(EDGE_S * OUT_RATE)) / OUT_RATE
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], axis=1)
    coeffs, *_ = np.linalg.lstsq(basis, out, rcond=None)
    return float(np.hypot(*coeffs))


def leak_at(method: Resampler, freq: float) -> float:
    """Output RMS over input RMS for a sine at ``freq`` above the output's Nyquist frequency."""
    x = sine(freq)
    return float(np.sqrt(np.mean(inner(method(x), OUT_RATE) ** 2) / np.mean(inner(x, IN_RATE) ** 2)))


def speech_like_48k(seconds: float, seed: int = 0) -> np.ndarray:
    """A deterministic speech-like signal at 48 kHz with content up to 24 kHz, peak about 0.5."""
    rng = np.random.default_rng(seed)
    n = int(seconds * IN_RATE)
    t = np.arange(n) / IN_RATE
    f0 = 120 + 40 * np.sin(2 * np.pi * 0.7 * t) + 15 * np.sin(2 * np.pi * 3.1 * t)
    phase = 2 * np.pi * np.cumsum(f0) / IN_RATE
    voice = np.zeros(n)
    for k in range(1, int(23000 / 160)):  # harmonics up to about 23 kHz, -6 dB/octave
        harmonic_hz = k * f0
        formants = sum(gain / (1 + ((harmonic_hz - centre) / width) ** 2)
                       for centre, width, gain in ((600, 120, 1.0), (1700, 180, 0.5), (2600, 250, 0.3)))
        voice += np.where(harmonic_hz < IN_RATE / 2, (0.05 + formants) / k, 0.0) * np.sin(k * phase)
    syllables = np.abs(np.sin(2 * np.pi * 2.5 * t)) ** 0.6
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / IN_RATE)
    hiss = np.fft.irfft(spectrum * np.exp(-(((freqs - 7000) / 4000) ** 2)), n)
    pink = np.fft.irfft(spectrum / np.sqrt(np.maximum(freqs, 20)), n)
    signal = (voice / np.std(voice) * syllables
              + 0.4 * hiss / np.std(hiss) * (1 - syllables)
              + 0.05 * pink / np.std(pink))
    return 0.5 * signal / np.max(np.abs(signal))


def split_at(x: np.ndarray, cutoff_hz: float) -> tuple[np.ndarray, np.ndarray]:
    """``x`` as (below cutoff, above cutoff), by FFT: the two add up to ``x`` exactly."""
    spectrum = np.fft.rfft(x)
    high = spectrum * (np.fft.rfftfreq(len(x), 1 / IN_RATE) >= cutoff_hz)
    upper = np.fft.irfft(high, len(x))
    return x - upper, upper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="audio per timing repetition")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(describe_machine(with_torch=False))
    print(f"soxr {soxr.__version__} (libsoxr {soxr.soxr_ext.libsoxr_version()}), scipy {scipy.__version__}, "
          f"numpy {np.__version__}")

    pass_freqs = np.concatenate([np.arange(50, 7000, 50), np.arange(7000, 7960, 10)])
    stop_freqs = np.concatenate([np.arange(8000, 8500, 10), np.arange(8500, 23950, 50)])
    print("\n1-2. Sine sweeps (gain in dB; levels relative to the input sine)")
    header = (f"{'method':32s} {'ripple 0-7k':>11s} {'@7.2k':>7s} {'@7.6k':>7s} {'@7.9k':>8s} "
              f"{'-3dB at':>8s} {'worst 8-8.5k':>12s} {'worst 8.5-24k':>13s}")
    print(header)
    for name, method in METHODS.items():
        gains = np.array([db(gain_at(method, f)) for f in pass_freqs])
        ripple = gains[pass_freqs <= 7000]
        below = pass_freqs[gains < -3.0]
        minus3 = f"{below[0] / 1000:.2f}k" if len(below) else ">7.95k"
        leaks = np.array([db(leak_at(method, f)) for f in stop_freqs])

        def at(freq: float, values: np.ndarray = gains) -> str:
            return f"{values[np.argmin(np.abs(pass_freqs - freq))]:+.3f}"

        print(f"{name:32s} {ripple.max() - ripple.min():11.5f} {at(7200):>7s} {at(7600):>7s} {at(7900):>8s} "
              f"{minus3:>8s} {leaks[stop_freqs < 8500].max():12.1f} {leaks[stop_freqs >= 8500].max():13.1f}")

    print("\n3-4. Speech-like 48 kHz signal, 10 s (aliasing: resampled part above 8 kHz vs resampled whole)")
    signal = speech_like_48k(10.0)
    _, upper = split_at(signal, OUT_RATE / 2)
    print(f"     share of the input's energy above 8 kHz: {db(np.std(upper) / np.std(signal)):.1f} dB")
    outputs = {name: inner(method(signal), OUT_RATE) for name, method in METHODS.items()}
    for name, method in METHODS.items():
        aliased = inner(method(upper), OUT_RATE)
        print(f"{name:32s} aliasing energy {db(np.std(aliased) / np.std(outputs[name])):7.1f} dB, "
              f"peak {np.max(np.abs(aliased)) * 32768:8.3f} LSB")
    lower, _ = split_at(signal, 7300.0)  # soxr's passband ends at 91.3 % of 8 kHz
    lower_outputs = {name: inner(method(lower), OUT_RATE) for name, method in METHODS.items()}
    names = list(METHODS)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            diff = outputs[first] - outputs[second]
            lower_diff = lower_outputs[first] - lower_outputs[second]
            print(f"     max |{first} - {second}|: {np.max(np.abs(diff)) * 32768:9.3f} LSB, RMS "
                  f"{db(np.std(diff) / np.std(outputs[first])):6.1f} dB; on the part below 7.3 kHz "
                  f"{np.max(np.abs(lower_diff)) * 32768:8.3f} LSB")

    print(f"\n5. Time per hour of 48 kHz mono audio ({args.repeats} x {args.seconds:.0f} s, one core)")
    long_signal = np.tile(signal, int(np.ceil(args.seconds / 10.0)))[: int(args.seconds * IN_RATE)]
    timings = Timings()
    tasks = {}
    for name, method in METHODS.items():
        for dtype in (np.float64, np.float32):
            data = long_signal.astype(dtype)
            key = f"{name}, {np.dtype(dtype).name}"

            def task(method: Resampler = method, data: np.ndarray = data, key: str = key) -> None:
                with timings.measure(key):
                    method(data)

            tasks[key] = task
    round_robin(args.repeats, tasks)
    for key in tasks:
        per_hour = timings.median(key) * 3600 / args.seconds
        print(f"{key:42s} {per_hour:7.2f} s per hour (min {timings.minimum(key) * 3600 / args.seconds:.2f})")
    print(f"\nload average at the end: {load_average()}")


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"done in {time.perf_counter() - started:.1f} s")
