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

Precision (``--precision``; ``prepare_for_inference`` decides, for every command and every kind
of model file): ``fp32``, the default, is the network itself, bit for bit. ``bf16`` runs it under
bfloat16 autocast, where the device has a bfloat16 LSTM (the check ``--amp bf16`` uses).
``int8`` dynamically quantizes its LSTMs and the Linears after them, on CPU only. The STFT,
chunking and output stay float32 in every case. Measured with ``benchmarks/enhance.py``
(section 4) on an AMD EPYC with AVX2 but no AVX-512/VNNI/AMX, 1 thread, default model with the
fixture weights, on a host loaded ~5 on 2 cores (so +-20 %): int8 RTF 1.00x and 1.22x fp32's
(30 s and 20 s runs), i.e. no gain here, since PyTorch's dynamically quantized LSTM is slower
than oneDNN's float32 LSTM on the long time-axis sequences (891 against 659 ms for one 30 s
chunk's time LSTM) and only slightly faster on the short band-axis ones (37 against 42 ms);
peak RSS 1.3-1.4x (+150-220 MiB: the quantized time LSTM holds ~200 MiB more per 30 s chunk);
output 25-28 dB SNR against fp32's. Its effect on PESQ/STOI is what
``benchmarks/precision_quality.py`` measures on a trained model. bf16 has not been measured (no
processor with bfloat16 instructions or GPU was available).

Perceptual contrast stretching (``--pcs``, off by default; ``bsrnn.pcs``):
the enhanced spectrum of every chunk is stretched before its inverse STFT, by exponents that
follow the SII band importance (Chao et al., Interspeech 2022), and the signal is then scaled
back to the peak the network's output had. A post-processing step at inference only: the
network and its checkpoints are the same. Its effect on PESQ/STOI is what
``benchmarks/pcs_quality.py`` measures on a trained model.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bsrnn import keys
from bsrnn.audio import (
    HOP_LENGTH,
    N_FFT,
    SAMPLE_RATE,
    AudioInfo,
    audio_info,
    istft,
    resample,
    stft,
    unreadable_audio,
    wav_truncation,
)
from bsrnn.bundle import is_bundle, read_bundle
from bsrnn.checkpoint import (
    BEST_NAME,
    LAST_NAME,
    CheckpointCorruptError,
    CheckpointError,
    CheckpointForeignError,
    CheckpointNotFoundError,
    LoadedCheckpoint,
    load_checkpoint,
)
from bsrnn.errors import DataError, UserError
from bsrnn.models import BSRNN
from bsrnn.models.precision import Autocast, bf16_runs_here
from bsrnn.onnx_model import is_onnx_model, read_onnx
from bsrnn.pcs import perceptual_contrast_stretch

log = logging.getLogger(__name__)

SpectrumEnhancer = Callable[[torch.Tensor], torch.Tensor]
"""What the enhance functions run: complex STFT ``[B, 257, T]`` -> enhanced complex64 STFT, same
shape. A ``BSRNN`` in eval mode, or what ``prepare_for_inference`` made of one."""

PRECISIONS = ("fp32", "bf16", "int8")
"""The arithmetic a generator can run in (``prepare_for_inference``); ``--precision`` choices."""
DEFAULT_PRECISION = "fp32"
PRECISION_DESCRIPTIONS = {
    "fp32": "float32",
    "bf16": "bfloat16 autocast of the generator (numerically a different function from float32)",
    "int8": "int8 dynamic quantization of the generator's LSTMs and Linears (numerically a different "
            "function from float32)",
}

DEFAULT_CHUNK_SECONDS = 30.0
DEFAULT_OVERLAP_SECONDS = 1.0
DEFAULT_BATCH_SECONDS = {"cpu": DEFAULT_CHUNK_SECONDS, "cuda": 300.0}
"""Audio per forward pass (rounded down to whole chunks) by device type; others use the CPU's."""


def trained_for(epoch: int, step_in_epoch: int = 0) -> str:
    """How far training got, as users count: ``epoch`` is the 0-based index of the last completed
    epoch (-1: none), so -1 reads "after 0 completed epochs", never "epoch -1"."""
    text = f"after {max(epoch + 1, 0)} completed epoch(s)"
    return text + (f" and {step_in_epoch} step(s) of the next" if step_in_epoch > 0 else "")


