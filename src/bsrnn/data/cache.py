"""An in-memory copy of the training set, decoded once (``--cache-audio``).

Every training step otherwise opens and decodes 2 x batch audio files, whose only use is a 2 s
crop. With the cache, the whole training split is decoded before the first step and each item
is a slice of an array in memory.

Exactness: 16-bit PCM files (WAV or FLAC), the usual corpus format, are kept as their int16
samples (half the memory of float32) and turned into float32 on use by the same scaling
libsndfile applies (x / 32768, exact in float32), so a cached run is bit-identical to an
uncached one (tested). Files of any other encoding are kept as the float32 samples
``read_audio`` returns. VoiceBank+DEMAND's training split (11,572 pairs,
~9.4 h per side) takes about 2 x 1.1 GB.

Cost: the trainer's deep dataset check has already decoded every file once; the cache decodes
them a second time (after the run directory's lock is taken, so a refused second trainer does
not). Each item still converts its whole utterance to float32 before cropping, as the uncached
path does; cropping the int16 first would be cheaper and is not done.

Sharing: DataLoader workers started by ``fork`` (Linux's default start method up to Python
3.13) share the arrays copy-on-write: the memory is paid once per process that built the cache,
i.e. once per DDP rank (each rank needs every file: the shuffle shards batches, not files). With
the ``spawn`` or ``forkserver`` start methods every worker would receive its own copy.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from bsrnn.audio import audio_info, read_audio
from bsrnn.data.sources import AudioHeader, FileSource, Pair

log = logging.getLogger("bsrnn.data")

INT16_SCALE = np.float32(1.0 / 32768.0)
"""libsndfile's int16 -> float normalisation (a power of two: exact in float32)."""


@dataclass(frozen=True, eq=False)
class CachedSource:
    """A decoded clip: int16 (16-bit PCM files) or float32 samples, channels first if several.

    Messages still name the file it came from.
    """

    samples: np.ndarray = field(repr=False)
    rate: int
    origin: str

    def describe(self) -> str:
        return self.origin

    def header(self) -> AudioHeader:
        channels = 1 if self.samples.ndim == 1 else int(self.samples.shape[0])
        return AudioHeader(int(self.rate), channels, int(self.samples.shape[-1]))

    def load(self) -> tuple[np.ndarray, int]:
        if self.samples.dtype == np.int16:
            return np.multiply(self.samples, INT16_SCALE, dtype=np.float32), int(self.rate)
        return np.array(self.samples, dtype=np.float32, copy=True), int(self.rate)

    @property
    def nbytes(self) -> int:
        return int(self.samples.nbytes)


def decode_file(source: FileSource) -> CachedSource:
    """The clip of ``source`` in memory: int16 if the file is 16-bit PCM, else float32.

    16-bit FLAC counts as 16-bit PCM: libsndfile hands out its samples exactly as a WAV's.
    A file that cannot be read raises the ``AudioFileError`` naming it.
    """
    where = str(source.path)
    if audio_info(source.path).subtype == "PCM_16":
        samples, rate = read_audio(source.path, dtype="int16")
        return CachedSource(samples, rate, where)
    samples, rate = source.load()
    return CachedSource(samples, rate, where)


def cache_pairs(pairs: Sequence[Pair], progress: bool = True) -> list[Pair]:
    """``pairs`` with every file decoded into memory; in-memory sources are kept as they are."""
    cached: list[Pair] = []
    total = 0
    for pair in tqdm(pairs, desc="caching audio", unit="pair", disable=None if progress else True, leave=False):
        sides = []
        for side in (pair.clean, pair.noisy):
            if isinstance(side, FileSource):
                side = decode_file(side)
                total += side.nbytes
            sides.append(side)
        cached.append(Pair(pair.name, sides[0], sides[1]))
    if total:
        log.info("Cached %d training pairs in memory: %.2f GB", len(cached), total / 1e9)
    return cached
