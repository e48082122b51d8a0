"""A tiny random BSRNN and a run directory holding it: what the inference tests (precision, PCS) share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from bsrnn.checkpoint import CheckpointManager
from bsrnn.models import BSRNN

TINY_CONFIG = {"num_channel": 8, "num_layer": 1}


def tiny_generator(seed: int = 0, causal: bool = False) -> BSRNN:
    torch.manual_seed(seed)
    return BSRNN(**TINY_CONFIG, causal=causal).eval()


def tone_in_noise(seconds: float = 1.3, seed: int = 0, rate: int = 16000) -> np.ndarray:
    """A modulated 220 Hz tone in a little white noise: something for a generator to enhance."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))
    return (tone + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    """10 log10 of the reference's power over the difference's, in float64."""
    reference = reference.astype(np.float64)
    return float(10 * np.log10(np.sum(reference**2) / max(np.sum((reference - estimate) ** 2), 1e-30)))


def save_run(run: Path, causal: bool = False) -> Path:
    """A run directory whose checkpoint holds ``tiny_generator(causal=causal)``."""
    with CheckpointManager(run) as manager:
        manager.register("model_state_dict", tiny_generator(causal=causal))
        manager.save(metric=0.5, values={"epoch": 0, "step_in_epoch": 0,
                                         "config": {**TINY_CONFIG, "causal": causal}})
    return run


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run directory whose checkpoint holds ``tiny_generator()`` (import it to use it)."""
    return save_run(tmp_path / "run")


@pytest.fixture
def causal_run_dir(tmp_path: Path) -> Path:
    """A run directory whose checkpoint holds ``tiny_generator(causal=True)``."""
    return save_run(tmp_path / "causal_run", causal=True)


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """torch on one thread for the test: a stream makes thousands of tiny network calls, and with two
    threads on a loaded machine each call waits for the other thread (measured 110 ms per LSTM call
    at load 8 on 2 cores, 0.2 ms on one thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
