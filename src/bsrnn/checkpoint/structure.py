"""A verified checkpoint must also be complete: every record the engine wrote, of the right type.

The digest proves that the bytes are the bytes that were written, not that a checkpoint manager
wrote them: a file loaded, edited and re-saved with ``write_checkpoint`` verifies too. Without
this check such a file (for example one holding only ``format`` keys) would be taken over a
complete ``checkpoint_best.pt`` by ``--load auto``, and a run would "resume" from random
weights with only warnings; a ``monitor.best`` that is a string would fail one epoch later, at
the next save. So an incomplete or malformed file is treated like a damaged one: named, skipped
by ``auto`` in favour of the other file, and reported by ``ckpt verify``.

Checked: the engine's own records (``monitor``, its best finite, ``save_sequence``, ``lineage``,
``created``, ``versions``) and, where the file lists them under ``registered``, every registered state as a
table (state dicts are tables; a migrated file registers only what it has).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bsrnn.checkpoint.errors import CheckpointIncompleteError


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number_or_none(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def structure_problems(payload: Mapping[str, Any]) -> list[str]:
    """What is missing or of the wrong type in a checkpoint payload (empty when complete)."""
    problems = []
    monitor = payload.get("monitor")
    if not isinstance(monitor, Mapping):
        problems.append(f"monitor is {_describe(monitor)}, expected a table")
    else:
        if not isinstance(monitor.get("name"), str):
            problems.append(f"monitor.name is {_describe(monitor.get('name'))}, expected a string")
        if monitor.get("mode") not in ("min", "max"):
            problems.append(f"monitor.mode is {monitor.get('mode')!r}, expected 'min' or 'max'")
        for key in ("best", "value"):
            if not _is_number_or_none(monitor.get(key)):
                problems.append(f"monitor.{key} is {monitor.get(key)!r}, expected a number or none")
        best = monitor.get("best")
        if _is_number_or_none(best) and best is not None and not math.isfinite(best):
            # the engine never records a non-finite best: with one, no later value could beat it
            problems.append(f"monitor.best is {best!r}, expected a finite number or none")
        if not isinstance(monitor.get("best_digest", ""), (str, type(None))):
            problems.append(f"monitor.best_digest is {_describe(monitor.get('best_digest'))}, expected a string")
    if not _is_int(payload.get("save_sequence")):
        problems.append(f"save_sequence is {_describe(payload.get('save_sequence'))}, expected an integer")
    lineage = payload.get("lineage")
    if not isinstance(lineage, list) or not all(isinstance(entry, Mapping) for entry in lineage):
        problems.append(f"lineage is {_describe(lineage)}, expected a list of tables")
    if not isinstance(payload.get("created"), str):
        problems.append(f"created is {_describe(payload.get('created'))}, expected a string")
    if not isinstance(payload.get("versions"), Mapping):
        problems.append(f"versions is {_describe(payload.get('versions'))}, expected a table")
    registered = payload.get("registered")
    if registered is not None:
        if not isinstance(registered, list) or not all(isinstance(name, str) for name in registered):
            problems.append(f"registered is {_describe(registered)}, expected a list of names")
        else:
            for name in registered:
                if name not in payload:
                    problems.append(f"the registered state {name} is missing")
                elif not isinstance(payload[name], Mapping):
                    problems.append(f"{name} is {_describe(payload[name])}, expected a table")
    return problems


def check_structure(path: Path, payload: Mapping[str, Any]) -> None:
    """Raise ``CheckpointIncompleteError`` naming every problem of an incomplete checkpoint."""
    problems = structure_problems(payload)
    if problems:
        raise CheckpointIncompleteError(path, "incomplete or malformed (" + "; ".join(problems) + ")")


def _describe(value: Any) -> str:
    return "missing" if value is None else f"a {type(value).__name__}"