def _as_int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


@dataclass(frozen=True)
class LoadedGenerator:
    model: BSRNN | None
    """The float32 network; None for an ONNX model, which only ONNX Runtime runs (``prepared``)."""
    path: Path
    epoch: int
    """0-based index of the last completed epoch, -1 if none (see ``trained_for``)."""
    config: dict[str, Any]
    reason: str = ""
    """Why this file was chosen, e.g. "auto: checkpoint_best.pt verifies"."""
    step_in_epoch: int = 0
    precision: str = DEFAULT_PRECISION
    """The arithmetic ``enhancer`` runs in (``PRECISIONS``)."""
    prepared: SpectrumEnhancer | None = None
    """``model`` as ``prepare_for_inference`` made it for ``precision``; None: ``model`` itself."""

    @property
    def enhancer(self) -> SpectrumEnhancer:
        """What to pass to ``enhance_audio`` / ``enhance_waveform``: the generator prepared for
        ``precision`` (``model`` itself for fp32). ``model`` stays the float32 network."""
        if self.prepared is not None:
            return self.prepared
        assert self.model is not None, "a generator has a model or a prepared enhancer"
        return self.model

    @property
    def causal(self) -> bool:
        """Whether the generator is the causal BSRNN (``config`` field ``causal``)."""
        return self.model.causal if self.model is not None else self.config.get("causal") is True

    def describe(self) -> str:
        """One line for the user: which file, why, how far its training got, and any precision
        other than float32 (fp32 adds nothing, so the line reads as it always has)."""
        why = f" ({self.reason})" if self.reason else ""
        line = f"Using {self.path}{why}, {trained_for(self.epoch, self.step_in_epoch)}"
        if self.precision != DEFAULT_PRECISION:
            line += f"; running in {self.precision}: {PRECISION_DESCRIPTIONS[self.precision]}"
        return line


def _why_unusable(error: CheckpointError) -> str:
    if isinstance(error, CheckpointCorruptError) and getattr(error, "damage", ""):
        return f"it is damaged: {error.damage}"
    if isinstance(error, CheckpointForeignError) and getattr(error, "reason", ""):
        return f"it is not a bsrnn checkpoint: {error.reason}"
    return str(error)


def _best_metric(loaded: LoadedCheckpoint) -> str:
    record = loaded.get("monitor")
    if isinstance(record, Mapping) and isinstance(record.get("value"), (int, float)) and math.isfinite(record["value"]):
        return f"; best {record.get('name', 'metric')} {record['value']:.4f}"
    return ""


def choose_checkpoint(location: Path | str, which: str = "auto") -> tuple[LoadedCheckpoint, str]:
    """The verified checkpoint to enhance or evaluate with, and why it was chosen.

    For a run directory, ``auto`` takes ``checkpoint_best.pt`` if it verifies, else
    ``checkpoint_last.pt``: these commands want the weights that validated best, while
    training's own ``auto`` prefers the last file so that no progress is lost. A run stopped
    before its first validation has only the last file, and is usable. ``best`` and ``last``
    take exactly that file or fail; a file path is used as given.
    """
    location = Path(location)
    if which != "auto" or not location.is_dir():
        loaded = load_checkpoint(location, which)
        return loaded, ("the file given" if loaded.path == location else f"--load {which}")
    best_error: CheckpointError | None = None
    try:
        loaded = load_checkpoint(location, "best")
        return loaded, f"auto: {BEST_NAME} verifies{_best_metric(loaded)}"
    except CheckpointNotFoundError:
        why_not_best = f"no {BEST_NAME} in the run yet"
    except (CheckpointCorruptError, CheckpointForeignError) as error:
        best_error = error
        why_not_best = f"{BEST_NAME} is unusable, {_why_unusable(error)}"
        log.warning("WARNING: %s", error)
    try:
        loaded = load_checkpoint(location, "last")
    except CheckpointNotFoundError:
        if best_error is not None:
            raise best_error from None
        raise CheckpointNotFoundError(
            [location / BEST_NAME, location / LAST_NAME],
            hint=f"{location} holds no checkpoint. Fix: train a model into it first, or pass a checkpoint file.",
        ) from None
    except (CheckpointCorruptError, CheckpointForeignError) as error:
        if best_error is None:
            raise
        raise UserError(
            f"{location}: expected a usable checkpoint_best.pt or checkpoint_last.pt, found neither: "
            f"{BEST_NAME}: {_why_unusable(best_error)}; {LAST_NAME}: {_why_unusable(error)}. Fix: copy an "
            "intact checkpoint into the run, or pass another checkpoint file."
        ) from error
    return loaded, f"auto: {why_not_best}, so the last"


