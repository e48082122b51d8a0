"""Shared pytest fixtures."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The shared reference fixtures: ``$BSRNN_FIXTURES`` or ``../shared/fixtures`` beside the repo.

    A clone elsewhere has no fixtures; tests that need them skip rather than fail.
    """
    override = os.environ.get("BSRNN_FIXTURES")
    default = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
    path = Path(override) if override else default
    if not path.is_dir():
        pytest.skip(f"reference fixtures not found at {path} (set BSRNN_FIXTURES to their folder)")
    return path


_SESSION_CACHE: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    """One demo-corpus cache for the session, shared with the CLI subprocesses (they inherit the
    environment): each demo corpus is synthesised once per run of the suite, never read from a
    cache that another checkout or code version left in the user's home. Removed at the end."""
    if "BSRNN_CACHE_DIR" not in os.environ:
        _SESSION_CACHE.append(tempfile.mkdtemp(prefix="bsrnn-test-cache-"))
        os.environ["BSRNN_CACHE_DIR"] = _SESSION_CACHE[0]


def pytest_unconfigure(config: pytest.Config) -> None:
    for directory in _SESSION_CACHE:
        shutil.rmtree(directory, ignore_errors=True)
