"""Wide-band PESQ that reports failures instead of raising, and a persistent pool to batch it.

The MetricGAN discriminator is trained to predict the PESQ of each (clean, estimate) crop in a
batch. PESQ is a CPU-bound C routine (~30 ms per 2 s crop) and fails outright on silent or
too-short crops (``NoUtterancesError``, ``BufferTooShortError``). Reference recipes compute it
synchronously and drop the whole discriminator update when one crop fails. ``PesqPool`` instead
keeps worker processes alive across training steps, lets the trainer ``submit`` a batch, run
the generator step, and collect the scores later, and returns a validity mask so that a failed
crop costs one entry, not the batch.

PESQ is deterministic and every crop is scored by the same function on the same float data, so
scores are bit-identical whatever the worker count (``workers=0`` scores in-process, for tests
and for debugging determinism).

Workers are started by ``bsrnn.workers.start_workers`` (spawned, single-threaded, never running
the user's main script, never outliving the trainer) and need neither torch nor scipy, so one
starts in a fraction of a second.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, NamedTuple

import numpy as np
from pesq import PesqError, pesq

from bsrnn.audio import SAMPLE_RATE
from bsrnn.workers import start_workers

log = logging.getLogger(__name__)

def _as_signal(value: Any) -> np.ndarray:
    """A 1-D numpy view of a numpy array or a torch tensor, without importing torch."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    samples = np.asarray(value)
    if samples.ndim != 1:
        raise ValueError(f"PESQ needs 1-D signals (samples,), got shape {samples.shape}")
    return samples


def wideband_pesq(clean: Any, estimate: Any) -> tuple[float, str | None]:
    """P.862.2 wide-band PESQ at 16 kHz as ``(score, None)``, or ``(nan, reason)`` on failure.

    Both signals are trimmed to the shorter length. Silent or non-finite signals are rejected
    before the C routine sees them (it would divide by zero and raise an unhelpful error);
    PESQ's own refusals (no utterances, shorter than 0.25 s) come back as the reason.
    """
    clean_signal, estimate_signal = _as_signal(clean), _as_signal(estimate)
    length = min(len(clean_signal), len(estimate_signal))
    clean_signal, estimate_signal = clean_signal[:length], estimate_signal[:length]
    for role, samples in (("reference", clean_signal), ("estimate", estimate_signal)):
        if not np.all(np.isfinite(samples)):
            return float("nan"), f"PESQ skipped: the {role} has non-finite samples"
        if length > 0 and not np.any(samples):
            return float("nan"), f"PESQ skipped: the {role} is digital silence"
    try:
        return float(pesq(SAMPLE_RATE, clean_signal, estimate_signal, "wb")), None
    except (PesqError, ValueError) as error:
        # ValueError: the C routine's NaN path on degenerate signals; fs and mode are fixed here.
        message = error.args[0] if error.args else ""
        if isinstance(message, bytes):
            message = message.decode(errors="replace")
        return float("nan"), f"PESQ failed ({type(error).__name__}: {message})"


