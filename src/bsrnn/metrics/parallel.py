"""Run one CPU-bound task over many jobs in helper processes, in order, with a progress bar.

Scoring a test set is the one user: each job (one file) takes ~0.1-1 s of numpy and C code,
so processes, not threads, are what make it faster. How the helpers are started decides how
soon they help:

- forked from this process when that is safe (``fork_is_safe``: no torch, no other thread,
  which holds in ``bsrnn score``): a fork starts in milliseconds with every import already
  done, so this process only hands out jobs and collects;
- otherwise spawned (``bsrnn evaluate`` holds a model, and torch's threads do not survive a
  fork): a spawned helper spends a second or more importing, so this process works through
  the list from the front meanwhile, and the helpers take jobs from the back once warm.

Either way OpenBLAS runs single-threaded in every process (``single_threaded_blas``), and the
results do not depend on the number of workers: each job is the same function of its input.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, as_completed, wait
from pathlib import Path
from typing import Any, TypeVar

from tqdm import tqdm

from bsrnn.workers import init_worker, start_workers

Job = TypeVar("Job")
Result = TypeVar("Result")

PARENT_TAKES_JOBS = True
"""Whether this process works through jobs while spawned helpers start; tests turn it off to
make the helpers do all the work."""

_MISSING = object()
"""Marks a job whose result has not come back (any value, None included, is a result)."""

# OpenBLAS thread-count entry points as numpy's and scipy's wheels name them (the 64-bit-integer
# build numpy ships adds "64_"), and as a system OpenBLAS names them.
_OPENBLAS_THREAD_CALLS = [(f"{prefix}set_num_threads{suffix}", f"{prefix}get_num_threads{suffix}")
                          for prefix in ("scipy_openblas_", "openblas_") for suffix in ("64_", "")]


def _loaded_openblas_libraries() -> list[ctypes.CDLL]:
    """Every OpenBLAS this process has loaded (numpy and scipy each bring their own); Linux only."""
    try:
        maps = Path("/proc/self/maps").read_text(encoding="utf-8")
    except OSError:
        return []
    paths = sorted({line.split()[-1] for line in maps.splitlines()
                    if "openblas" in line.lower() and line.split()[-1].startswith("/")})
    libraries = []
    for path in paths:
        try:
            libraries.append(ctypes.CDLL(path))  # already mapped: the same library, no reload
        except OSError:
            continue
    return libraries


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """OpenBLAS at one thread in this process for the block (restored after).

    The metrics multiply small matrices; OpenBLAS threads only contend with the scoring
    processes for the same cores. Measured: 12 files scored in one process on 2 busy cores,
    1.37 s with one BLAS thread against 2.10 s with two. Helpers get one thread through their
    environment (spawned) or inherit this setting (forked). Results do not change: the tests
    compare scores across worker counts bit for bit. Does nothing where OpenBLAS is not found.
    """
    restore = []
    for library in _loaded_openblas_libraries():
        for setter_name, getter_name in _OPENBLAS_THREAD_CALLS:
            setter = getattr(library, setter_name, None)
            getter = getattr(library, getter_name, None)
            if setter is not None and getter is not None:
                restore.append((setter, int(getter())))
                setter(1)
                break
    try:
        yield
    finally:
        for setter, threads in restore:
            setter(threads)


def fork_is_safe() -> bool:
    """Whether helpers may be forked from this process instead of spawned.

    A forked helper is a copy of this (already warm) process and can work at once; a spawned
    one starts a fresh interpreter and spends ~1.5-2 s importing scipy before its first job,
    which on a small set is most of the time there is to save. Forking is only safe when this
    process has no other thread (a child keeps only the forking thread, and any lock another
    thread held stays locked) and has not loaded torch (whose OpenMP pool and CUDA state do not
    survive a fork): true for ``bsrnn score``, not for ``bsrnn evaluate`` (which holds a model).
    """
    return ("fork" in multiprocessing.get_all_start_methods() and "torch" not in sys.modules
            and threading.active_count() == 1)


class _NoProgress:
    """Stands in for a disabled tqdm bar.

    A tqdm instance starts tqdm's monitor thread even when disabled, and a disabled bar never
    stops it; with that thread alive, the next call could no longer fork its helpers.
    """

    def update(self, count: int = 1) -> None:
        """Nothing to show."""

    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None


def _progress_bar(total: int, progress: bool, desc: str, unit: str) -> Any:
    return tqdm(total=total, desc=desc, unit=unit, disable=None) if progress else _NoProgress()


def _in_forked_helpers(task: Callable[[Job], Result], jobs: Sequence[Job], workers: int,
                       results: list[Any], bar: Callable[[], Any], warm_up: Callable[[], None]) -> None:
    """Every job in ``workers`` processes forked from this (warm) process.

    Forked helpers start in milliseconds, so this process need not work while they start (as
    it must with spawned ones): it hands out single jobs and collects. Every helper takes the
    next job when it finishes one, so the last one to finish is at most one job behind.
    """
    warm_up()  # the children inherit the imports
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"),
                                   initializer=init_worker, initargs=(os.getpid(),))
    try:
        # With the fork method every process is created at the first submit, before the
        # executor starts its own threads; the progress bar (and its monitor thread) after.
        futures = {executor.submit(task, job): index for index, job in enumerate(jobs)}
        with bar() as progress:
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                progress.update()
    finally:
        executor.shutdown(wait=False, cancel_futures=True)


def _with_spawned_helpers(task: Callable[[Job], Result], jobs: Sequence[Job], helpers: int,
                          results: list[Any], progress: Any, warm_up: Callable[[], None]) -> None:
    """Work in this process while ``helpers`` spawned processes start, then share the rest.

    A spawned helper spends a second or more importing before it can work. This process takes
    jobs from the front of the list meanwhile, and each helper takes jobs from the back once it
    is warm (two at a time, so it never idles while this process is busy), so adding workers
    never makes a small set much slower and a large set approaches ``helpers + 1`` times faster.
    """
    executor, warming = start_workers(helpers, warm_up)
    todo = deque(range(len(jobs)))
    in_flight: dict[Future, int] = {}
    try:
        while todo or in_flight:
            warm = sum(1 for probe in warming if probe.done() and probe.result() is None)
            while todo and len(in_flight) < 2 * warm:
                index = todo.pop()
                in_flight[executor.submit(task, jobs[index])] = index
            if todo and PARENT_TAKES_JOBS:
                index = todo.popleft()
                results[index] = task(jobs[index])
                progress.update()
            else:
                unfinished = [future for future in (*warming, *in_flight) if not future.done()]
                wait(unfinished, return_when=FIRST_COMPLETED)
            for future in [future for future in in_flight if future.done()]:
                results[in_flight.pop(future)] = future.result()
                progress.update()
    finally:
        # Do not wait for helpers still importing: they exit on their own once started.
        executor.shutdown(wait=False, cancel_futures=True)


def run_jobs(task: Callable[[Job], Result], jobs: Sequence[Job], workers: int,
             warm_up: Callable[[], None], progress: bool = True, desc: str = "working",
             unit: str = "job") -> list[Result]:
    """``[task(job) for job in jobs]``, on up to ``workers`` processes, in input order.

    ``workers=1`` runs in this process. With more, ``workers`` helpers forked from this
    process do every job when forking is safe (``fork_is_safe``); otherwise ``workers - 1``
    spawned helpers join this process. ``task`` and ``warm_up`` (the imports ``task`` needs,
    run once per helper before its first job) must be functions of an importable module, and
    jobs and results picklable. A job that raises raises here. ``progress`` shows a bar
    labelled ``desc`` counting ``unit``.
    """
    results: list[Any] = [_MISSING] * len(jobs)
    workers = min(workers, len(jobs))

    def bar() -> Any:
        return _progress_bar(len(jobs), progress, desc, unit)

    with single_threaded_blas():
        if workers <= 1:
            with bar() as shown:
                for index, job in enumerate(jobs):
                    results[index] = task(job)
                    shown.update()
        elif fork_is_safe():
            _in_forked_helpers(task, jobs, workers, results, bar, warm_up)
        else:
            with bar() as shown:
                _with_spawned_helpers(task, jobs, workers - 1, results, shown, warm_up)
    assert not any(result is _MISSING for result in results), "every job either returned or raised"
    return results
