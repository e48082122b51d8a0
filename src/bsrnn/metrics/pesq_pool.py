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

Workers are spawned (safe after torch or CUDA is initialised) and need neither torch nor scipy,
so one starts in a fraction of a second. They never run the user's main module: a spawned child
normally re-runs the parent's ``__main__`` script (or ``-m`` module) so that functions defined
there can be unpickled, and a script that calls ``bsrnn.train()`` without an
``if __name__ == "__main__":`` guard would then train again in every worker, and never finish.
Every task sent to a worker is a function of this package, so workers do not need ``__main__``.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing.context
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, NamedTuple

import numpy as np
from pesq import PesqError, pesq

from bsrnn.audio import SAMPLE_RATE

log = logging.getLogger(__name__)

_PARENT_POLL_S = 1.0


def _orphan_watch(parent_pid: int) -> None:
    while True:
        time.sleep(_PARENT_POLL_S)
        if os.getppid() != parent_pid:
            os._exit(1)  # the parent died without shutting the pool down (e.g. SIGKILL)


def init_worker(parent_pid: int) -> None:
    """Leave signals to the parent and never outlive it.

    Ctrl-C reaches the whole process group and SLURM signals every process of a job step;
    a worker dying mid-batch would break the trainer's "finish the step, then save" rule,
    so workers ignore SIGINT, SIGTERM and SIGUSR1 and end when the parent shuts them down
    (or, if it is killed, within a second of its death).
    """
    for name in ("SIGINT", "SIGTERM", "SIGUSR1"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    threading.Thread(target=_orphan_watch, args=(parent_pid,), daemon=True).start()


# Each worker is one of several busy processes: math libraries must not add threads of their
# own (a 16-worker pool with 16 OpenBLAS threads each spins 256 threads on 16 cores; even
# pystoi's small matrix products run twice as slowly with threads on a loaded machine).
_SINGLE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _no_warm_up() -> None:
    """Default first task: nothing to import beyond this module."""


@contextlib.contextmanager
def _single_threaded_children() -> Iterator[None]:
    """Environment for processes spawned inside the block (read by the libraries at load)."""
    saved = {name: os.environ.get(name) for name in _SINGLE_THREAD_ENV}
    os.environ.update(_SINGLE_THREAD_ENV)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Within the block, ``__main__`` looks like an interactive session to multiprocessing.

    ``multiprocessing.spawn`` tells a child to re-run the parent's main module when that module
    has a ``__spec__`` (started with ``python -m``) or a ``__file__`` (a script); it reads both
    while starting the child, in the starting thread. Clearing them for that moment sends the
    child no main module to run; they are restored before anything else runs in this thread.
    """
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    names = ("__spec__", "__file__")
    saved = {name: main.__dict__[name] for name in names if name in main.__dict__}
    main.__dict__["__spec__"] = None
    main.__dict__.pop("__file__", None)
    try:
        yield
    finally:
        for name in names:
            if name in saved:
                main.__dict__[name] = saved[name]
            else:
                main.__dict__.pop(name, None)


class _WorkerProcess(multiprocessing.context.SpawnProcess):
    """A spawned process that never runs the parent's main module (see the module docstring).

    ``_Popen`` is where ``Process.start()`` launches the child, whichever thread starts it
    (``ProcessPoolExecutor`` starts workers on demand in ``submit``, and again after a worker
    dies), so hiding ``__main__`` here covers every start of every worker.
    """

    @staticmethod
    def _Popen(process_obj: Any) -> Any:  # noqa: N802 - multiprocessing's name
        with _main_module_hidden():
            return multiprocessing.context.SpawnProcess._Popen(process_obj)


class _WorkerContext(multiprocessing.context.SpawnContext):
    """The 'spawn' start method, with processes that do not run the user's main module."""

    Process = _WorkerProcess


def worker_context() -> multiprocessing.context.BaseContext:
    """The multiprocessing context for helper processes that run only this package's functions.

    Like ``get_context("spawn")`` (safe after torch or CUDA is initialised), except that the
    children never re-run the parent's ``__main__``: a plain script without a main guard works.
    Tasks and their arguments must therefore be picklable without ``__main__`` (functions and
    classes defined in an importable module).
    """
    return _WorkerContext()


def start_workers(workers: int, warm_up: Callable[[], None] = _no_warm_up
                  ) -> tuple[ProcessPoolExecutor, list[Future]]:
    """Spawn ``workers`` processes now, each running ``warm_up`` first; returns its futures.

    'spawn' is safe after torch or CUDA is initialised (nothing is inherited), and the children
    do not re-run the caller's main script (``worker_context``), so ``warm_up`` and every task
    must live in an importable module, not in ``__main__``. Every process is started here, one
    per submitted warm-up task, so all of them get single-threaded math libraries; a warm-up
    future that is done means at least that many workers are ready.
    """
    if getattr(warm_up, "__module__", None) == "__main__":
        raise ValueError(f"start_workers: warm_up must be defined in an importable module, found "
                         f"{warm_up.__qualname__} in __main__ (workers do not run the main script); "
                         "move it into a module")
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=worker_context(),
                                   initializer=init_worker, initargs=(os.getpid(),))
    with _single_threaded_children():
        warming = [executor.submit(warm_up) for _ in range(workers)]
    return executor, warming


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
