"""The audio front end: STFT/iSTFT, power-law magnitude compression and wav I/O.

Everything here reproduces the reference recipe's signal processing bit for bit: a 512-point
STFT with hop 128 and a periodic Hann window (``torch.hann_window(512)``), centred frames
(torch's default ``center=True``, reflect padding), one-sided complex output of 257 bins.
A 2 s crop of 32000 samples therefore has ``32000 // 128 + 1 = 251`` frames, and
``istft`` without ``length`` returns ``128 * (frames - 1)`` samples (32000 again).

WAV files are read as float32 in [-1, 1] (what the reference got from ``librosa.load`` at
16 kHz) and written as 16-bit PCM by default, the format VoiceBank+DEMAND ships in and the one
every PESQ/STOI tool reads; pass ``subtype="FLOAT"`` to keep float samples exactly.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile
import torch

from bsrnn.errors import DataError

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
"""The rate the models are trained at; every corpus file must have it."""
N_FFT = 512
HOP_LENGTH = 128
NUM_BINS = N_FFT // 2 + 1
COMPRESSION_EXPONENT = 0.3
MAGNITUDE_FLOOR = 1e-10
"""Added before the power law so that its gradient at silent bins stays finite."""


@functools.lru_cache(maxsize=16)
def _cached_window(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.hann_window(N_FFT, device=device, dtype=dtype)


def hann_window(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The periodic 512-point Hann window on ``device``, built once per (device, dtype).

    The cached tensor is shared: treat it as read-only.
    """
    return _cached_window(torch.device(device), dtype)


def stft(audio: torch.Tensor) -> torch.Tensor:
    """Complex spectrogram [..., 257, frames] of real audio [..., samples].

    Exactly ``torch.stft(x, 512, 128, window=hann(512), onesided=True, return_complex=True)``
    with torch's default ``center=True``, so frame ``t`` is centred on sample ``128 * t``.
    Leading dimensions are flattened for torch.stft (which takes at most one) and restored.
    """
    if audio.dim() == 0:
        raise ValueError("stft expects audio shaped [..., samples], got a scalar")
    lead = audio.shape[:-1]
    flat = audio.reshape(-1, audio.shape[-1]) if audio.dim() > 2 else audio
    spec = torch.stft(
        flat,
        N_FFT,
        HOP_LENGTH,
        window=hann_window(audio.device, audio.dtype),
        onesided=True,
        return_complex=True,
    )
    return spec.reshape(*lead, *spec.shape[-2:]) if audio.dim() > 2 else spec


def istft(spec: torch.Tensor, length: int | None = None) -> torch.Tensor:
    """Audio [..., samples] from a complex spectrogram [..., 257, frames]; inverse of ``stft``.

    Without ``length`` the result has ``128 * (frames - 1)`` samples, as in the reference;
    pass the original length to trim or pad to it exactly.
    """
    if spec.dim() < 2:
        raise ValueError(f"istft expects a spectrogram shaped [..., 257, frames], got {tuple(spec.shape)}")
    lead = spec.shape[:-2]
    flat = spec.reshape(-1, *spec.shape[-2:]) if spec.dim() > 3 else spec
    real_dtype = spec.real.dtype if spec.is_complex() else spec.dtype
    audio = torch.istft(
        flat,
        N_FFT,
        HOP_LENGTH,
        window=hann_window(spec.device, real_dtype),
        onesided=True,
        length=length,
    )
    return audio.reshape(*lead, audio.shape[-1]) if spec.dim() > 3 else audio


