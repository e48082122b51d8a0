"""Preemption signals: ask for a save at the next safe point; never let a signal break a save.

Two tools:

- ``PreemptionGuard`` turns SIGTERM, SIGUSR1 and SIGINT into a request that the training loop
  polls between steps (``guard.requested``): the loop finishes its step, saves, and exits with
  128+signal. Later signals only repeat the request, so a second SIGTERM during the save does
  not interrupt it.
- ``deferred_signals()`` blocks those signals around a commit when no guard is installed, so the
  default action (terminate) waits until the rename has happened; the pending signal is then
  delivered as usual. The commit protocol already makes an interrupted save harmless; this
  makes a signalled save *complete*.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

PREEMPTION_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class PreemptionGuard:
    """Records preemption signals instead of dying; install once per process, in the main thread."""

    def __init__(self, signals: tuple[signal.Signals, ...] = PREEMPTION_SIGNALS) -> None:
        self.signals = signals
        self.requested: int | None = None
        self.count = 0
        self._previous: dict[signal.Signals, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.requested is None:
            self.requested = signum
            log.warning(
                "Received %s: finishing the current step, then saving checkpoint_last.pt",
                signal.Signals(signum).name,
            )

    def request(self, signum: int = signal.SIGTERM) -> None:
        """Ask for a save-and-exit as if ``signum`` had arrived (for tests and callers)."""
        self._handle(signum, None)

    def install(self) -> PreemptionGuard:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("PreemptionGuard must be installed from the main thread")
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def uninstall(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def __enter__(self) -> PreemptionGuard:
        return self.install()

    def __exit__(self, *exc_info: object) -> None:
        self.uninstall()


@contextlib.contextmanager
def deferred_signals(signals: tuple[signal.Signals, ...] = PREEMPTION_SIGNALS) -> Iterator[None]:
    """Hold the preemption signals pending while the body runs (main thread only; else no-op)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def block_in_this_thread(signals: tuple[signal.Signals, ...] = PREEMPTION_SIGNALS) -> None:
    """Make a worker thread never receive the preemption signals (they go to the main thread)."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, signals)
