"""Helper processes that run this package's functions: spawned, single-threaded, never running
the user's main script, never outliving their parent.

Several parts of bsrnn fan CPU-bound work out to processes: PESQ during training
(``bsrnn.metrics.pesq_pool``), metric scoring (``bsrnn.metrics.parallel``) and data
preparation (``bsrnn.data.prepare``). They share one way of starting them, here, because each
rule is a lesson learnt once:

- 'spawn', not 'fork': safe after torch or CUDA is initialised (nothing is inherited), and a
  child starts without torch in a fraction of a second.
- A spawned child normally re-runs the parent's ``__main__`` script (or ``-m`` module) so that
  functions defined there can be unpickled; a script that calls ``bsrnn.train()`` without an
  ``if __name__ == "__main__":`` guard would then train again in every worker, and never
  finish. These children never run it (``worker_context``): every task is a function of an
  importable module.
- Math libraries in a child are single-threaded (many busy processes, one core each).
- Signals are the parent's to handle, and a child whose parent died exits within a second.

Standard library and numpy-free: the speech-free layer beside ``bsrnn.output``.
"""

from __future__ import annotations

import contextlib
import multiprocessing.context
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

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
