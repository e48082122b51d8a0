"""Synthetic test signals shared by the metric tests (kept tiny and deterministic)."""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

SAMPLE_RATE = 16000


def speech_like(seed: int, seconds: float = 1.0) -> np.ndarray:
    """Pulse train at a gliding pitch through two formants: enough for PESQ to find speech."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    pitch_hz = 120 + 20 * seed + 30 * np.sin(2 * np.pi * 1.3 * t)
    source = np.diff(np.floor(np.cumsum(pitch_hz) / SAMPLE_RATE), prepend=0.0)
    source = lfilter([1.0], [1.0, -0.9], source) + 0.05 * rng.standard_normal(n)
    speech = np.zeros(n)
    for centre, width in ((500 + 50 * seed, 90), (1500 + 100 * seed, 150)):
        radius = np.exp(-np.pi * width / SAMPLE_RATE)
        speech += lfilter([1 - radius], [1, -2 * radius * np.cos(2 * np.pi * centre / SAMPLE_RATE),
                                         radius**2], source)
    speech *= 0.3 + 0.7 * np.sin(np.pi * 3 * t) ** 2
    return (0.5 * speech / np.max(np.abs(speech))).astype(np.float32)
