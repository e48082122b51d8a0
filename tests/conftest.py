"""Shared pytest fixtures."""

from __future__ import annotations

import os
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
