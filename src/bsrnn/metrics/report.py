"""What ``bsrnn score`` and ``bsrnn evaluate`` show and write: a table of means and a CSV.

A metric that could not be computed for a file is NaN in its row (written ``nan``) with the
reason in ``error``; it is left out of that metric's mean, and the table says over how many
files each mean was taken, so a failure is never mistaken for a score.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from dataclasses import astuple, fields
from pathlib import Path

import numpy as np

from bsrnn.errors import UserError
from bsrnn.metrics.scoring import METRICS, FileScore
from bsrnn.output import InputFiles, check_destinations, write_bytes

CSV_COLUMNS = tuple(field.name for field in fields(FileScore))
"""The CSV header: file, pesq, csig, cbak, covl, ssnr, stoi, duration_s, error (``FileScore``'s
fields, in order)."""


def mean_scores(scores: Sequence[FileScore]) -> dict[str, float]:
    """Mean of each metric over the files where it could be computed (NaN if none)."""
    means = {}
    for name in METRICS:
        values = np.array([getattr(score, name) for score in scores], dtype=np.float64)
        finite = values[np.isfinite(values)]
        means[name] = float(finite.mean()) if finite.size else float("nan")
    return means


def format_table(scores: Sequence[FileScore]) -> str:
    """The means as a small text table, with how many files each mean covers."""
    means = mean_scores(scores)
    lines = [f"{'metric':<8}{'mean':>10}{'files':>8}"]
    for name in METRICS:
        count = sum(1 for score in scores if math.isfinite(getattr(score, name)))
        lines.append(f"{name:<8}{means[name]:>10.4f}{count:>8d}")
    failed = sum(1 for score in scores if score.error)
    lines.append(f"{len(scores)} files" + (f", {failed} not fully scored (NaN metrics are left "
                                           f"out of the means)" if failed else ""))
    return "\n".join(lines)


def _csv_value(value: object) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6f}"
    return str(value)


def check_csv_path(path: Path, flag: str = "--csv", *, overwrite: bool = False,
                   inputs: InputFiles | None = None) -> None:
    """Refuse a CSV path that cannot or may not be written, before any scoring work is done.

    Finding out after an hour of scoring would waste the hour. Missing folders are fine
    (``write_csv`` creates them), as long as the nearest existing one is a folder this user
    can write in; nothing is created here. The output writer's rules apply too
    (``bsrnn.output.check_destinations``): no symbolic link, no input, and an existing file
    only with ``overwrite``.
    """
    if path.is_dir() and not path.is_symlink():
        raise UserError(f"{flag} {path}: expected a file name, found a folder. "
                        f"Fix: pass e.g. {flag} {path / 'scores.csv'}")
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{flag} {path}: expected a folder to write it in, found that {existing} is a file. "
                        "Fix: choose a path inside a folder")
    check_destinations([path], overwrite=overwrite, flag=flag, inputs=inputs)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: expected a place this user can write, found {existing} is not "
                        "writable. Fix: choose another path")


def csv_text(scores: Sequence[FileScore]) -> str:
    """One row per file, the columns of ``CSV_COLUMNS``, as the text of a CSV file."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for score in scores:
        writer.writerow([_csv_value(value) for value in astuple(score)])
    return buffer.getvalue()


def write_csv(scores: Sequence[FileScore], path: str | os.PathLike[str], *, overwrite: bool = False,
              flag: str = "--csv", inputs: InputFiles | None = None) -> None:
    """Write ``csv_text(scores)`` to ``path`` through ``bsrnn.output.write_file``; missing folders
    are created.

    Complete or not at all: a full disk leaves the previous file (or none), never a 0-byte or
    cut-off CSV. An existing file is replaced only with ``overwrite``. The CSV is UTF-8 text: a
    file name that is not UTF-8 (its bytes held as surrogate escapes) is written with the
    escapes spelt out (``bad\\udcfd.wav``), as the terminal shows it.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(target, csv_text(scores).encode("utf-8", errors="backslashreplace"), overwrite=overwrite, flag=flag,
                inputs=inputs)
