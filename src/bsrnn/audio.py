"""The audio front end: the sample rate, STFT/iSTFT, power-law compression, and audio files.

Signal processing reproduces the reference recipe bit for bit: a 512-point STFT with hop 128
and a periodic Hann window (``torch.hann_window(512)``), centred frames (torch's default
``center=True``, reflect padding), one-sided complex output of 257 bins. A 2 s crop of 32000
samples therefore has ``32000 // 128 + 1 = 251`` frames, and ``istft`` without ``length``
returns ``128 * (frames - 1)`` samples (32000 again).

Audio files are this module's alone: every command and the data layer read, inspect, list,
resample and write them through the functions below, so they accept the same formats and fail
with the same message. Any format libsndfile reads is accepted (WAV, FLAC, OGG, AIFF, ...;
the format is recognised from the content, the suffix only decides which files of a folder
are audio). Samples are read as float32 in [-1, 1] (what the reference got from
``librosa.load`` at 16 kHz). Writing keeps 16-bit PCM wherever the format stores PCM, the
encoding VoiceBank+DEMAND ships in and every PESQ/STOI tool reads; pass ``subtype="FLOAT"`` to
keep float samples exactly. A file that cannot be read or written is an ``AudioFileError``
naming it, whatever the underlying error was (libsndfile's, the operating system's).

torch is imported only when a spectral function is called: ``bsrnn score`` reads audio through
this module and must stay free of torch, which would keep it from forking its helpers.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np
import soundfile

from bsrnn.errors import DataError
from bsrnn.output import InputFiles, write_file

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
"""The rate the models are trained and scored at (PESQ wide band is defined only there); every
corpus file must have it, and ``enhance``/``score`` resample other rates to it."""
N_FFT = 512
HOP_LENGTH = 128
NUM_BINS = N_FFT // 2 + 1
MIN_CUT_LEN = 1920
"""The shortest training crop that trains: 1920 samples give 16 STFT frames (hop 128), and the
discriminator's four stride-2 4x4 convolutions need 16 to keep 2 frames for the last one
(16 -> 8 -> 4 -> 2). One 512-sample frame, the bound once documented, crashes the first step."""
COMPRESSION_EXPONENT = 0.3
MAGNITUDE_FLOOR = 1e-10
"""Added before the power law so that its gradient at silent bins stays finite."""


# ----------------------------------------------------------------------------- spectral
@functools.lru_cache(maxsize=16)
def _cached_window(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    import torch

    return torch.hann_window(N_FFT, device=device, dtype=dtype)


def hann_window(device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> torch.Tensor:
    """The periodic 512-point Hann window on ``device`` (float32 unless ``dtype``), built once
    per (device, dtype).

    The cached tensor is shared: treat it as read-only.
    """
    import torch

    return _cached_window(torch.device(device), torch.float32 if dtype is None else dtype)


def stft(audio: torch.Tensor) -> torch.Tensor:
    """Complex spectrogram [..., 257, frames] of real audio [..., samples].

    Exactly ``torch.stft(x, 512, 128, window=hann(512), onesided=True, return_complex=True)``
    with torch's default ``center=True``, so frame ``t`` is centred on sample ``128 * t``.
    Leading dimensions are flattened for torch.stft (which takes at most one) and restored.
    """
    import torch

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
    import torch

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


# ----------------------------------------------------------------------------- audio files
_SUFFIX_FORMATS = {
    ".wav": "WAV", ".wave": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".oga": "OGG", ".opus": "OGG",
    ".aif": "AIFF", ".aiff": "AIFF", ".aifc": "AIFF", ".au": "AU", ".snd": "AU", ".caf": "CAF",
    ".w64": "W64", ".rf64": "RF64", ".sph": "NIST", ".mp3": "MP3",
}

AUDIO_SUFFIXES: frozenset[str] = frozenset(
    suffix for suffix, name in _SUFFIX_FORMATS.items() if name in soundfile.available_formats()
)
"""File name suffixes (lower case) that mark a file of a folder as audio: those of the formats
this machine's libsndfile reads. Listing goes by suffix so that notes, CSVs and hidden files
beside a corpus are never mistaken for audio; reading goes by content."""

READABLE = "an audio file libsndfile reads (WAV, FLAC, OGG, AIFF, ...)"
"""What an audio input is expected to be, as every message about one says it."""

_IO_ERRORS = (soundfile.SoundFileError, RuntimeError, OSError)
"""Everything reading or writing a file can raise for a reason outside this program: libsndfile's
errors (``LibsndfileError`` is a ``RuntimeError``) and the operating system's."""