def load_generator(location: Path | str, which: str = "auto", device: str | torch.device = "cpu",
                   precision: str = DEFAULT_PRECISION) -> LoadedGenerator:
    """The generator of a checkpoint file, run directory or bundle, verified, in eval mode, and
    prepared to run in ``precision`` (``LoadedGenerator.enhancer``; see ``prepare_for_inference``).

    ``which`` chooses within a run directory (see ``choose_checkpoint``: ``auto`` prefers best).
    The precision is checked against the device first, so a combination that cannot run is
    refused before a large checkpoint is read.
    """
    check_precision(precision, device)
    if is_onnx_model(location):
        return _onnx_generator(Path(location), precision, device)
    if is_bundle(location):
        model, metadata = read_bundle(Path(location))
        model.to(device)
        epoch = metadata.get("epoch", "")
        epoch = int(epoch) if epoch.lstrip("-").isdigit() else -1
        return LoadedGenerator(model, Path(location), epoch, json.loads(metadata.get("model", "{}")),
                               "a model bundle exported from " + metadata.get("source", "a checkpoint"),
                               precision=precision, prepared=_prepared_or_none(model, precision, device))
    loaded, reason = choose_checkpoint(location, which)
    model, config = generator_of(loaded)
    model.to(device)
    return LoadedGenerator(model, loaded.path, _as_int(loaded.get("epoch"), -1), config, reason,
                           max(_as_int(loaded.get("step_in_epoch"), 0), 0), precision=precision,
                           prepared=_prepared_or_none(model, precision, device))


def generator_of(loaded: LoadedCheckpoint) -> tuple[BSRNN, dict[str, Any]]:
    """The generator of a verified checkpoint (CPU, eval mode) and the checkpoint's config;
    UserError if it holds none, or weights that do not fit the architecture its config names."""
    weights = loaded.get(keys.GENERATOR)
    if not isinstance(weights, Mapping) or not weights:
        raise UserError(
            f"{loaded.path}: expected generator weights (model_state_dict), found none. Fix: pass a "
            "checkpoint written by `bsrnn train` or `bsrnn ckpt migrate`."
        )
    config = loaded.get("config")
    config = dict(config) if isinstance(config, Mapping) else {}
    num_channel, num_layer = _as_int(config.get("num_channel"), 64), _as_int(config.get("num_layer"), 5)
    causal = config.get("causal") is True  # runs from before the field trained the reference network
    try:
        model = BSRNN(num_channel=num_channel, num_layer=num_layer, causal=causal)
        model.load_state_dict(weights)
    except (RuntimeError, ValueError) as error:
        raise UserError(
            f"{loaded.path}: generator weights do not fit BSRNN(num_channel={num_channel}, "
            f"num_layer={num_layer}, causal={causal}) from its config: {error}"
        ) from error
    return model.eval(), config


def _onnx_generator(path: Path, precision: str, device: str | torch.device) -> LoadedGenerator:
    """An ONNX model (``bsrnn.onnx_model``): float32, on the CPU, through ONNX Runtime."""
    if precision != DEFAULT_PRECISION:
        raise UserError(f"{path}: precision {precision}: expected fp32 for an ONNX model, which ONNX Runtime runs "
                        "as exported, in float32. Fix: use precision fp32, or the checkpoint it came from")
    if torch.device(device).type != "cpu":
        raise UserError(f"{path}: device {device}: expected cpu for an ONNX model (bsrnn runs ONNX Runtime's CPU "
                        "provider). Fix: use device cpu, or the checkpoint it came from")
    enhancer, metadata = read_onnx(path)
    epoch = metadata.get("epoch", "")
    return LoadedGenerator(None, path, int(epoch) if epoch.lstrip("-").isdigit() else -1,
                           json.loads(metadata.get("model", "{}")),
                           "an ONNX model exported from " + metadata.get("source", "a checkpoint"),
                           precision=precision, prepared=enhancer)


