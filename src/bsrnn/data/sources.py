"""Where a clip's samples come from: an audio file on disk or an array in memory.

The corpus, its validation and the datasets only talk to ``AudioSource``: ``header()`` (rate,
channels, frames, cheap) and ``load()`` (the samples). That lets the built-in demo corpus live
in memory and still go through exactly the code paths a real corpus does.

Problems are raised as ``DataProblem``, a ``DataError`` that also carries a machine-readable
``kind`` so validation can group them; its message alone names the file, what was expected,
what was found and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np

from bsrnn.audio import N_FFT, SAMPLE_RATE, AudioFileError, audio_info, read_audio
from bsrnn.data.report import DataProblem

SILENCE_PEAK = 1.0 / 32768.0
"""A clip whose peak is at most one 16-bit step is treated as all-silent."""


class AudioHeader(NamedTuple):
    """What can be known about a clip without decoding it."""

    rate: int
    channels: int
    frames: int


@runtime_checkable
class AudioSource(Protocol):
    """Anything that can describe and produce one clip."""

    def describe(self) -> str:
        """A path or label that names the clip in messages."""
        ...

    def header(self) -> AudioHeader:
        """Rate, channels and frames, cheaply; raises DataProblem."""
        ...

    def load(self) -> tuple[np.ndarray, int]:
        """float32 samples ([frames] if mono, else [channels, frames]) and rate."""
        ...


@dataclass(frozen=True)
class FileSource:
    """A clip in an audio file of any format libsndfile reads; ``header()`` decodes nothing."""

    path: Path

    def describe(self) -> str:
        return str(self.path)

    def header(self) -> AudioHeader:
        where = str(self.path)
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            raise DataProblem.of("missing", where, "no such file") from None
        if size == 0:
            raise DataProblem.of("empty", where, "a file of 0 bytes")
        try:
            with open(self.path, "rb") as handle:  # only to tell permissions from damage
                head = handle.read(12)
        except PermissionError:
            raise DataProblem.of("unreadable", where, "permission denied") from None
        except OSError as error:
            raise DataProblem.of("unreadable", where, f"an I/O error ({error.strerror})") from error
        try:
            info = audio_info(self.path)
        except AudioFileError as error:
            raise DataProblem.of("not_audio", where, f"{error.reason}, starting with {head!r}") from error
        if info.frames == 0:
            raise DataProblem.of("empty", where, f"a {info.format} header with no samples")
        return AudioHeader(info.rate, info.channels, info.frames)

    def load(self) -> tuple[np.ndarray, int]:
        try:
            return read_audio(self.path)
        except AudioFileError as error:
            self.header()  # raises a classified problem when it can tell what is wrong
            detail = f"audio that cannot be decoded ({error.reason})"
            raise DataProblem.of("not_audio", str(self.path), detail) from error


@dataclass(frozen=True, eq=False)
class ArraySource:
    """A clip held in memory (the demo corpus); ``label`` names it in messages."""

    samples: np.ndarray = field(repr=False)
    rate: int
    label: str

    def describe(self) -> str:
        return f"<memory:{self.label}>"

    def header(self) -> AudioHeader:
        if self.samples.size == 0:
            raise DataProblem.of("empty", self.describe(), "an array with no samples")
        channels = 1 if self.samples.ndim == 1 else int(self.samples.shape[0])
        return AudioHeader(int(self.rate), channels, int(self.samples.shape[-1]))

    def load(self) -> tuple[np.ndarray, int]:
        # A copy: tensors made from it must never alias (and let callers mutate) the corpus.
        return np.array(self.samples, dtype=np.float32, copy=True), int(self.rate)


class Pair(NamedTuple):
    """One corpus entry: its name (the file name without its suffix) and both sides."""

    name: str
    clean: AudioSource
    noisy: AudioSource


def sample_problems(samples: np.ndarray, where: str) -> list[DataProblem]:
    """Problems only decoding can find: NaN/inf samples and an all-silent clip."""
    problems = []
    finite = np.isfinite(samples)
    if not finite.all():
        bad = int(samples.size - np.count_nonzero(finite))
        problems.append(DataProblem.of("non_finite", where, f"{bad} NaN/inf samples"))
    elif float(np.max(np.abs(samples), initial=0.0)) <= SILENCE_PEAK:
        problems.append(DataProblem.of("silent", where, "a clip whose peak is at most one 16-bit step"))
    return problems


def load_mono(source: AudioSource) -> np.ndarray:
    """The clip as float32 [frames] at 16 kHz, or a DataProblem naming it.

    Loading does not resample or downmix: the reference trained on mono 16 kHz files and
    validation rejects anything else, so a mismatch here is a corpus problem to fix.
    NaN/inf samples raise; an all-silent clip does not (it only makes PESQ fail, which the
    losses handle), it is reported by the deep validation scan instead.
    """
    samples, rate = source.load()
    where = source.describe()
    if rate != SAMPLE_RATE:
        raise DataProblem.of("rate", where, f"{rate} Hz")
    if samples.ndim != 1:
        raise DataProblem.of("channels", where, f"{samples.shape[0]} channels")
    if samples.shape[0] < N_FFT:
        raise DataProblem.of("too_short", where, f"{samples.shape[0]} samples")
    for problem in sample_problems(samples, where):
        if problem.kind == "non_finite":
            raise problem
    return samples


def load_pair(pair: Pair) -> tuple[np.ndarray, np.ndarray]:
    """Both sides of a pair as mono 16 kHz float32 arrays of equal length."""
    clean = load_mono(pair.clean)
    noisy = load_mono(pair.noisy)
    if clean.shape[0] != noisy.shape[0]:
        raise DataProblem.of(
            "length_mismatch",
            f"{pair.clean.describe()} / {pair.noisy.describe()}",
            f"{clean.shape[0]} and {noisy.shape[0]} samples",
        )
    return clean, noisy