class AudioFileError(DataError):
    """An audio file that cannot be read or written; the message names it, says what was
    expected and found, and the fix.

    ``path`` and ``reason`` (what was found, a few words) let the data layer file the problem
    under its own kinds. Constructible from the message alone, like every DataError, so it
    survives being re-raised from a worker process.
    """

    def __init__(self, message: str, path: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.path = path
        self.reason = reason

    def __reduce__(self) -> tuple[type[AudioFileError], tuple[str, str, str]]:
        return type(self), (str(self), self.path, self.reason)


def native_path(path: str | os.PathLike[str]) -> bytes:
    """``path`` as the bytes the file system holds, for libsndfile.

    soundfile encodes a ``str`` path as strict UTF-8, so a file whose name is not UTF-8 (Python
    holds its bytes as surrogate escapes, ``b"\\xfd"`` as ``"\\udcfd"``) raised
    ``UnicodeEncodeError``; the bytes open every file the file system holds.
    """
    return os.fsencode(path)


def _found_instead(path: Path, error: Exception) -> str:
    """What is at ``path`` instead of readable audio, in the words of the message."""
    if not path.exists():
        return "no such file"
    if path.is_dir():
        return "a folder"
    if not os.access(path, os.R_OK):
        return "a file this user may not read (permission denied)"
    if path.stat().st_size == 0:
        return "an empty file (0 bytes)"
    detail = str(error).replace(f"Error opening {native_path(path)!r}: ", "").removeprefix("Error : ").strip()
    return f"data it cannot decode ({detail.rstrip('.')})"


def unreadable_audio(path: str | os.PathLike[str], error: Exception) -> AudioFileError:
    """The one error for an audio file that cannot be read, whatever ``error`` was raised."""
    reason = _found_instead(Path(path), error)
    return AudioFileError(
        f"{path}: expected {READABLE}, found {reason}. Fix: check the path and its permissions, "
        "or export the file again (e.g. `sox IN -b 16 OUT.flac`), or leave it out",
        str(path),
        reason,
    )


class AudioInfo(NamedTuple):
    """What a file's header says, read without decoding a sample."""

    rate: int
    channels: int
    frames: int
    format: str
    """libsndfile's name of the container, e.g. "WAV", "FLAC", "OGG" (found from the content)."""
    subtype: str
    """libsndfile's name of the encoding, e.g. "PCM_16", "FLOAT", "VORBIS"."""


def audio_info(path: str | os.PathLike[str]) -> AudioInfo:
    """The header of the audio file at ``path``; ``AudioFileError`` naming it if unreadable."""
    try:
        info = soundfile.info(native_path(path))
    except _IO_ERRORS as error:
        raise unreadable_audio(path, error) from error
    return AudioInfo(int(info.samplerate), int(info.channels), int(info.frames), str(info.format),
                     str(info.subtype))


def read_audio(path: str | os.PathLike[str], dtype: Literal["float32", "int16"] = "float32"
               ) -> tuple[np.ndarray, int]:
    """Samples and rate of an audio file: [samples] if mono, else [channels, samples].

    float32 in [-1, 1] by default; ``dtype="int16"`` returns 16-bit files' samples as stored
    (the training cache keeps them so, at half the memory). A file that cannot be read or
    decoded to the end (a truncated FLAC, say) raises ``AudioFileError`` naming it.
    """
    try:
        samples, rate = soundfile.read(native_path(path), dtype=dtype, always_2d=True)
    except _IO_ERRORS as error:
        raise unreadable_audio(path, error) from error
    channels_first = np.ascontiguousarray(samples.T)
    return (channels_first[0] if channels_first.shape[0] == 1 else channels_first), int(rate)


def output_format(path: str | os.PathLike[str], format: str | None = None,
                  subtype: str | None = None) -> tuple[str, str]:
    """The (format, subtype) ``write_audio`` uses for ``path``; ``AudioFileError`` if none can be
    written there.

    ``format`` defaults to the one the suffix names (``.flac``: FLAC). ``subtype`` defaults to
    16-bit PCM where the format stores PCM, else the format's own default (OGG: Vorbis, MP3:
    layer III). Cheap, so a command can check every output before it does any work.
    """
    name = format if format is not None else _SUFFIX_FORMATS.get(Path(path).suffix.lower())
    if name is None and Path(path).suffix[1:].upper() in soundfile.available_formats():
        name = Path(path).suffix[1:].upper()
    if name is None or name not in soundfile.available_formats():
        if format is None:
            suffix = Path(path).suffix
            expected = f"a suffix naming an audio format libsndfile writes ({', '.join(sorted(AUDIO_SUFFIXES))})"
            found = f"the suffix {suffix!r}" if suffix else "no suffix"
        else:
            expected = f"a format libsndfile writes ({', '.join(sorted(soundfile.available_formats()))})"
            found = f"the format {format!r}"
        raise AudioFileError(f"{path}: expected {expected}, found {found}. Fix: write it as e.g. .wav or .flac",
                             str(path), found)
    if subtype is None:
        subtype = "PCM_16" if soundfile.check_format(name, "PCM_16") else soundfile.default_subtype(name)
    if subtype is None or not soundfile.check_format(name, subtype):
        raise AudioFileError(
            f"{path}: expected an encoding that libsndfile writes in {name} files, found {subtype}. "
            f"Fix: choose one of {', '.join(soundfile.available_subtypes(name))}, or another format "
            "(e.g. .wav or .flac)",
            str(path),
            str(subtype),
        )
    return name, subtype


def output_format_like(info: AudioInfo, path: str | os.PathLike[str]) -> tuple[str, str]:
    """The (format, subtype) to write an output of the input ``info`` describes, at ``path``.

    The output keeps the input's format (an enhanced FLAC is a FLAC): 16-bit PCM where the
    format stores PCM (as an enhanced WAV always was), else the input's own encoding (an Opus
    stays Opus). ``AudioFileError`` naming ``path`` if libsndfile cannot write it.
    """
    if soundfile.check_format(info.format, "PCM_16"):
        return output_format(path, info.format)
    return output_format(path, info.format, info.subtype)


def write_audio(path: str | os.PathLike[str], audio: np.ndarray | torch.Tensor, rate: int,
                subtype: str | None = None, format: str | None = None, *, overwrite: bool = False,
                flag: str = "", inputs: InputFiles | None = None) -> None:
    """Write ``audio`` ([samples] or [channels, samples], float in [-1, 1]) to ``path``.

    The format is ``format``, else the one the suffix names; the encoding ``subtype``, else
    16-bit PCM where the format stores PCM (see ``output_format``). PCM cannot hold samples
    beyond [-1, 1]: they are clipped, and a warning names the file (a silent clip would hide a
    level problem). ``subtype="FLOAT"`` stores float32 samples unchanged.

    Written through ``bsrnn.output.write_file``: into a hidden temporary, read back to check it
    holds every frame (a short write must not become a valid-looking shorter file), renamed
    over ``path`` only when complete, never through a symbolic link. ``overwrite`` (default:
    refuse an existing file, so that nothing is replaced unasked), ``flag`` and ``inputs`` are
    its rules. A
    failure is an ``AudioFileError`` naming ``path``, and whatever was at ``path`` is untouched.
    """
    if hasattr(audio, "detach"):
        audio = audio.detach().cpu().numpy()
    samples = np.asarray(audio, dtype=np.float32)
    if samples.ndim not in (1, 2):
        raise ValueError(f"write_audio expects audio [samples] or [channels, samples], got {samples.shape}")
    name, subtype = output_format(path, format, subtype)
    if subtype.upper().startswith("PCM"):
        clipped = int(np.count_nonzero(np.abs(samples) > 1.0))
        if clipped:
            logger.warning("%s: %d samples beyond [-1, 1] were clipped when writing %s", path, clipped, subtype)
            samples = np.clip(samples, -1.0, 1.0)
    frames_first = samples.T if samples.ndim == 2 else samples

    def encode(temporary: Path) -> None:
        soundfile.write(native_path(temporary), frames_first, int(rate), subtype=subtype, format=name)
        written = soundfile.info(native_path(temporary)).frames
        if written != frames_first.shape[0]:
            raise OSError(f"{written} of {frames_first.shape[0]} frames were written")

    try:
        write_file(Path(path), encode, overwrite=overwrite, flag=flag, inputs=inputs)
    except _IO_ERRORS as error:
        raise AudioFileError(
            f"{path}: expected a place to write {name} audio, found that it cannot be written ({error}). "
            "Fix: check the folder exists and is writable, and that the disk has room",
            str(path),
            str(error),
        ) from error


write_wav = write_audio
"""The name ``write_audio`` had before it wrote every format (its callers all wrote WAV)."""


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """``audio`` ([samples] or [channels, samples]) resampled along its last axis.

    Uses a polyphase filter (scipy.signal.resample_poly) with the ratio reduced by the
    greatest common divisor, e.g. 44100 -> 16000 is up 160, down 441. float64 input stays
    float64 (scoring works in it); anything else comes back as float32.
    """
    dtype = np.float64 if np.asarray(audio).dtype == np.float64 else np.float32
    samples = np.asarray(audio, dtype=dtype)
    if from_rate == to_rate:
        return samples
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
    from scipy.signal import resample_poly  # imported here: scipy.signal costs ~1 s at every start-up

    divisor = math.gcd(int(from_rate), int(to_rate))
    result = resample_poly(samples, int(to_rate) // divisor, int(from_rate) // divisor, axis=-1)
    return result.astype(dtype, copy=False)


class Truncation(NamedTuple):
    """How many sample frames a WAV header promises and how many the file holds."""

    claimed_frames: int
    present_frames: int


_UNKNOWN_DATA_SIZES = (0, 0xFFFFFFFF)
"""Data-chunk sizes that streaming writers leave when they cannot seek back: no promise."""


def wav_truncation(path: str | os.PathLike[str]) -> Truncation | None:
    """The shortfall of a little-endian RIFF WAV cut short (an interrupted copy), else None.

    libsndfile reads whatever samples are there without a word, so a truncated copy would pass
    as a shorter clip (or, cut inside the header, as one with no samples). Only the chunk
    headers are read. Files that are not RIFF WAV, and data sizes a streaming writer leaves
    (0 or 0xFFFFFFFF), give None; so does a header too damaged to walk, which decoding reports.
    A truncated FLAC needs no such check: decoding it fails, naming the file.
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


# ----------------------------------------------------------------------------- folders
def is_audio_file(path: Path) -> bool:
    """Whether a folder entry counts as audio: a visible file with a suffix in ``AUDIO_SUFFIXES``.

    Hidden files are skipped: macOS leaves ``._x.wav`` companions that are not audio.
    """
    return not path.name.startswith(".") and path.suffix.lower() in AUDIO_SUFFIXES and path.is_file()


def list_audio_files(folder: Path) -> list[Path]:
    """The audio files of ``folder`` (``is_audio_file``), sorted by file name."""
    return sorted(path for path in folder.iterdir() if is_audio_file(path))


class NamedAudioFiles(NamedTuple):
    """A folder's audio files by name (the file name without its suffix), and the clashes."""

    by_name: dict[str, Path]
    clashes: list[list[Path]]
    """Groups of files that claim one name: names that differ only in case (``p0.wav``,
    ``p0.WAV``: a case-insensitive file system cannot even hold both) or only in format
    (``p0.wav``, ``p0.flac``). Which one was meant cannot be guessed, so callers refuse them."""


def audio_files_by_name(folder: Path) -> NamedAudioFiles:
    """The audio files of ``folder`` keyed by name, so that ``x.flac`` pairs with ``x.wav``."""
    by_name: dict[str, Path] = {}
    by_folded_name: dict[str, list[Path]] = {}
    for path in list_audio_files(folder):
        by_name[path.stem] = path
        by_folded_name.setdefault(path.stem.casefold(), []).append(path)
    return NamedAudioFiles(by_name, [group for group in by_folded_name.values() if len(group) > 1])


def describe_name_clashes(groups: Iterable[list[Path]], shown: int = 5) -> str:
    """The clashes of ``audio_files_by_name`` in words, a few of each kind with a count."""
    same_format, other_format = [], []
    for group in groups:
        formats = {path.suffix.casefold() for path in group}
        (same_format if len(formats) == 1 else other_format).append(" and ".join(str(path) for path in group))
    parts = []
    for groups_of_kind, what in ((same_format, "differ only in case"),
                                 (other_format, "are held by files in different formats")):
        if groups_of_kind:
            more = f" (and {len(groups_of_kind) - shown} more)" if len(groups_of_kind) > shown else ""
            parts.append(f"{len(groups_of_kind)} name(s) that {what}: {'; '.join(groups_of_kind[:shown])}{more}")
    return "; and ".join(parts)
