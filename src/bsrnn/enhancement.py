"""Enhancing audio with a trained generator: checkpoints to models, waveforms to waveforms.

Long inputs are processed in overlapping chunks joined by a raised-cosine cross-fade, so memory
stays bounded whatever the file length. The network normalises over the whole input it sees
(its GroupNorms have one group, time included), so a chunked result differs slightly from a
whole-file one; inputs up to ``chunk_seconds`` are processed whole and match it exactly.
As in the reference evaluation, the input is reflect-padded by one hop on both sides before
the STFT and the padding removed after the inverse STFT.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bsrnn.audio import HOP_LENGTH, SAMPLE_RATE, istft, resample, stft
from bsrnn.checkpoint import load_checkpoint
from bsrnn.errors import UserError
from bsrnn.models import BSRNN

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedGenerator:
    model: BSRNN
    path: Path
    epoch: int
    config: dict[str, Any]


def load_generator(location: Path | str, which: str = "auto", device: str | torch.device = "cpu") -> LoadedGenerator:
    """The generator of a checkpoint file or run directory, verified, in eval mode."""
    loaded = load_checkpoint(location, which)
    weights = loaded.get("model_state_dict")
    if not weights:
        raise UserError(f"{loaded.path} holds no generator weights (model_state_dict)")
    config = loaded.get("config") or {}
    model = BSRNN(num_channel=int(config.get("num_channel", 64)), num_layer=int(config.get("num_layer", 5)))
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        raise UserError(f"{loaded.path}: generator weights do not fit BSRNN{model.config()}: {error}") from error
    model.to(device).eval()
    return LoadedGenerator(model, loaded.path, int(loaded.get("epoch", -1)), dict(config))


@torch.no_grad()
def enhance_segment(model: BSRNN, audio: np.ndarray, device: torch.device | str = "cpu") -> np.ndarray:
    """Enhance one mono 16 kHz segment as a whole (reference evaluation: reflect pad one hop)."""
    length = audio.shape[-1]
    signal = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)).to(device)[None]
    pad = HOP_LENGTH if length > HOP_LENGTH else 0
    padded = torch.nn.functional.pad(signal[None], (pad, pad), mode="reflect")[0] if pad else signal
    estimate = istft(model(stft(padded)), length=padded.shape[-1])
    return estimate[0, pad : pad + length].cpu().numpy()


def enhance_waveform(model: BSRNN, audio: np.ndarray, device: torch.device | str = "cpu",
                     chunk_seconds: float = 30.0, overlap_seconds: float = 1.0) -> np.ndarray:
    """Enhance a mono 16 kHz signal of any length in overlapping chunks (see module docstring)."""
    audio = np.asarray(audio, dtype=np.float32)
    chunk = int(chunk_seconds * SAMPLE_RATE)
    overlap = int(overlap_seconds * SAMPLE_RATE)
    if audio.shape[-1] <= chunk:
        return enhance_segment(model, audio, device)
    hop = chunk - overlap
    output = np.zeros_like(audio)
    weight = np.zeros_like(audio)
    fade = 0.5 - 0.5 * np.cos(np.pi * (np.arange(overlap) + 0.5) / overlap)
    start = 0
    while True:
        stop = min(start + chunk, audio.shape[-1])
        piece = enhance_segment(model, audio[start:stop], device)
        window = np.ones(stop - start, dtype=np.float32)
        if start > 0:
            window[:overlap] = fade
        if stop < audio.shape[-1]:
            window[-overlap:] = fade[::-1]
        output[start:stop] += piece * window
        weight[start:stop] += window
        if stop == audio.shape[-1]:
            break
        start += hop
    return output / np.maximum(weight, 1e-8)


def enhance_audio(model: BSRNN, audio: np.ndarray, rate: int, device: torch.device | str = "cpu") -> np.ndarray:
    """Any rate, mono [samples] or multi-channel [channels, samples]: same shape and rate out."""
    channels = audio[None] if audio.ndim == 1 else audio
    enhanced = []
    for channel in channels:
        mono = resample(channel, rate, SAMPLE_RATE) if rate != SAMPLE_RATE else channel
        result = enhance_waveform(model, mono, device)
        if rate != SAMPLE_RATE:
            result = resample(result, SAMPLE_RATE, rate)
            result = _fit_length(result, channel.shape[-1])
        enhanced.append(result)
    stacked = np.stack(enhanced)
    return stacked[0] if audio.ndim == 1 else stacked


def _fit_length(audio: np.ndarray, length: int) -> np.ndarray:
    if audio.shape[-1] >= length:
        return audio[..., :length]
    return np.pad(audio, (0, length - audio.shape[-1]))