def _score_items(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[float]:
    """Worker task: PESQ of each pair, NaN where it failed."""
    return [wideband_pesq(clean, estimate)[0] for clean, estimate in pairs]


class PesqBatch(NamedTuple):
    """PESQ of a batch: ``scores`` float32 [B] (NaN where invalid) and ``valid`` bool [B].

    Select with the mask (``scores[valid]``) rather than multiplying by it: NaN * 0 is NaN.
    """

    scores: np.ndarray
    valid: np.ndarray


class PendingPesq:
    """Scores of one submitted batch; ``result()`` blocks until they are ready.

    ``wait_s`` is the time ``result()`` spent blocked (in-process mode: the scoring itself).
    """

    def __init__(self, pool: PesqPool, pairs: list[tuple[np.ndarray, np.ndarray]],
                 chunks: list[Future] | None = None,
                 executor: ProcessPoolExecutor | None = None) -> None:
        self._pool = pool
        self._pairs = pairs if chunks is None else []  # kept only to score in-process
        self._chunks = chunks  # None: score in-process at result() time (workers=0)
        self._executor = executor
        self._batch_size = len(pairs)
        self._result: PesqBatch | None = None
        self.wait_s = 0.0

    def done(self) -> bool:
        """True when result() would not block."""
        if self._result is not None:
            return True
        return self._chunks is not None and all(chunk.done() for chunk in self._chunks)

    def result(self) -> PesqBatch:
        """Wait for the batch; return scores and validity mask (cached after the first call)."""
        if self._result is not None:
            return self._result
        started = time.perf_counter()
        if self._chunks is None:
            scores = _score_items(self._pairs)
        else:
            try:
                scores = [score for chunk in self._chunks for score in chunk.result()]
            except BrokenProcessPool as error:
                # A worker died (crash in the C routine, OOM kill): lose this batch, not the run.
                assert self._executor is not None, "pooled batches know their executor"
                scores = [float("nan")] * self._batch_size
                self._pool._replace_broken(self._executor, error)
        self.wait_s = time.perf_counter() - started
        self._pool.wait_s_total += self.wait_s
        values = np.asarray(scores, dtype=np.float32).reshape(self._batch_size)
        self._result = PesqBatch(scores=values, valid=np.isfinite(values))
        self._pairs = []
        return self._result


class PesqPool:
    """Persistent worker processes that score (clean, estimate) batches with wide-band PESQ.

    Create it once per training run and reuse it each step::

        with PesqPool(workers=2) as pool:
            pending = pool.submit(clean_crops, estimated_crops)
            ...  # generator step
            scores, valid = pending.result()

    ``workers=0`` scores in the calling process when ``result()`` is called. ``wait_s_total``
    accumulates the time spent blocked in ``result()``, for reporting the share of step time
    that waits for PESQ.
    """

    def __init__(self, workers: int = 2) -> None:
        if workers < 0:
            raise ValueError(f"PesqPool workers must be >= 0 (0 = in-process), got {workers}")
        self.workers = workers
        self.wait_s_total = 0.0
        self._closed = False
        self._executor: ProcessPoolExecutor | None = None
        if workers > 0:
            self._executor, _ = start_workers(workers)

    def submit(self, clean: Sequence[Any], estimates: Sequence[Any]) -> PendingPesq:
        """Start scoring a batch of 1-D signals (numpy arrays or CPU tensors, or a [B, T] array).

        The signals are copied, so the caller may reuse its buffers right away.
        """
        if self._closed:
            raise RuntimeError("PesqPool.submit() after close(); create a new pool")
        if len(clean) != len(estimates):
            raise ValueError(
                f"PesqPool.submit() needs as many estimates as clean signals, got {len(clean)} "
                f"clean and {len(estimates)} estimates"
            )
        pairs = [(np.array(_as_signal(clean_item)), np.array(_as_signal(estimate)))
                 for clean_item, estimate in zip(clean, estimates)]
        if self._executor is None:
            return PendingPesq(self, pairs)
        # Contiguous chunks, one per worker: fewer round trips, same per-item function.
        bounds = np.linspace(0, len(pairs), min(self.workers, len(pairs)) + 1).astype(int)
        slices = [pairs[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])]
        try:
            chunks = [self._executor.submit(_score_items, chunk) for chunk in slices]
        except BrokenProcessPool as error:  # a worker died since the last batch was collected
            self._replace_broken(self._executor, error)
            assert self._executor is not None
            chunks = [self._executor.submit(_score_items, chunk) for chunk in slices]
        return PendingPesq(self, pairs, chunks, self._executor)

    def score(self, clean: Sequence[Any], estimates: Sequence[Any]) -> PesqBatch:
        """Submit and wait: the synchronous form of ``submit(...).result()``."""
        return self.submit(clean, estimates).result()

    def _replace_broken(self, broken: ProcessPoolExecutor, error: BaseException) -> None:
        """Start fresh workers once per breakage, so later batches are scored again."""
        if self._closed or broken is not self._executor:
            return  # already replaced by another pending batch, or shutting down
        log.warning("a PESQ worker died (%s); its pending batches are marked invalid and the "
                    "workers are restarted", error)
        broken.shutdown(wait=False, cancel_futures=True)
        self._executor, _ = start_workers(self.workers)

    def close(self) -> None:
        """Stop the workers; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> PesqPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
