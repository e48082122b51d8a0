"""Shared pytest fixtures."""

from __future__ import annotations

import os
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


def pytest_configure(config: pytest.Config) -> None:
    """One demo-corpus cache for the session, shared with the CLI subprocesses (they inherit the
    environment): each demo corpus is synthesised once per run of the suite, never read from a
    cache that another checkout or code version left in the user's home."""
    if "BSRNN_CACHE_DIR" not in os.environ:
        os.environ["BSRNN_CACHE_DIR"] = tempfile.mkdtemp(prefix="bsrnn-test-cache-")
