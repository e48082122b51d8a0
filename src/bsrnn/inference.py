"""The Python inference API: a trained generator as an object that enhances numpy arrays.

```python
from bsrnn import Enhancer

enhancer = Enhancer.load("runs/ab5")          # run directory, checkpoint, .safetensors bundle or .onnx
clean = enhancer.enhance(noisy, rate)         # same rate, shape and length out
stream = enhancer.stream(rate)                # causal models only (a checkpoint, bundle or .onnx)
out = stream.process(chunk)                   # any chunk size; returns what is final
out = stream.flush()                          # the rest
enhancer.latency_ms                           # 40.0 for a causal model, None otherwise
```

``bsrnn enhance`` is this class on files: the same loading (``enhancement.load_generator``:
which checkpoint, verification, precision), the same offline path (``enhancement.enhance_audio``:
30 s chunks, resampling to 16 kHz and back, every channel on its own, refusals), and with
``--stream`` the same streaming path (``Enhancer.enhance(..., streaming=True)``).

Arrays: float samples in [-1, 1], mono ``[samples]`` or ``[channels, samples]`` (each channel
enhanced on its own, as the command does for multi-channel files). An array shaped
``[samples, channels]`` (what ``soundfile.read`` returns) has more rows than columns and is refused
with the fix (``audio.T``): guessing the orientation would enhance the wrong axis of a short clip.
A stream is mono; stream each channel through its own ``stream()``.

Streams: only a causal model (trained with ``causal = true``) can run as a stream; the reference
model normalises with statistics of the whole signal. A causal ``.onnx`` model streams through its
streaming step in ONNX Runtime (``bsrnn.onnx_model``), in the same stream code as a PyTorch model.
At 16 kHz a stream's output equals the offline output of the whole signal up to float32 rounding,
with 40 ms of algorithmic latency (``bsrnn.streaming``); ``enhance`` cuts signals longer than 30 s into cross-faded chunks, so
there the stream, not ``enhance``, is the whole-signal output. At any other rate it resamples the chunks with libsoxr's streaming
resampler on the way in and out (exact for a signal taken whole, but a different filter from
the offline path's polyphase one), which adds its own delay to the latency.

Errors are ``bsrnn.errors.UserError`` (``DataError`` for the audio itself) and the checkpoint
engine's ``CheckpointError``s, with messages in this API's terms.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch

from bsrnn.audio import HOP_LENGTH, SAMPLE_RATE
from bsrnn.enhancement import (
    DEFAULT_PRECISION,
    LoadedGenerator,
    check_input_audio,
    check_precision,
    enhance_audio,
    load_generator,
)
from bsrnn.errors import UserError
from bsrnn.models import BSRNN
from bsrnn.models.streaming import MaskStep, TorchMaskStep
from bsrnn.onnx_model import OnnxSpectrumEnhancer, require
from bsrnn.streaming import LATENCY_MS, WaveformStream

LOAD_CHOICES = ("auto", "best", "last")
STREAM_CHUNK = HOP_LENGTH
"""Samples per ``process`` call when ``enhance(..., streaming=True)`` feeds a whole signal to a stream:
one hop, as a real-time system would."""


class Enhancer:
    """A trained generator, loaded and verified once, enhancing arrays (see the module docstring)."""

    def __init__(self, generator: LoadedGenerator, device: str | torch.device = "cpu") -> None:
        self.generator = generator
        self.device = torch.device(device)

    @classmethod
    def load(cls, location: str | Path, load: str = "auto", device: str | torch.device = "cpu",
             precision: str = DEFAULT_PRECISION) -> Enhancer:
        """The generator of a run directory, checkpoint file or ``.safetensors`` bundle.

        ``load`` chooses within a run directory: ``auto`` (``checkpoint_best.pt`` if it verifies,
        else ``checkpoint_last.pt``), ``best`` or ``last``. ``precision``: ``fp32`` (the network
        as trained), ``bf16`` (bfloat16 autocast; a GPU or a CPU with bfloat16 instructions) or
        ``int8`` (dynamic quantization; CPU only). Every file is verified before it is used.
        """
        if load not in LOAD_CHOICES:
            raise UserError(f"load {load!r}: expected one of {', '.join(LOAD_CHOICES)}. "
                            "Fix: use auto (the best checkpoint if it verifies, else the last), best or last")
        check_precision(precision, device)
        return cls(load_generator(location, load, device, precision), device)

    @property
    def causal(self) -> bool:
        """Whether the model is causal: it can stream (``stream``), with ``latency_ms`` latency."""
        return self.generator.causal

    @property
    def latency_ms(self) -> float | None:
        """Algorithmic latency of ``stream`` at 16 kHz in milliseconds: 40.0 (the 32 ms analysis
        window and the mask's 8 ms look-ahead frame); None for a non-causal model, whose output
        at any moment depends on the whole signal."""
        return LATENCY_MS if self.causal else None

    @property
    def precision(self) -> str:
        return self.generator.precision

    def describe(self) -> str:
        """One line: which file, why it was chosen, how far its training got, the precision."""
        return self.generator.describe()

    def enhance(self, audio: np.ndarray, rate: int, *, pcs: bool = False, streaming: bool = False,
                source: str | Path = "the input audio") -> np.ndarray:
        """The enhanced ``audio``: float32, same rate, shape and length.

        ``pcs``: perceptual contrast stretching after the network (``bsrnn.pcs``), scaled back to
        the network output's peak. ``streaming``: feed the signal to ``stream`` one hop (128
        samples at 16 kHz) at a time, as a real-time system would (causal models only; without
        ``pcs``, whose level needs the whole signal). ``source``: what error messages call the
        audio (``bsrnn enhance`` passes the file's path).
        """
        audio = checked_array(audio, rate, source)
        if not streaming:
            return enhance_audio(self.generator.enhancer, audio, rate, self.device, where=source, pcs=pcs)
        if pcs:
            raise UserError(f"{source}: perceptual contrast stretching scales the whole signal to the network "
                            "output's peak, which a stream cannot know in advance. Fix: enhance without "
                            "streaming to use it, or leave it off")
        check_input_audio(audio, rate, source)
        chunk = max(1, STREAM_CHUNK * rate // SAMPLE_RATE)
        channels = []
        for channel in audio[None] if audio.ndim == 1 else audio:
            stream = self.stream(rate)
            pieces = [stream.process(channel[start : start + chunk]) for start in range(0, len(channel), chunk)]
            channels.append(np.concatenate([*pieces, stream.flush()]))
        return channels[0] if audio.ndim == 1 else np.stack(channels)

    def check_can_stream(self) -> None:
        """Refuse, with the reason, a model that cannot stream (a non-causal one, an ONNX file without a
        streaming step); cheap."""
        if not self.causal:
            raise UserError(
                f"{self.generator.path}: expected a causal model to stream, found the reference (non-causal) "
                "model: it normalises with statistics of the whole signal, so its output at any moment "
                "depends on the end of the recording. Fix: enhance the whole signal without streaming, or "
                "use a model trained with causal = true"
            )
        if self.generator.model is None and not getattr(self.generator.prepared, "can_stream", False):
            raise UserError(
                f"{self.generator.path}: expected an ONNX model with a streaming step, found a causal model "
                "exported without one (by a bsrnn from before ONNX streaming): ONNX Runtime can run it on whole "
                "spectrograms only. Fix: export the checkpoint again with this bsrnn, or stream with the "
                "checkpoint or bundle it was exported from"
            )
        if self.generator.model is None:
            require("onnx")  # builds the step from the file (stream_step_model): missing, say so now

    def stream(self, rate: int = SAMPLE_RATE) -> EnhancerStream:
        """A stream enhancing one mono signal at ``rate`` chunk by chunk; causal models only."""
        self.check_can_stream()
        check_rate(rate)
        return EnhancerStream(WaveformStream(self._mask_step(), self.device), rate)

    def _mask_step(self) -> MaskStep:
        """A fresh network step for one stream at this precision: the same arithmetic as
        ``prepare_for_inference`` gives the offline path; for an ONNX model, its streaming step in
        ONNX Runtime."""
        generator = self.generator
        if generator.model is None:  # an ONNX model (check_can_stream: with a streaming step)
            assert isinstance(generator.prepared, OnnxSpectrumEnhancer)
            return generator.prepared.stream_step()
        if generator.precision == "bf16":
            return TorchMaskStep(generator.model, partial(torch.autocast, self.device.type, dtype=torch.bfloat16))
        if generator.precision == "int8":
            assert isinstance(generator.prepared, BSRNN)  # the quantized copy
            return TorchMaskStep(generator.prepared)
        return TorchMaskStep(generator.model)


class EnhancerStream:
    """One mono signal at ``rate``, enhanced chunk by chunk (``Enhancer.stream``)."""

    def __init__(self, stream: WaveformStream, rate: int) -> None:
        self.inner = stream
        self.rate = rate
        self.received = 0
        self.returned = 0
        self.finished = False
        if rate == SAMPLE_RATE:
            self.to_model = self.from_model = None
        else:
            import soxr

            self.to_model = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32")
            self.from_model = soxr.ResampleStream(SAMPLE_RATE, rate, 1, dtype="float32")

    @property
    def latency_ms(self) -> float:
        """The model's algorithmic latency (40 ms); at a rate other than 16 kHz the resamplers add theirs."""
        return LATENCY_MS

    def process(self, chunk: np.ndarray) -> np.ndarray:
        """The enhanced samples that are final once ``chunk`` (the next samples, 1-D, any length) is in."""
        chunk = self._checked(chunk)
        self.received += len(chunk)
        if self.to_model is None:
            return self._counted(self.inner.process(chunk))
        enhanced = self.inner.process(self.to_model.resample_chunk(chunk))
        return self._counted(self.from_model.resample_chunk(enhanced))

    def flush(self) -> np.ndarray:
        """The rest of the enhanced signal: with everything ``process`` returned, the input's length."""
        if self.finished:
            raise UserError("this stream was flushed already. Fix: start a new stream for the next signal")
        self.finished = True
        if self.to_model is None:
            rest = self.inner.flush()
        else:
            enhanced = self.inner.process(self.to_model.resample_chunk(np.zeros(0, np.float32), last=True))
            enhanced = np.concatenate([enhanced, self.inner.flush()])
            rest = self.from_model.resample_chunk(enhanced, last=True)
        missing = self.received - self.returned  # resampling may round the count either way
        rest = rest[:missing] if len(rest) >= missing else np.pad(rest, (0, missing - len(rest)))
        return self._counted(rest)

    def _checked(self, chunk: np.ndarray) -> np.ndarray:
        if self.finished:
            raise UserError("this stream was flushed: it ended its signal. Fix: start a new stream for the next one")
        chunk = np.asarray(chunk)
        if chunk.ndim != 1 or not (np.issubdtype(chunk.dtype, np.floating) or chunk.size == 0):
            raise UserError(f"stream chunk: expected a 1-D array of float samples (mono), found shape "
                            f"{chunk.shape} of {chunk.dtype}. Fix: stream each channel through its own stream, "
                            "as float samples in [-1, 1]")
        if not np.isfinite(chunk).all():
            raise UserError("stream chunk: expected finite samples, found NaN or inf. Fix: replace them (e.g. "
                            "with zeros) before streaming")
        return chunk.astype(np.float32, copy=False)

    def _counted(self, out: np.ndarray) -> np.ndarray:
        # Never more than came in: resampling back may round one sample up before the end.
        out = out[: self.received - self.returned] if self.to_model is not None and not self.finished else out
        self.returned += len(out)
        return np.asarray(out, dtype=np.float32)


def check_rate(rate: int) -> None:
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise UserError(f"rate {rate!r}: expected the sample rate in Hz, a positive integer (e.g. 16000)")


def checked_array(audio: np.ndarray, rate: int, source: str | Path) -> np.ndarray:
    """``audio`` as float32 ``[samples]`` or ``[channels, samples]``; UserError naming what is wrong."""
    check_rate(rate)
    array = np.asarray(audio)
    if not np.issubdtype(array.dtype, np.floating):
        hint = " (16-bit samples: divide by 32768)" if array.dtype == np.int16 else ""
        raise UserError(f"{source}: expected float samples in [-1, 1], found an array of {array.dtype}. "
                        f"Fix: convert it to float{hint}")
    if array.ndim not in (1, 2):
        raise UserError(f"{source}: expected a 1-D array [samples] or a 2-D array [channels, samples], found "
                        f"shape {array.shape}")
    if array.ndim == 2 and array.shape[0] > array.shape[1]:
        raise UserError(f"{source}: expected [channels, samples], found {array.shape[0]} channels of "
                        f"{array.shape[1]} samples, which looks like [samples, channels] (soundfile's order). "
                        "Fix: pass audio.T")
    return array.astype(np.float32, copy=False)