def _prepared_or_none(model: BSRNN, precision: str, device: str | torch.device) -> SpectrumEnhancer | None:
    prepared = prepare_for_inference(model, precision, device)
    return None if prepared is model else prepared


def inference_device(name: str, precision: str = DEFAULT_PRECISION) -> torch.device:
    """The device ``enhance``/``evaluate --device NAME`` run on; ``auto`` (their default, as for
    ``train``) is CUDA where it is available, else the CPU.

    ``auto`` picks the CPU for ``int8``, whose kernels are CPU only, so that the same command
    line works on any machine. A name torch does not know, a precision the device type cannot
    run (``check_precision``) or CUDA where there is none is a UserError with the fix, before any
    checkpoint is read.
    """
    if name == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() and precision != "int8" else "cpu")
        check_precision(precision, device)
        return device
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name}: expected cpu, cuda, cuda:N or auto, found {name!r}. "
                        "Fix: pass --device auto (the default: cuda if available, else cpu)") from None
    check_precision(precision, device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: expected a machine with CUDA, found none here. Fix: pass --device cpu, "
                        "or --device auto (the default), which uses cuda only where there is one")
    return device


def check_precision(precision: str, device: str | torch.device = "cpu") -> None:
    """Refuse, with the fix, a precision this device cannot run; cheap (no model needed).

    - ``int8``: PyTorch's dynamic quantization of LSTM and Linear has CPU kernels only (fbgemm /
      x86 / qnnpack); on CUDA the first forward pass would fail inside torch.
    - ``bf16``: on a CPU, oneDNN has a bfloat16 LSTM only where the processor has bfloat16
      instructions (AVX512-BF16 or AMX): the same probe as ``--amp bf16`` in training
      (``bsrnn.models.precision.bf16_runs_here``).
    """
    if precision not in PRECISIONS:
        raise UserError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}. "
                        f"Fix: use precision {DEFAULT_PRECISION} (the default), bf16 or int8")
    try:
        device_type = torch.device(device).type
    except (RuntimeError, TypeError) as error:
        raise UserError(f"device {device!r}: expected a torch device such as cpu, cuda or cuda:1 ({error}). "
                        "Fix: use device cpu or cuda") from error
    if precision == "int8":
        if device_type != "cpu":
            raise UserError(
                f"precision int8: expected device cpu, found device {device}: PyTorch's dynamic int8 "
                "quantization of LSTM and Linear layers has CPU kernels only. Fix: run int8 on device cpu, "
                f"or keep device {device} with precision fp32 or bf16"
            )
        if torch.backends.quantized.engine in (None, "none"):
            raise UserError(
                f"precision int8: expected a PyTorch build with a quantized CPU engine, found torch "
                f"{torch.__version__} with none (supported engines: {torch.backends.quantized.supported_engines}). "
                "Fix: use precision fp32, or install the official CPU or CUDA wheel of torch"
            )
    elif precision == "bf16":
        if not bf16_runs_here(device_type):
            raise UserError(
                "precision bf16: expected a processor with bfloat16 instructions (AVX512-BF16 or AMX) for "
                "the LSTMs, found one without (oneDNN has no bfloat16 LSTM for it). Fix: use precision fp32 "
                "(or int8), or run on a GPU or a CPU that has them"
            )