def compress_magnitude(spec: torch.Tensor) -> torch.Tensor:
    """Power-law compressed magnitude ``(|spec| + 1e-10) ** 0.3``, shaped [B, 1, 257, T].

    This is the representation the reference feeds its metric discriminator and its
    magnitude loss: the exponent 0.3 lifts quiet bins so that they are not ignored next to
    loud ones. The channel axis added here is the discriminator's input channel.
    """
    if spec.dim() != 3:
        raise ValueError(f"compress_magnitude expects a spectrogram [B, 257, T], got {tuple(spec.shape)}")
    return (spec.abs().unsqueeze(1) + MAGNITUDE_FLOOR) ** COMPRESSION_EXPONENT


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Samples and rate of an audio file: float32 [samples] if mono, else [channels, samples].

    Raises DataError naming the file when it cannot be read or decoded.
    """
    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.SoundFileError, RuntimeError, OSError) as error:
        raise DataError(
            f"Cannot read audio file {path}: expected a readable WAV file, found: {error}. "
            "Fix: check that the file exists, is readable and is a valid WAV, or remove it."
        ) from error
    channels_first = np.ascontiguousarray(samples.T)
    return (channels_first[0] if channels_first.shape[0] == 1 else channels_first), int(rate)


class Truncation(NamedTuple):
    """How many sample frames a WAV header promises and how many the file holds."""

    claimed_frames: int
    present_frames: int


_UNKNOWN_DATA_SIZES = (0, 0xFFFFFFFF)
"""Data-chunk sizes that streaming writers leave when they cannot seek back: no promise."""


def wav_truncation(path: str | Path) -> Truncation | None:
    """The shortfall of a little-endian RIFF WAV cut short (an interrupted copy), else None.

    libsndfile reads whatever samples are there without a word, so a truncated copy would pass
    as a shorter clip (or, cut inside the header, as one with no samples). Only the chunk
    headers are read. Files that are not RIFF WAV, and data sizes a streaming writer leaves
    (0 or 0xFFFFFFFF), give None; so does a header too damaged to walk, which decoding reports.
    """
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        head = handle.read(12)
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        block_align = 0
        position = 12
        while position + 8 <= size:
            handle.seek(position)
            chunk = handle.read(8)
            name, length = chunk[:4], int.from_bytes(chunk[4:8], "little")
            if name == b"fmt ":
                fmt = handle.read(14)
                block_align = int.from_bytes(fmt[12:14], "little") if len(fmt) == 14 else 0
            elif name == b"data":
                present = size - (position + 8)
                if length in _UNKNOWN_DATA_SIZES or length <= present or block_align <= 0:
                    return None
                return Truncation(length // block_align, present // block_align)
            position += 8 + length + (length & 1)
    return None


def write_wav(path: str | Path, audio: np.ndarray | torch.Tensor, rate: int, subtype: str = "PCM_16") -> None:
    """Write ``audio`` ([samples] or [channels, samples], float in [-1, 1]) to ``path``.

    The default 16-bit PCM matches the corpus files and every scoring tool; samples beyond
    [-1, 1] are clipped then, and a warning names the file (a silent clip would hide a level
    problem). ``subtype="FLOAT"`` stores float32 samples unchanged. Only ``path`` is written.
    """
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().numpy()
    samples = np.asarray(audio, dtype=np.float32)
    if samples.ndim not in (1, 2):
        raise ValueError(f"write_wav expects audio [samples] or [channels, samples], got {samples.shape}")
    if subtype.upper().startswith("PCM"):
        clipped = int(np.count_nonzero(np.abs(samples) > 1.0))
        if clipped:
            logger.warning("%s: %d samples beyond [-1, 1] were clipped when writing %s", path, clipped, subtype)
            samples = np.clip(samples, -1.0, 1.0)
    frames_first = samples.T if samples.ndim == 2 else samples
    soundfile.write(str(path), frames_first, int(rate), subtype=subtype)


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """``audio`` ([samples] or [channels, samples]) resampled along its last axis, as float32.

    Uses a polyphase filter (scipy.signal.resample_poly) with the ratio reduced by the
    greatest common divisor, e.g. 44100 -> 16000 is up 160, down 441.
    """
    samples = np.asarray(audio, dtype=np.float32)
    if from_rate == to_rate:
        return samples
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
    from scipy.signal import resample_poly  # imported here: scipy.signal costs ~1 s at every start-up

    divisor = math.gcd(int(from_rate), int(to_rate))
    result = resample_poly(samples, int(to_rate) // divisor, int(from_rate) // divisor, axis=-1)
    return result.astype(np.float32, copy=False)
