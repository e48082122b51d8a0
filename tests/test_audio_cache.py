"""``--cache-audio``: the training set decoded once, int16 for 16-bit files, bit-identical crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bsrnn.audio import read_audio, write_audio
from bsrnn.data.cache import CachedSource, cache_pairs, decode_file
from bsrnn.data.datasets import TrainSet
from bsrnn.data.demo_corpus import demo_corpus
from bsrnn.data.layout import find_corpus, write_corpus
from bsrnn.data.sources import ArraySource, FileSource
from bsrnn.errors import DataError
from e2e import TINY, assert_same_training_state, bsrnn, checkpoint


@pytest.mark.parametrize("subtype, dtype", [("PCM_16", np.int16), ("FLOAT", np.float32), ("PCM_24", np.float32)])
def test_a_cached_file_loads_exactly_the_samples_the_file_reader_returns(
    tmp_path: Path, subtype: str, dtype: type
) -> None:
    audio = np.random.default_rng(0).uniform(-0.9, 0.9, 16000).astype(np.float32)
    audio[:4] = [-1.0, 1.0 - 2**-15, 0.0, -2**-15]  # the int16 extremes and smallest step
    path = tmp_path / "clip.wav"
    write_audio(path, audio, 16000, subtype=subtype)

    cached = decode_file(FileSource(path))
    expected, rate = read_audio(path)
    loaded, loaded_rate = cached.load()

    assert cached.samples.dtype == dtype
    assert loaded.dtype == np.float32 and loaded_rate == rate == 16000
    assert np.array_equal(loaded, expected)
    assert cached.describe() == str(path)  # messages still name the file
    assert cached.header() == FileSource(path).header()


def test_a_16_bit_flac_is_cached_as_int16_and_loads_exactly_what_the_reader_returns(tmp_path: Path) -> None:
    path = tmp_path / "clip.flac"
    write_audio(path, np.random.default_rng(0).uniform(-0.9, 0.9, 16000), 16000)
    cached = decode_file(FileSource(path))
    assert cached.samples.dtype == np.int16
    assert np.array_equal(cached.load()[0], read_audio(path)[0])


def test_16_bit_files_take_half_the_memory_of_float32(tmp_path: Path) -> None:
    path = tmp_path / "clip.wav"
    write_audio(path, np.zeros(8000, dtype=np.float32) + 0.25, 16000)
    assert decode_file(FileSource(path)).nbytes == 8000 * 2


def test_a_file_that_cannot_be_decoded_is_named_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "broken.wav"
    path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(DataError, match="broken.wav.*Fix"):
        decode_file(FileSource(path))


def test_cached_training_crops_equal_the_uncached_ones_bit_for_bit(tmp_path: Path) -> None:
    corpus = demo_corpus(seed=1, num_train=6, num_test=1)
    on_disk = find_corpus(write_corpus(corpus, tmp_path / "data"))
    cached = cache_pairs(on_disk.train, progress=False)
    assert all(isinstance(side, CachedSource) for pair in cached for side in pair[1:])
    assert [pair.name for pair in cached] == [pair.name for pair in on_disk.train]

    plain, fast = TrainSet(on_disk.train, cut_len=8000, seed=5), TrainSet(cached, cut_len=8000, seed=5)
    for key in [(0, 0), (0, 5), (3, 2), (7, 4)]:
        for a, b in zip(plain[key], fast[key]):
            assert a.dtype == b.dtype == torch.float32
            assert torch.equal(a, b)


def test_in_memory_sources_are_kept_as_they_are() -> None:
    corpus = demo_corpus(seed=1, num_train=2, num_test=1)
    cached = cache_pairs(corpus.train, progress=False)
    assert all(isinstance(side, ArraySource) for pair in cached for side in pair[1:])
    assert cached[0].clean is corpus.train[0].clean


@pytest.mark.slow
def test_training_with_cache_audio_is_bit_identical_to_training_without(tmp_path: Path) -> None:
    data = write_corpus(demo_corpus(seed=0), tmp_path / "data")
    args = [arg for arg in TINY if arg != "--demo"]
    runs = {}
    for name, extra in (("plain", []), ("cached", ["--cache-audio"])):
        run_dir = tmp_path / name
        result = bsrnn("train", "--data-dir", str(data), *args, "--run-dir", str(run_dir), "--max-steps", "3", *extra)
        assert result.returncode == 0, result.stdout + result.stderr
        runs[name] = checkpoint(run_dir)
    assert "Cached 48 training pairs in memory" in result.stdout + result.stderr
    assert runs["cached"]["global_step"] == 3
    assert_same_training_state(runs["plain"], runs["cached"])