def prepare_for_inference(model: BSRNN, precision: str = DEFAULT_PRECISION,
                          device: str | torch.device = "cpu") -> SpectrumEnhancer:
    """The one place that decides how a loaded generator runs in ``precision`` on ``device``.

    Whatever the precision, the STFT, the inverse STFT, chunking and cross-fades stay float32 and
    the result is complex64: only the network's arithmetic changes, and the weights on disk
    (checkpoint or bundle) are the same float32 file for every precision.

    - ``fp32``: ``model`` itself, untouched, so the output is bit-identical to calling it.
    - ``bf16``: ``model`` called under ``torch.autocast(device, bfloat16)`` (the same wrapper as
      training's ``--amp bf16``): LSTMs and matrix products in bfloat16, the other operations
      as autocast's own rules say. Refused where the device cannot (``check_precision``).
    - ``int8``: a copy of ``model`` with every ``nn.LSTM`` and ``nn.Linear`` dynamically quantized
      (``torch.ao.quantization.quantize_dynamic``, qint8 weights, activations quantized per
      call). That is where ~90 % of the FLOPs are (``benchmarks/enhance.py``,
      ``model_flops_per_second``); the band split and mask decoder hold packed per-band
      parameters, not ``nn.Linear``s, and stay float32. CPU only. ``model`` is left float32.
      torch 2.13 marks ``torch.ao.quantization`` deprecated in favour of torchao, but still
      ships and runs it; its deprecation warnings are silenced here since users cannot act on
      them, and a torch without it is refused with the fix.
    """
    check_precision(precision, device)
    if precision == "fp32":
        return model
    if precision == "bf16":
        return Autocast(model, torch.device(device).type, torch.bfloat16)
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError as error:
        raise UserError(
            f"precision int8: expected torch.ao.quantization.quantize_dynamic, found that torch "
            f"{torch.__version__} no longer has it ({error}). Fix: use precision fp32 or bf16, or a torch "
            "release that still ships it (2.13 does)"
        ) from error
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r".*torch\.ao\.quantization is deprecated", DeprecationWarning)
        warnings.filterwarnings("ignore", r".*quantized tensor creation functions.*deprecated", UserWarning)
        quantized = quantize_dynamic(model, {torch.nn.LSTM, torch.nn.Linear}, dtype=torch.qint8, inplace=False)
    return quantized.eval()


def check_length(frames: int, rate: int, where: str | Path) -> None:
    """Refuse audio shorter than one STFT frame at 16 kHz (512 samples, 32 ms): DataError naming it.

    Below one analysis frame there is nothing to enhance: up to 128 samples the STFT's reflect
    padding fails outright, and up to 511 the frames are mostly padding. The limit is a
    duration, so it holds at every rate.
    """
    if frames * SAMPLE_RATE < N_FFT * rate:
        raise DataError(
            f"{where}: expected at least {N_FFT / SAMPLE_RATE * 1000:.0f} ms of audio ({N_FFT} samples at "
            f"16 kHz, one STFT frame), found {frames} samples at {rate} Hz ({frames / rate * 1000:.1f} ms). "
            "Fix: leave it out, or pad it with silence"
        )


def check_input_file(path: Path) -> AudioInfo:
    """The header of a file that can be enhanced; DataError naming it if it cannot.

    Cheap (no samples are decoded), so every input is checked before the model is loaded.
    NaN/inf samples only show when decoding: ``check_input_audio``.
    """
    info = audio_info(path)
    try:
        truncated = wav_truncation(path)
    except OSError as error:
        raise unreadable_audio(path, error) from error
    if truncated is not None:
        raise DataError(
            f"{path}: expected a complete WAV file, found a truncated one: its header promises "
            f"{truncated.claimed_frames} samples, the file holds {truncated.present_frames}. "
            "Fix: copy or export it again from the original"
        )
    if info.frames == 0:
        raise DataError(f"{path}: expected audio samples, found a header with no samples. "
                        "Fix: export it again, or leave it out")
    check_length(info.frames, info.rate, path)
    return info


def check_input_audio(audio: np.ndarray, rate: int, where: str | Path) -> None:
    """Refuse NaN/inf samples (the output would be noise at full scale) and too-short audio."""
    bad = int(audio.size - np.count_nonzero(np.isfinite(audio)))
    if bad:
        raise DataError(
            f"{where}: expected finite samples, found {bad} NaN/inf sample(s). Fix: export the file again "
            "from its source, or leave it out (nothing was written for it)"
        )
    check_length(int(audio.shape[-1]), rate, where)


def _with_peak(audio: np.ndarray, peak: float) -> np.ndarray:
    """``audio`` scaled to peak at ``peak`` (unchanged if silent), in place."""
    own_peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if own_peak > 0 and math.isfinite(own_peak) and peak > 0:
        audio *= np.float32(peak / own_peak)
    return audio


