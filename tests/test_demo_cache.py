"""The demo corpus cache: the cached corpus is the generated one, bit for bit, and a bad file
or an unusable directory costs only the synthesis."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from bsrnn.data import demo_corpus
from bsrnn.data.demo_cache import CACHE_ENV
from bsrnn.data.layout import Corpus

SMALL = dict(seed=5, num_train=3, num_test=2, num_valid=1)


def _same(a: Corpus, b: Corpus) -> bool:
    for split in ("train", "test", "valid"):
        for p, q in zip(getattr(a, split), getattr(b, split), strict=True):
            if (p.name, p.clean.label, p.noisy.label) != (q.name, q.clean.label, q.noisy.label):
                return False
            if not (np.array_equal(p.clean.samples, q.clean.samples) and np.array_equal(p.noisy.samples, q.noisy.samples)):
                return False
    return True


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def _made(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage().split()[0] for record in caplog.records if "demo corpus, seed" in record.getMessage()]


def test_the_second_corpus_is_read_from_the_cache_and_equals_a_generated_one(
        cache: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO)
    first, second = demo_corpus(**SMALL), demo_corpus(**SMALL)
    assert _made(caplog) == ["Generated", "Loaded"] and len(list(cache.glob("demo-*.npz"))) == 1
    monkeypatch.setenv(CACHE_ENV, "off")
    assert _same(first, second) and _same(second, demo_corpus(**SMALL))
    assert _made(caplog)[-1] == "Generated" and len(list(cache.glob("*"))) == 1


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_a_damaged_cache_file_is_ignored_and_rewritten(
        cache: Path, caplog: pytest.LogCaptureFixture, damage: str) -> None:
    reference = demo_corpus(**SMALL)
    (path,) = cache.glob("demo-*.npz")
    data = bytearray(path.read_bytes())
    if damage == "flip":  # inside the audio: only the digest can tell
        data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data[: len(data) // 2]) if damage == "truncate" else
                     b"not a zip file" if damage == "garbage" else bytes(data))
    caplog.set_level(logging.INFO)
    assert _same(demo_corpus(**SMALL), reference)
    assert "Ignoring the demo cache file" in caplog.text and _made(caplog) == ["Generated"]
    assert _same(demo_corpus(**SMALL), reference) and _made(caplog) == ["Generated", "Loaded"]


def test_a_cache_directory_that_cannot_be_written_costs_only_the_synthesis(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(CACHE_ENV, str(blocker / "cache"))
    assert len(demo_corpus(**SMALL).train) == 3


def test_storing_removes_the_files_of_other_code_versions_only(cache: Path) -> None:
    cache.mkdir()
    (cache / "demo-000000000000-aaaaaaaaaaaaaaaa.npz").write_bytes(b"old")
    (cache / "notes.txt").write_text("the user's")
    (cache / "demo-audio.npz").write_bytes(b"the user's, named like ours")  # in a shared BSRNN_CACHE_DIR
    demo_corpus(**SMALL)
    names = sorted(path.name for path in cache.iterdir())
    assert "demo-000000000000-aaaaaaaaaaaaaaaa.npz" not in names
    assert "notes.txt" in names and "demo-audio.npz" in names and len(names) == 3
