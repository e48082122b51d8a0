"""Enhancing a 16 kHz signal as it arrives: samples in, enhanced samples out, 40 ms later.

``WaveformStream`` takes a mono signal in chunks of any size and returns, from each chunk, the
enhanced samples that are final; ``flush`` returns the rest. Concatenated, the outputs have the
input's length and equal what ``bsrnn.enhancement.enhance_segment`` gives for the whole signal
(the offline path: reflect pad one hop, centred STFT, network, inverse STFT, pad removed), up to
float32 rounding. Only a causal model (``BSRNN(causal=True)``) can stream: the reference model
normalises with statistics of the whole signal.

The framing is the offline one, computed without looking further ahead than it must:

- The analysis signal ``Q`` is the input reflect-padded by one hop (128 samples) and then by half
  a window (256, ``torch.stft``'s ``center=True``) at both ends. Its left padding depends only
  on input samples 1..128, so it is built as soon as 129 samples have arrived; its right padding
  only on the last 129, so it is built by ``flush``. Frame ``t`` is ``Q[128 t : 128 t + 512]``,
  computed (``torch.stft`` on exactly those samples) as soon as they are there.
- The network runs on each new block of frames, carrying its LSTM states and running moments
  (``bsrnn.models.streaming.SpectrumStream``; the network is a PyTorch ``BSRNN`` or an exported
  model's streaming step in ONNX Runtime, ``bsrnn.onnx_model``); enhanced frame ``t`` is final one
  frame later, when the three-tap mask's next frame is known.
- Synthesis is ``torch.istft``'s: each enhanced frame's inverse FFT, windowed, is added into an
  overlap-add buffer together with the squared window, and a sample is divided by its window
  sum once no later frame can reach it.

Latency: output sample ``n`` is final once input sample ``n + 639`` has arrived (``n`` a multiple
of 128; the other samples of its hop need less): the 512-sample analysis window, plus one hop for
the mask's look-ahead frame, less one sample. ``LATENCY_SAMPLES`` (640 samples, 40 ms) is what a
real-time system must budget, before computing time.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch

from bsrnn.audio import HOP_LENGTH, N_FFT, SAMPLE_RATE, hann_window
from bsrnn.errors import DataError
from bsrnn.models import BSRNN
from bsrnn.models.streaming import MaskStep, SpectrumStream

LATENCY_SAMPLES = N_FFT + HOP_LENGTH
"""Algorithmic latency of a stream at 16 kHz: the analysis window plus the mask's one-frame look-ahead."""
LATENCY_MS = 1000.0 * LATENCY_SAMPLES / SAMPLE_RATE
EDGE_PAD = HOP_LENGTH + N_FFT // 2
"""Samples of padding before the signal in ``Q`` (one hop, then half a window), and after it."""
REFLECTED = HOP_LENGTH + 1
"""Input samples the padding at one end is reflected from (the end sample and 128 beside it)."""