@torch.no_grad()
def enhance_segment(model: SpectrumEnhancer, audio: np.ndarray, device: torch.device | str = "cpu",
                    pcs: bool = False) -> np.ndarray:
    """Enhance one mono 16 kHz segment as a whole (reference evaluation: reflect pad one hop).

    ``pcs``: perceptual contrast stretching of the network's output spectrum before the inverse
    STFT, then scaled to the peak level the network's own output has (see ``enhance_waveform``).
    """
    length = audio.shape[-1]
    signal = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)).to(device)[None]
    pad = HOP_LENGTH if length > HOP_LENGTH else 0
    padded = torch.nn.functional.pad(signal[None], (pad, pad), mode="reflect")[0] if pad else signal
    spectrum = model(stft(padded))
    estimate = istft(spectrum, length=padded.shape[-1])[0, pad : pad + length].cpu().numpy()
    if not pcs:
        return estimate
    stretched = istft(perceptual_contrast_stretch(spectrum), length=padded.shape[-1])
    return _with_peak(stretched[0, pad : pad + length].cpu().numpy(), float(np.max(np.abs(estimate))))


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
def enhance_batch(model: SpectrumEnhancer, segments: np.ndarray, device: torch.device | str = "cpu") -> np.ndarray:
    """Enhance equal-length mono segments ``[chunks, samples]`` in one forward pass.

    Each row is treated exactly like ``enhance_segment`` treats one signal (reflect pad one hop,
    STFT, network, inverse STFT); rows do not interact (every norm is per example).
    """
    return _enhance_batch(model, segments, device)[0]


