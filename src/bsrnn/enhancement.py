"""Enhancing audio with a trained generator: checkpoints to models, waveforms to waveforms.

As in the reference evaluation, a signal is reflect-padded by one hop on both sides before the
STFT and the padding removed after the inverse STFT. Signals up to ``chunk_seconds`` (30 s by
default, longer than any utterance of the usual test sets) are processed whole, exactly as
the reference does.

Longer signals are cut into equal chunks of ``chunk_seconds`` overlapping by at least
``overlap_seconds`` (the last chunk is moved back to end with the signal, so none is padded).
Several chunks can go through the network in one forward pass (``batch_seconds``), and
neighbours are joined by a raised-cosine cross-fade centred in their common part.

Chunked output is NOT the whole-signal output, and cannot be made so: every GroupNorm of the
network has one group, so its statistics span the whole input, time included; a chunk
normalises with its own statistics, and the time LSTMs start each chunk from a zero state.
Measured with ``benchmarks/enhance.py`` on 64 s of speech-like audio (16 different
utterances with noise), default model (N 64, L 5), overlap 1 s, on samples more than 1 s from
any chunk edge (SNR = whole-signal output power / power of the difference)::

    chunk   random weights: max |diff|, SNR    fixture weights (reference_default.pt)
     4 s           14 % of peak, 12.4 dB             9.4 % of peak, 13.8 dB
     8 s           27 % of peak, 17.2 dB              16 % of peak, 18.8 dB
    16 s           16 % of peak, 20.9 dB             9.9 % of peak, 22.9 dB
    30 s          8.7 % of peak, 24.7 dB             4.9 % of peak, 26.9 dB

The difference shrinks by about 4 dB per doubling of the chunk; agreement within 1e-4 of the
peak would take chunks of days, i.e. whole-file processing. 30 s is the default: ~25 dB from
the whole-signal output away from seams; a 60-minute file then peaks at 0.88 GiB resident on
CPU (0.30 GiB torch and the model, 0.43 GiB input and output arrays, ~0.15 GiB for one 30 s
chunk's activations), under the 1 GiB budget; and the utterances of the usual test sets are
shorter, so evaluation stays exact.

On CPU one chunk per forward pass is the default: four 30 s chunks per pass measured RTF
0.425 against 0.397 on one thread and 0.188 against 0.196 on two (5 min and 2 min of audio),
i.e. no gain: oneDNN's LSTM is as fast per sequence at 31 sequences as at 248 (and the
generator groups LSTM rows on CPU anyway, see ``bsrnn.models.bsrnn.ResidualRNNLayer``), while
each extra chunk costs ~0.15 GiB. On GPU, where the sequential LSTM steps rather than the
arithmetic bound the speed, 300 s per pass runs 10 chunks side by side (an expectation, not
measured: no GPU was available).
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

DEFAULT_CHUNK_SECONDS = 30.0
DEFAULT_OVERLAP_SECONDS = 1.0
DEFAULT_BATCH_SECONDS = {"cpu": DEFAULT_CHUNK_SECONDS, "cuda": 300.0}
"""Audio per forward pass (rounded down to whole chunks) by device type; others use the CPU's."""


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


def chunk_starts(length: int, chunk: int, hop: int) -> list[int]:
    """Start samples of equal-length chunks covering ``length`` samples, ``hop`` apart.

    The last chunk is moved back to end exactly at ``length`` (so it overlaps its neighbour by
    ``chunk - hop`` samples or more): every chunk has the same length and none is padded, which
    would feed the network's whole-chunk normalisation with made-up samples.
    """
    if length <= chunk:
        return [0]
    return list(range(0, length - chunk, hop)) + [length - chunk]


def _cross_fade_windows(starts: list[int], chunk: int, overlap: int) -> list[tuple[int, int, np.ndarray | None, np.ndarray | None]]:
    """For each chunk: the span it owns and the fades at its two ends.

    Between chunks k and k+1 the fade region (``overlap`` samples, raised cosine) is centred in
    their common part, so each chunk's output is used at least ``(common - overlap) / 2``
    samples away from its own edges, where the zero initial LSTM state and the reflect padding
    matter. Fade-in and fade-out add up to one, so no normalisation pass is needed.
    Returns ``(first, stop, fade_in, fade_out)`` per chunk: samples ``first..stop`` (absolute)
    are written, the first ``len(fade_in)`` of them faded in, the last ``len(fade_out)`` out.
    """
    ramp = (0.5 - 0.5 * np.cos(np.pi * (np.arange(overlap) + 0.5) / overlap)).astype(np.float32)
    fades = []
    for index, start in enumerate(starts):
        first, fade_in = start, None
        if index > 0:
            previous_end = starts[index - 1] + chunk
            first = (start + previous_end) // 2 - overlap // 2
            fade_in = ramp
        stop, fade_out = start + chunk, None
        if index + 1 < len(starts):
            middle = (starts[index + 1] + start + chunk) // 2
            stop = middle - overlap // 2 + overlap
            fade_out = np.float32(1.0) - ramp
        fades.append((first, stop, fade_in, fade_out))
    return fades


