"""A tiny random BSRNN and a run directory holding it: what the inference tests (precision, PCS) share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bsrnn.checkpoint import CheckpointManager
from bsrnn.models import BSRNN

TINY_CONFIG = {"num_channel": 8, "num_layer": 1}


def tiny_generator(seed: int = 0) -> BSRNN:
    torch.manual_seed(seed)
    return BSRNN(**TINY_CONFIG).eval()


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    """10 log10 of the reference's power over the difference's, in float64."""
    reference = reference.astype(np.float64)
    return float(10 * np.log10(np.sum(reference**2) / max(np.sum((reference - estimate) ** 2), 1e-30)))


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run directory whose checkpoint holds ``tiny_generator()`` (import it to use it)."""
    run = tmp_path / "run"
    with CheckpointManager(run) as manager:
        manager.register("model_state_dict", tiny_generator())
        manager.save(metric=0.5, values={"epoch": 0, "step_in_epoch": 0, "config": TINY_CONFIG})
    return run