@torch.no_grad()
def _enhance_batch(model: SpectrumEnhancer, segments: np.ndarray, device: torch.device | str = "cpu",
                   pcs: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """``enhance_batch``'s rows, and with ``pcs`` the rows of the stretched spectra (not yet levelled)."""
    signal = torch.from_numpy(np.ascontiguousarray(segments, dtype=np.float32)).to(device)
    length = signal.shape[-1]
    pad = HOP_LENGTH if length > HOP_LENGTH else 0
    if pad:
        signal = torch.nn.functional.pad(signal[:, None], (pad, pad), mode="reflect")[:, 0]
    spectrum = model(stft(signal))
    estimate = istft(spectrum, length=signal.shape[-1])[:, pad : pad + length].cpu().numpy()
    if not pcs:
        return estimate, None
    stretched = istft(perceptual_contrast_stretch(spectrum), length=signal.shape[-1])
    return estimate, stretched[:, pad : pad + length].cpu().numpy()


class _CrossFader:
    """Joins chunk outputs in order (``_cross_fade_windows``): each ``join`` returns where the
    chunk's finished samples go and the samples; the faded-out tail waits for the next chunk."""

    def __init__(self, windows: list[tuple[int, int, np.ndarray | None, np.ndarray | None]]) -> None:
        self.windows = windows
        self.pending_fade: np.ndarray | None = None  # the previous chunk's faded-out tail

    def join(self, index: int, start: int, piece: np.ndarray) -> tuple[int, np.ndarray]:
        first, stop, fade_in, fade_out = self.windows[index]
        part = piece[first - start : stop - start]
        if fade_in is not None:
            assert self.pending_fade is not None, "chunks are joined in order"
            part[: len(fade_in)] *= fade_in
            part[: len(fade_in)] += self.pending_fade
        if fade_out is not None:
            self.pending_fade = part[-len(fade_out) :] * fade_out
            part = part[: -len(fade_out)]
        return first, part


def enhance_waveform(model: SpectrumEnhancer, audio: np.ndarray, device: torch.device | str = "cpu",
                     chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
                     overlap_seconds: float = DEFAULT_OVERLAP_SECONDS,
                     batch_seconds: float | None = None, pcs: bool = False) -> np.ndarray:
    """Enhance a mono 16 kHz signal of any length (see the module docstring for the chunking).

    Signals up to ``chunk_seconds`` are processed whole. Longer ones are cut into chunks of
    ``chunk_seconds`` that overlap by at least ``overlap_seconds``; as many chunks as fit in
    ``batch_seconds`` of audio go through the network in one forward pass (bigger matrix
    products per LSTM step, bounded memory; default by device, ``DEFAULT_BATCH_SECONDS``),
    and neighbours are joined by a raised-cosine cross-fade of ``overlap_seconds``. Returns
    float32 of the input's length.

    ``pcs`` (``--pcs``; off by default, and then the output is bit-identical to before): perceptual contrast
    stretching (``perceptual_contrast_stretch``) of every chunk's enhanced spectrum before its
    inverse STFT, chunks joined alike; then the whole signal is scaled so that its peak is the
    peak of the network's own output. Stretching alone raises loud bins most (magnitude 50
    becomes 51 ** 1.4 - 1 = 245, +14 dB) and would clip; scaling every output to full scale
    instead would turn a quiet recording loud. PESQ and STOI do not depend on this gain; SSNR,
    and so CBAK, does.
    """
    audio = np.asarray(audio, dtype=np.float32)
    chunk = int(chunk_seconds * SAMPLE_RATE)
    overlap = int(overlap_seconds * SAMPLE_RATE)
    if not 0 < overlap < chunk:
        raise ValueError(f"need 0 < overlap_seconds < chunk_seconds, got {overlap_seconds} and {chunk_seconds}")
    length = audio.shape[-1]
    if length <= chunk:
        return enhance_segment(model, audio, device, pcs=pcs)
    starts = chunk_starts(length, chunk, chunk - overlap)
    windows = _cross_fade_windows(starts, chunk, overlap)
    if batch_seconds is None:
        kind = torch.device(device).type
        batch_seconds = DEFAULT_BATCH_SECONDS.get(kind, DEFAULT_BATCH_SECONDS["cpu"])
    per_batch = max(1, int(batch_seconds // chunk_seconds))
    output = np.empty(length, dtype=np.float32)
    joined = _CrossFader(windows)
    joined_plain, plain_peak = _CrossFader(windows), 0.0  # with pcs: the network's own output, for its peak
    for first_chunk in range(0, len(starts), per_batch):
        batch = starts[first_chunk : first_chunk + per_batch]
        pieces, stretched = _enhance_batch(model, np.stack([audio[start : start + chunk] for start in batch]),
                                           device, pcs)
        for index, start in enumerate(batch, start=first_chunk):
            piece = pieces[index - first_chunk]
            if stretched is not None:
                _, plain = joined_plain.join(index, start, piece)
                plain_peak = max(plain_peak, float(np.max(np.abs(plain), initial=0.0)))
                piece = stretched[index - first_chunk]
            first, part = joined.join(index, start, piece)
            output[first : first + len(part)] = part
    return _with_peak(output, plain_peak) if pcs else output


def enhance_audio(model: SpectrumEnhancer, audio: np.ndarray, rate: int, device: torch.device | str = "cpu",
                  where: str | Path = "the input audio", pcs: bool = False) -> np.ndarray:
    """Any rate, mono [samples] or multi-channel [channels, samples]: same shape and rate out.

    ``pcs``: perceptual contrast stretching at 16 kHz, each channel scaled to its own
    enhanced peak (``enhance_waveform``).

    Input that cannot give a meaningful output (NaN/inf samples, shorter than 32 ms) raises
    DataError naming ``where``, and an output with NaN/inf samples raises UserError: whatever
    this returns is fit to be written.
    """
    check_input_audio(audio, rate, where)
    channels = audio[None] if audio.ndim == 1 else audio
    enhanced = []
    for channel in channels:
        mono = resample(channel, rate, SAMPLE_RATE) if rate != SAMPLE_RATE else channel
        result = enhance_waveform(model, mono, device, pcs=pcs)
        if rate != SAMPLE_RATE:
            result = resample(result, SAMPLE_RATE, rate)
            result = _fit_length(result, channel.shape[-1])
        enhanced.append(result)
    result = enhanced[0] if audio.ndim == 1 else np.stack(enhanced)  # mono: no stacking copy (230 MB an hour)
    bad = int(result.size - np.count_nonzero(np.isfinite(result)))
    if bad:
        peak = float(np.max(np.abs(audio)))
        fix = (f"the input peaks at {peak:.3g}, far beyond full scale (1.0): scale it down" if peak > 1e3 else
               "check the checkpoint (`bsrnn ckpt verify RUN_DIR`) or load the other one of the run (best or last)")
        raise UserError(
            f"{where}: expected a finite enhanced signal, found {bad} NaN/inf sample(s) in the network's output; "
            f"nothing was written for it. Fix: {fix}"
        )
    return result


def _fit_length(audio: np.ndarray, length: int) -> np.ndarray:
    if audio.shape[-1] >= length:
        return audio[..., :length]
    return np.pad(audio, (0, length - audio.shape[-1]))