@torch.no_grad()
def enhance_batch(model: BSRNN, segments: np.ndarray, device: torch.device | str = "cpu") -> np.ndarray:
    """Enhance equal-length mono segments ``[chunks, samples]`` in one forward pass.

    Each row is treated exactly like ``enhance_segment`` treats one signal (reflect pad one hop,
    STFT, network, inverse STFT); rows do not interact (every norm is per example).
    """
    signal = torch.from_numpy(np.ascontiguousarray(segments, dtype=np.float32)).to(device)
    length = signal.shape[-1]
    pad = HOP_LENGTH if length > HOP_LENGTH else 0
    if pad:
        signal = torch.nn.functional.pad(signal[:, None], (pad, pad), mode="reflect")[:, 0]
    estimate = istft(model(stft(signal)), length=signal.shape[-1])
    return estimate[:, pad : pad + length].cpu().numpy()


def enhance_waveform(model: BSRNN, audio: np.ndarray, device: torch.device | str = "cpu",
                     chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
                     overlap_seconds: float = DEFAULT_OVERLAP_SECONDS,
                     batch_seconds: float | None = None) -> np.ndarray:
    """Enhance a mono 16 kHz signal of any length (see the module docstring for the chunking).

    Signals up to ``chunk_seconds`` are processed whole. Longer ones are cut into chunks of
    ``chunk_seconds`` that overlap by at least ``overlap_seconds``; as many chunks as fit in
    ``batch_seconds`` of audio go through the network in one forward pass (bigger matrix
    products per LSTM step, bounded memory; default by device, ``DEFAULT_BATCH_SECONDS``),
    and neighbours are joined by a raised-cosine cross-fade of ``overlap_seconds``. Returns
    float32 of the input's length.
    """
    audio = np.asarray(audio, dtype=np.float32)
    chunk = int(chunk_seconds * SAMPLE_RATE)
    overlap = int(overlap_seconds * SAMPLE_RATE)
    if not 0 < overlap < chunk:
        raise ValueError(f"need 0 < overlap_seconds < chunk_seconds, got {overlap_seconds} and {chunk_seconds}")
    length = audio.shape[-1]
    if length <= chunk:
        return enhance_segment(model, audio, device)
    starts = chunk_starts(length, chunk, chunk - overlap)
    windows = _cross_fade_windows(starts, chunk, overlap)
    if batch_seconds is None:
        kind = torch.device(device).type
        batch_seconds = DEFAULT_BATCH_SECONDS.get(kind, DEFAULT_BATCH_SECONDS["cpu"])
    per_batch = max(1, int(batch_seconds // chunk_seconds))
    output = np.empty(length, dtype=np.float32)
    pending_fade: np.ndarray | None = None  # the previous chunk's faded-out tail
    for first_chunk in range(0, len(starts), per_batch):
        batch = starts[first_chunk : first_chunk + per_batch]
        pieces = enhance_batch(model, np.stack([audio[start : start + chunk] for start in batch]), device)
        for index, (start, piece) in enumerate(zip(batch, pieces), start=first_chunk):
            first, stop, fade_in, fade_out = windows[index]
            part = piece[first - start : stop - start]
            if fade_in is not None:
                assert pending_fade is not None, "chunks are joined in order"
                part[: len(fade_in)] *= fade_in
                part[: len(fade_in)] += pending_fade
            if fade_out is not None:
                pending_fade = part[-len(fade_out) :] * fade_out
                part = part[: -len(fade_out)]
            output[first : first + len(part)] = part
    return output


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
    if audio.ndim == 1:
        return enhanced[0]  # no stacking copy: for an hour of mono audio that is 230 MB more
    return np.stack(enhanced)


def _fit_length(audio: np.ndarray, length: int) -> np.ndarray:
    if audio.shape[-1] >= length:
        return audio[..., :length]
    return np.pad(audio, (0, length - audio.shape[-1]))
