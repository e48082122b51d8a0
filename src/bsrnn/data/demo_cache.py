"""A disk cache of generated demo corpora: synthesis costs 1-3 s per process, a read 20 ms.

Every ``bsrnn train --demo`` (and every process of the test suite that uses the demo set)
synthesised the same corpus again. The corpus is a pure function of ``demo_corpus``'s
arguments and of the code that makes it, so a file keyed by both is exactly the corpus:

- The key is a SHA-256 of the arguments, numpy's version (its FFTs make the audio), and the
  source of the modules that synthesise it (``demo_corpus.py``, ``synth.py``). Changed code
  never reads an old file; storing a file removes those of other code versions.
- The directory: ``$BSRNN_CACHE_DIR``, else ``$XDG_CACHE_HOME/bsrnn``, else ``~/.cache/bsrnn``.
  ``BSRNN_CACHE_DIR=off`` (or empty) turns the cache off.
- A file is written to a temporary name in the directory and renamed over its final name
  (a reader never sees half a file; two writers of one key write the same bytes), and holds
  an xxh3-128 digest of its audio and names: a file that fails it, or cannot be read, is
  ignored and rewritten. A directory that cannot be written only costs the synthesis.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

logger = logging.getLogger(__name__)

CACHE_ENV = "BSRNN_CACHE_DIR"
Items = list[tuple[str, np.ndarray, np.ndarray]]
"""One split: (name, clean, noisy) per pair."""
_SOURCES = ("demo_corpus.py", "synth.py")


def cache_dir() -> Path | None:
    """Where demo corpora are cached; None when ``$BSRNN_CACHE_DIR`` turns the cache off."""
    configured = os.environ.get(CACHE_ENV)
    if configured is not None:
        return None if configured.strip().lower() in ("", "off") else Path(configured)
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        try:
            base = str(Path.home() / ".cache")
        except RuntimeError:  # no HOME and no password-database entry (some containers): no cache
            return None
    return Path(base) / "bsrnn"


def _code_version() -> str:
    digest = hashlib.sha256(np.__version__.encode())
    for name in _SOURCES:
        digest.update((Path(__file__).parent / name).read_bytes())
    return digest.hexdigest()[:12]


CACHE_FILE = re.compile(r"demo-([0-9a-f]{12})-[0-9a-f]{16}\.npz")
"""The name of a cached corpus, as ``cache_path`` makes it (group 1: the code version)."""


def cache_path(arguments: dict[str, Any]) -> Path | None:
    """The file of a corpus made by ``demo_corpus(**arguments)``, or None without a cache."""
    directory = cache_dir()
    if directory is None:
        return None
    key = hashlib.sha256(json.dumps(arguments, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return directory / f"demo-{_code_version()}-{key}.npz"


def _digest(splits: dict[str, Items]) -> str:
    digest = xxhash.xxh3_128()
    for split in sorted(splits):
        for name, clean, noisy in splits[split]:
            digest.update(f"{split}/{name}/{clean.size}/{noisy.size}".encode())
            digest.update(np.ascontiguousarray(clean, dtype=np.float32).tobytes())
            digest.update(np.ascontiguousarray(noisy, dtype=np.float32).tobytes())
    return digest.hexdigest()


def load_cached(path: Path, splits: Sequence[str]) -> dict[str, Items] | None:
    """The cached splits, or None when the file is absent, unreadable or fails its digest."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            loaded: dict[str, Items] = {}
            for split in splits:
                names = [str(name) for name in stored[f"{split}_names"]]
                ends = np.cumsum(stored[f"{split}_lengths"])
                starts = ends - stored[f"{split}_lengths"]
                clean, noisy = stored[f"{split}_clean"], stored[f"{split}_noisy"]
                loaded[split] = [(name, clean[a:b], noisy[a:b]) for name, a, b in zip(names, starts, ends, strict=True)]
            if str(stored["digest"]) != _digest(loaded):
                logger.warning("Ignoring the demo cache file %s: it fails its digest (it is rewritten)", path)
                return None
            return loaded
    except FileNotFoundError:
        return None
    except Exception as error:  # zipfile.BadZipFile, EOFError, KeyError, ValueError...: any bad file is rewritten
        logger.warning("Ignoring the demo cache file %s: %s (it is rewritten)", path, error)
        return None


def store(path: Path, splits: dict[str, Items]) -> None:
    """Write ``splits`` to ``path`` atomically and remove other code versions' files; on any
    OS error (a read-only home, a full disk) log it and go on: the cache only saves time."""
    arrays: dict[str, np.ndarray] = {"digest": np.array(_digest(splits))}
    for split, items in splits.items():
        arrays[f"{split}_names"] = np.array([name for name, _, _ in items], dtype=str)
        arrays[f"{split}_lengths"] = np.array([clean.size for _, clean, _ in items], dtype=np.int64)
        arrays[f"{split}_clean"] = np.concatenate([clean for _, clean, _ in items] or [np.zeros(0, np.float32)])
        arrays[f"{split}_noisy"] = np.concatenate([noisy for _, _, noisy in items] or [np.zeros(0, np.float32)])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".demo-", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                np.savez(file, **arrays)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        version = path.name.split("-")[1]
        for old in path.parent.glob("demo-*.npz"):
            # Only names this module makes: BSRNN_CACHE_DIR may be a folder shared with other files.
            made_here = CACHE_FILE.fullmatch(old.name)
            if made_here and made_here.group(1) != version and not old.is_symlink():
                old.unlink(missing_ok=True)
    except OSError as error:
        logger.info("Demo corpus not cached in %s: %s", path.parent, error)
