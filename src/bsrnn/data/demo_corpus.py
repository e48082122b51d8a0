"""The built-in demo corpus: paired clean/noisy clips synthesised in memory from a seed.

``demo_corpus()`` returns a ``Corpus`` of in-memory pairs (nothing is downloaded; a generated
corpus is cached, see ``demo_cache``); ``layout.write_corpus`` puts it on disk in the
``DATA/{train,test}/{clean,noisy}`` layout when a command needs files; ``write_demo_audio``
writes a few test pairs for trying ``bsrnn enhance`` and ``bsrnn score`` by hand. Defaults: 48
training pairs of 1.5-3 s and 8 test pairs of 2-3 s at 16 kHz, and 8 validation pairs like the
test pairs; small enough that an epoch of a tiny model takes seconds.

Item ``i`` of a split is a function of (seed, split, i) only, so asking for more items keeps
the first ones unchanged. Its noise kind and SNR cycle through every combination: kind
``i % K``, SNR ``(i + i // K) % S`` for K kinds and S SNRs (with five of each, every 25 items
hold each combination once). The SNR is exact over the whole clip, silences included:
``10 log10(sum(clean^2) / sum((noisy - clean)^2))``. Names read like
``train_007_babble_+10dB``; training, validation and test use different synthetic speakers.

The training speakers span the voices' pitch range (``synth.PITCH_RANGE_HZ``, 95-210 Hz): speaker
``k`` of 6 draws its pitch from the ``k``-th sixth of it. Validation and test speakers are drawn
from the whole range, as unseen voices would be. Drawn freely, seed 0's six training voices all
fell at 158-200 Hz and both test voices near 115 Hz: a model trained on them damaged the test
voices' low harmonics, and after the demo's training (``bsrnn.demo.SMALL_MODEL``) the enhanced
test files scored below the noisy ones on STOI (-0.004; +0.05 to +0.06 with these training voices).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bsrnn.audio import SAMPLE_RATE, write_wav
from bsrnn.data.demo_cache import cache_path, load_cached, store
from bsrnn.data.layout import Corpus
from bsrnn.data.sources import ArraySource, Pair
from bsrnn.data.synth import NOISE_KINDS, Speaker, make_noise, random_speaker, speech_like

logger = logging.getLogger(__name__)

DEFAULT_SNRS_DB: tuple[float, ...] = (-5.0, 0.0, 5.0, 10.0, 15.0)
_SPLIT_IDS = {"train": 0, "test": 1, "valid": 2}
SPEAKERS_PER_SPLIT = {"train": 6, "test": 2, "valid": 2}
_PEAK_LIMIT = 0.95


def demo_condition(index: int, snrs_db: Sequence[float], noise_kinds: Sequence[str]) -> tuple[str, float]:
    """Noise kind and SNR (dB) of item ``index``; see the module docstring for the rule."""
    kinds, snrs = len(noise_kinds), len(snrs_db)
    return noise_kinds[index % kinds], float(snrs_db[(index + index // kinds) % snrs])


def demo_name(split: str, index: int, kind: str, snr_db: float) -> str:
    """The pair name, e.g. ``train_007_babble_+10dB``."""
    return f"{split}_{index:03d}_{kind}_{snr_db:+g}dB"


def demo_speaker(seed: int, split: str, speaker_id: int) -> Speaker:
    """Voice ``speaker_id`` of ``split`` (item ``i`` has voice ``i`` modulo the split's count):
    a training voice from its own slice of the pitch range, any other from the whole range."""
    speakers = SPEAKERS_PER_SPLIT[split]
    if not 0 <= speaker_id < speakers:
        raise ValueError(f"the {split} split has speakers 0-{speakers - 1}, got {speaker_id}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_IDS[split], 1_000_000 + speaker_id]))
    return random_speaker(rng, (speaker_id, speakers) if split == "train" else None)


def demo_pair(
    seed: int,
    split: str,
    index: int,
    seconds: tuple[float, float],
    snrs_db: Sequence[float] = DEFAULT_SNRS_DB,
    noise_kinds: Sequence[str] = NOISE_KINDS,
) -> Pair:
    """Item ``index`` of ``split``: a speech-like clip and its mixture with one noise."""
    split_id = _SPLIT_IDS[split]
    speaker = demo_speaker(seed, split, index % SPEAKERS_PER_SPLIT[split])
    rng = np.random.default_rng(np.random.SeedSequence([seed, split_id, index]))
    n = int(rng.uniform(*seconds) * SAMPLE_RATE)
    kind, snr_db = demo_condition(index, snrs_db, noise_kinds)

    level_db = -26.0 + rng.uniform(-4.0, 4.0)  # clean RMS level, dBFS
    clean = speech_like(rng, n, speaker) * 10 ** (level_db / 20)
    clean_power = np.mean(clean**2)
    noise = make_noise(kind, rng, n) * np.sqrt(clean_power / 10 ** (snr_db / 10))
    noisy = clean + noise
    peak = max(np.max(np.abs(noisy)), np.max(np.abs(clean)))
    if peak > _PEAK_LIMIT:  # scale both alike: the SNR is unchanged
        clean, noisy = clean * (_PEAK_LIMIT / peak), noisy * (_PEAK_LIMIT / peak)
    return _pair_of(split, demo_name(split, index, kind, snr_db), clean.astype(np.float32), noisy.astype(np.float32))


def demo_corpus(
    seed: int = 0,
    num_train: int = 48,
    num_test: int = 8,
    num_valid: int = 8,
    train_seconds: tuple[float, float] = (1.5, 3.0),
    test_seconds: tuple[float, float] = (2.0, 3.0),
    snrs_db: Sequence[float] = DEFAULT_SNRS_DB,
    noise_kinds: Sequence[str] = NOISE_KINDS,
) -> Corpus:
    """A deterministic in-memory corpus of synthetic speech in noise (1-3 s to make, then cached).

    Its ``valid`` split (other utterances, the test split's lengths) is what a ``--demo`` run
    validates on, so that its test split stays for ``evaluate``.
    """
    if min(num_train, num_test, num_valid) < 0:
        raise ValueError(f"pair counts must be >= 0, got num_train={num_train}, num_test={num_test}, "
                         f"num_valid={num_valid}")
    for bounds in (train_seconds, test_seconds):
        if not 0.04 <= bounds[0] <= bounds[1]:
            raise ValueError(f"clip lengths must satisfy 0.04 <= low <= high seconds, got {bounds}")
    unknown = [kind for kind in noise_kinds if kind not in NOISE_KINDS]
    if unknown or not noise_kinds or not snrs_db:
        raise ValueError(f"need at least one SNR and noise kinds from {NOISE_KINDS}, got {list(noise_kinds)}")
    started = time.monotonic()
    arguments = {"seed": seed, "num_train": num_train, "num_test": num_test, "num_valid": num_valid,
                 "train_seconds": list(train_seconds), "test_seconds": list(test_seconds),
                 "snrs_db": [float(snr) for snr in snrs_db], "noise_kinds": list(noise_kinds)}
    path = cache_path(arguments)
    splits = load_cached(path, tuple(_SPLIT_IDS)) if path is not None else None
    made = "Loaded" if splits is not None else "Generated"
    if splits is None:
        sizes = {"train": (num_train, train_seconds), "test": (num_test, test_seconds),
                 "valid": (num_valid, test_seconds)}
        splits = {split: [_items_of(demo_pair(seed, split, i, seconds, snrs_db, noise_kinds)) for i in range(count)]
                  for split, (count, seconds) in sizes.items()}
        if path is not None:
            store(path, splits)
    corpus = Corpus(**{split: [_pair_of(split, *item) for item in items] for split, items in splits.items()},
                    layout=f"demo corpus, seed {seed}")
    logger.info("%s %s in %.1f s", made, corpus.describe(), time.monotonic() - started)
    return corpus


def _items_of(pair: Pair) -> tuple[str, np.ndarray, np.ndarray]:
    return pair.name, pair.clean.samples, pair.noisy.samples


def _pair_of(split: str, name: str, clean: np.ndarray, noisy: np.ndarray) -> Pair:
    return Pair(name, ArraySource(clean, SAMPLE_RATE, f"demo/{split}/clean/{name}"),
                ArraySource(noisy, SAMPLE_RATE, f"demo/{split}/noisy/{name}"))


def write_demo_audio(out_dir: str | Path, count: int = 3, seed: int = 0) -> tuple[Path, Path]:
    """Write the first ``count`` demo test pairs as 16 kHz WAVs; return ``(clean_dir, noisy_dir)``.

    The demo set lives only in memory, so without these files a demo user has nothing to try
    ``bsrnn enhance`` and ``bsrnn score`` on. They are the test split's first items (the ones
    the demo run validates on, never trained on), as ``out_dir/{clean,noisy}/NAME.wav`` with
    the same names on both sides, which is the pairing ``bsrnn score`` expects.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    root = Path(out_dir)
    clean_dir, noisy_dir = root / "clean", root / "noisy"
    corpus = demo_corpus(seed=seed, num_train=0, num_test=count)
    for folder in (clean_dir, noisy_dir):
        folder.mkdir(parents=True, exist_ok=True)
    for pair in corpus.test:
        for folder, source in ((clean_dir, pair.clean), (noisy_dir, pair.noisy)):
            samples, rate = source.load()
            write_wav(folder / f"{pair.name}.wav", samples, rate)
    logger.info("Wrote %d clean/noisy demo pairs under %s", count, root)
    return clean_dir, noisy_dir
