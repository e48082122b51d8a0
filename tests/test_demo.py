"""The built-in demo corpus: deterministic, fast, at the SNRs asked for, and writable."""

from __future__ import annotations

import time

import numpy as np
import pytest

from bsrnn.data import NOISE_KINDS, check_corpus, check_data_dir, demo_corpus, write_corpus
from bsrnn.data.demo import demo_condition
from bsrnn.errors import UserError


def _arrays(pair) -> tuple[np.ndarray, np.ndarray]:
    return pair.clean.load()[0], pair.noisy.load()[0]


def _snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    clean64 = clean.astype(np.float64)
    return float(10 * np.log10(np.sum(clean64**2) / np.sum((noisy.astype(np.float64) - clean64) ** 2)))


@pytest.fixture(scope="module")
def default_corpus():
    started = time.monotonic()
    corpus = demo_corpus(seed=0)
    return corpus, time.monotonic() - started


def test_the_default_demo_corpus_is_generated_in_under_five_seconds(default_corpus) -> None:
    corpus, seconds = default_corpus
    assert seconds < 5.0
    assert len(corpus.train) == 48 and len(corpus.test) == 8


def test_clips_are_16k_mono_of_the_requested_lengths_and_pass_a_deep_check(default_corpus) -> None:
    corpus, _ = default_corpus
    check_corpus(corpus, deep=True)
    for split, (low, high) in (("train", (1.5, 3.0)), ("test", (2.0, 3.0))):
        for pair in corpus.split(split):
            clean, noisy = _arrays(pair)
            assert pair.clean.header().rate == 16000 and clean.ndim == 1
            assert low * 16000 - 1 <= clean.shape[0] <= high * 16000 and noisy.shape == clean.shape
            assert np.max(np.abs(noisy)) <= 0.95 and np.max(np.abs(clean)) <= 0.95


def test_the_mixtures_have_the_snrs_their_names_say(default_corpus) -> None:
    corpus, _ = default_corpus
    for index, pair in enumerate(corpus.train):
        kind, snr = demo_condition(index, (-5, 0, 5, 10, 15), NOISE_KINDS)
        assert pair.name == f"train_{index:03d}_{kind}_{snr:+g}dB"
        assert _snr_db(*_arrays(pair)) == pytest.approx(snr, abs=0.01)


def test_every_noise_kind_meets_every_snr_in_25_items() -> None:
    conditions = {demo_condition(i, (-5, 0, 5, 10, 15), NOISE_KINDS) for i in range(25)}
    assert len(conditions) == 25


def test_the_same_seed_gives_the_same_corpus_and_another_seed_another() -> None:
    first, again, other = (demo_corpus(seed=s, num_train=3, num_test=1) for s in (1, 1, 2))
    for a, b in zip(first.train + first.test, again.train + again.test, strict=True):
        assert a.name == b.name
        assert all(np.array_equal(x, y) for x, y in zip(_arrays(a), _arrays(b), strict=True))
    assert not np.array_equal(_arrays(first.train[0])[1], _arrays(other.train[0])[1])


def test_asking_for_more_items_keeps_the_first_ones() -> None:
    small, large = demo_corpus(seed=3, num_train=2, num_test=0), demo_corpus(seed=3, num_train=4, num_test=0)
    assert np.array_equal(_arrays(small.train[1])[1], _arrays(large.train[1])[1])


def test_custom_snrs_are_honoured() -> None:
    corpus = demo_corpus(seed=0, num_train=4, num_test=0, snrs_db=(2.5, 20.0), noise_kinds=("pink", "hum"))
    measured = [_snr_db(*_arrays(pair)) for pair in corpus.train]
    assert measured == pytest.approx([2.5, 20.0, 20.0, 2.5], abs=0.01)


def test_clean_clips_have_silences_and_syllables() -> None:
    clean, _ = _arrays(demo_corpus(seed=0, num_train=1, num_test=0).train[0])
    frames = clean[: clean.size // 320 * 320].reshape(-1, 320)  # 20 ms
    level_db = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    assert level_db[:3].max() < level_db.max() - 40  # leading silence
    assert np.mean(level_db < level_db.max() - 30) > 0.05  # gaps between syllables


def test_write_corpus_round_trips_through_the_on_disk_layout(tmp_path) -> None:
    corpus = demo_corpus(seed=0, num_train=3, num_test=2)
    write_corpus(corpus, tmp_path / "demo")
    found = check_data_dir(tmp_path / "demo", deep=True)
    assert sorted(p.name for p in found.train) == sorted(p.name for p in corpus.train)
    assert sorted(p.name for p in found.test) == sorted(p.name for p in corpus.test)
    by_name = {pair.name: pair for pair in found.train + found.test}
    for pair in corpus.train + corpus.test:
        for original, restored in zip(_arrays(pair), _arrays(by_name[pair.name]), strict=True):
            assert np.max(np.abs(original - restored)) <= 1 / 32768
    written = sorted(p.relative_to(tmp_path / "demo").as_posix() for p in (tmp_path / "demo").rglob("*") if p.is_file())
    assert len(written) == 10 and all(path.endswith(".wav") for path in written)


def test_write_corpus_refuses_to_overwrite_and_leaves_files_alone(tmp_path) -> None:
    corpus = demo_corpus(seed=0, num_train=1, num_test=1)
    write_corpus(corpus, tmp_path)
    target = tmp_path / "train" / "clean" / f"{corpus.train[0].name}.wav"
    before = target.read_bytes()
    with pytest.raises(UserError, match="overwrite=True"):
        write_corpus(demo_corpus(seed=1, num_train=1, num_test=1), tmp_path)
    assert target.read_bytes() == before
    write_corpus(demo_corpus(seed=1, num_train=1, num_test=1), tmp_path, overwrite=True)
    assert target.read_bytes() != before
