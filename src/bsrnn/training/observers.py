"""Observers of a run: what lets people watch it, and the rule that they can never break it.

A run's record is its checkpoints and ``metrics.jsonl``; a failure to write those stops the run
with a clear error, since going on would train what cannot be kept. Observers only show the run:
the TensorBoard logs with their audio examples (``training/tensorboard.py``) and ``status.json``
(``training/run_files.py``). A bug or an unexpected input in one of them must not cost the epoch
in progress: before this rule, validation examples of different lengths made the TensorBoard
log raise after the ``VALID`` line and before the epoch's save, and the run lost the epoch.

So every call into an observer goes through ``Observer``, not only the writes that can meet a
full disk: its first exception of any kind (``Exception``; ``KeyboardInterrupt`` and
``SystemExit`` still end the run) logs ONE warning that names the observer and the error, and
switches that observer off for the rest of the invocation. Training, the saves and the other
observers go on. The traceback goes to the debug log (``--debug``), for a bug report.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Concatenate, Generic, ParamSpec, Protocol, TypeVar

log = logging.getLogger(__name__)


class Closable(Protocol):
    def close(self) -> None: ...


T = TypeVar("T", bound=Closable)
P = ParamSpec("P")


def describe_error(error: BaseException) -> str:
    """One line for a warning: the OS's reason (and file) for an ``OSError``, else type and message."""
    if isinstance(error, OSError) and error.strerror:
        return f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


class Observer(Generic[T]):
    """One observer (``T``), or none, behind the guard described in the module docstring.

    ``make`` builds it (a failure there switches it off too); ``None`` means it was not asked
    for, and every call is then a no-op, so callers never test for it.
    """

    def __init__(self, name: str, make: Callable[[], T] | None = None) -> None:
        self.name = name
        self.failure: str | None = None
        """The one-line reason it was switched off, or None while it works."""
        self._target: T | None = None
        if make is not None:
            try:
                self._target = make()
            except Exception as error:  # noqa: BLE001 - any failure of an observer switches it off (module docstring)
                self._switch_off(error)

    @property
    def active(self) -> bool:
        """Whether calls still reach the observer."""
        return self._target is not None and self.failure is None

    def notify(self, hook: Callable[Concatenate[T, P], object], *args: P.args, **kwargs: P.kwargs) -> None:
        """Call ``hook(observer, *args, **kwargs)`` (an unbound method: ``TensorBoardLog.step``)."""
        if self._target is None or self.failure is not None:
            return
        try:
            hook(self._target, *args, **kwargs)
        except Exception as error:  # noqa: BLE001 - any failure of an observer switches it off (module docstring)
            self._switch_off(error)

    def close(self) -> None:
        """Close the observer, also one switched off (its files and threads); warn only if none was."""
        target, self._target = self._target, None
        if target is None:
            return
        try:
            target.close()
        except Exception as error:  # noqa: BLE001 - any failure of an observer switches it off (module docstring)
            if self.failure is None:
                self._switch_off(error)

    def _switch_off(self, error: Exception) -> None:
        self.failure = describe_error(error)
        log.warning("WARNING: %s failed and is switched off for the rest of this run (%s); training and "
                    "the checkpoints go on", self.name, self.failure)
        log.debug("%s failed", self.name, exc_info=error)