def reflect_padding(edge: np.ndarray, side: str) -> np.ndarray:
    """The ``EDGE_PAD`` samples ``Q`` has before (``side="left"``) or after the signal, from the
    signal's first or last ``REFLECTED`` samples: the two reflect pads of the offline path."""
    signal = torch.from_numpy(np.ascontiguousarray(edge, dtype=np.float32))[None, None]
    pads = ((HOP_LENGTH, 0), (N_FFT // 2, 0)) if side == "left" else ((0, HOP_LENGTH), (0, N_FFT // 2))
    for pad in pads:
        signal = torch.nn.functional.pad(signal, pad, mode="reflect")
    padded = signal[0, 0].numpy()
    return padded[:EDGE_PAD] if side == "left" else padded[-EDGE_PAD:]


class WaveformStream:
    """A causal network enhancing one mono 16 kHz signal chunk by chunk (see the module docstring).

    ``network`` is the network to run: a float32 ``BSRNN`` in eval mode or its int8 copy, or any
    ``MaskStep`` made for this stream (``bsrnn.onnx_model.OnnxMaskStep``: ONNX Runtime); ``context``
    what each call of a ``BSRNN`` runs under (a bfloat16 autocast for ``bf16``).
    """

    def __init__(self, network: BSRNN | MaskStep, device: torch.device | str = "cpu",
                 context: Callable[[], AbstractContextManager[object]] = nullcontext) -> None:
        self.frames = SpectrumStream(network, context)  # refuses a non-causal model
        self.device = torch.device(device)
        self.window = hann_window(self.device)
        self.window_squared = self.window.cpu().numpy() ** 2
        self.received = 0  # input samples so far
        self.head: list[np.ndarray] | None = []  # the first samples, until the left padding is built
        self.analysis = np.zeros(0, dtype=np.float32)  # Q from index analysis_start on
        self.analysis_start = 0
        self.analysed = 0  # frames computed
        self.synthesis = np.zeros(0, dtype=np.float32)  # overlap-add of enhanced frames, from synthesis_start
        self.envelope = np.zeros(0, dtype=np.float32)  # the squared windows added there
        self.synthesis_start = 0
        self.synthesized = 0  # enhanced frames added
        self.emitted = 0  # output samples returned
        self.finished = False

    def process(self, chunk: np.ndarray) -> np.ndarray:
        """The enhanced samples made final by ``chunk`` (the signal's next samples; may be empty)."""
        if self.finished:
            raise RuntimeError("this stream was flushed: start a new one for the next signal")
        chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)
        self.received += len(chunk)
        if self.head is not None:  # the left padding is not built yet
            self.head.append(chunk)
            if self.received < REFLECTED:
                return np.zeros(0, dtype=np.float32)
            chunk = np.concatenate(self.head)
            self.head = None
            chunk = np.concatenate([reflect_padding(chunk[:REFLECTED], "left"), chunk])
        return self._analyse(chunk)

    def flush(self) -> np.ndarray:
        """The rest of the enhanced signal: with what ``process`` returned, the input's length.

        A signal shorter than one 512-sample frame (32 ms) cannot be enhanced: DataError, as the
        offline path refuses it.
        """
        if self.finished:
            raise RuntimeError("this stream was flushed already")
        self.finished = True
        if self.received < N_FFT:
            raise DataError(f"the stream: expected at least {N_FFT} samples ({1000 * N_FFT / SAMPLE_RATE:.0f} ms, "
                            f"one STFT frame), found {self.received}. Fix: enhance longer signals")
        # The analysis buffer ends with at least 384 input samples (less than a frame beyond the
        # last frame's start, at least one hop less than that): the right padding's source.
        out = self._analyse(reflect_padding(self.analysis[-REFLECTED:], "right"))
        last = self.frames.flush()
        final = self._overlap_add(last) if last is not None else np.zeros(0, dtype=np.float32)
        # Every frame is in: the rest of the signal is final.
        return np.concatenate([out, final, self._emit(EDGE_PAD + self.received)])

    def _analyse(self, samples: np.ndarray) -> np.ndarray:
        """Append analysis samples, enhance every frame they complete, return the output now final."""
        self.analysis = np.concatenate([self.analysis, samples])
        end = self.analysis_start + len(self.analysis)
        count = (end - N_FFT - HOP_LENGTH * self.analysed) // HOP_LENGTH + 1
        if count <= 0:
            return np.zeros(0, dtype=np.float32)
        first = HOP_LENGTH * self.analysed - self.analysis_start
        span = self.analysis[first : first + N_FFT + HOP_LENGTH * (count - 1)]
        signal = torch.from_numpy(np.ascontiguousarray(span)).to(self.device)
        spectrum = torch.stft(signal, N_FFT, HOP_LENGTH, window=self.window, center=False, onesided=True,
                              return_complex=True)  # [257, count]
        self.analysed += count
        keep_from = HOP_LENGTH * self.analysed - self.analysis_start  # the next frame's first sample
        self.analysis = self.analysis[keep_from:]
        self.analysis_start += keep_from
        return self._overlap_add(self.frames.push(spectrum[None]))

    def _overlap_add(self, enhanced: torch.Tensor) -> np.ndarray:
        """Add the next enhanced frames ``[1, 257, n]`` to the synthesis; return the output now final."""
        count = enhanced.shape[-1]
        if count == 0:
            return np.zeros(0, dtype=np.float32)
        pieces = (torch.fft.irfft(enhanced[0], n=N_FFT, dim=0) * self.window[:, None]).cpu().numpy()
        needed = HOP_LENGTH * (self.synthesized + count - 1) + N_FFT - self.synthesis_start
        grow = needed - len(self.synthesis)
        if grow > 0:
            self.synthesis = np.concatenate([self.synthesis, np.zeros(grow, dtype=np.float32)])
            self.envelope = np.concatenate([self.envelope, np.zeros(grow, dtype=np.float32)])
        for index in range(count):
            start = HOP_LENGTH * (self.synthesized + index) - self.synthesis_start
            self.synthesis[start : start + N_FFT] += pieces[:, index]
            self.envelope[start : start + N_FFT] += self.window_squared
        self.synthesized += count
        # A sample is final once no later frame can reach it: before the next frame's start.
        return self._emit(HOP_LENGTH * self.synthesized)

    def _emit(self, final_end: int) -> np.ndarray:
        """The output up to synthesis index ``final_end`` not returned yet, divided by its window sum.

        The offline output is ``synthesis[EDGE_PAD : EDGE_PAD + length]`` (the padding removed).
        """
        start = EDGE_PAD + self.emitted
        stop = min(final_end, EDGE_PAD + self.received)
        if stop <= start:
            return np.zeros(0, dtype=np.float32)
        begin, end = start - self.synthesis_start, stop - self.synthesis_start
        out = self.synthesis[begin:end] / self.envelope[begin:end]
        self.emitted += stop - start
        self.synthesis, self.envelope = self.synthesis[end:], self.envelope[end:]
        self.synthesis_start = stop
        return out
