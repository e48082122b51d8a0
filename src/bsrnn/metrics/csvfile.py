"""The per-file CSV of ``bsrnn score`` and ``bsrnn evaluate``, its settings file, and reading both
back (``bsrnn compare``).

The CSV is plain: one header line, one row per file, the columns of ``CSV_COLUMNS`` (then
``NOISY_COLUMNS`` where the noisy input was scored too), so any CSV reader takes it as it is.
What the numbers depend on besides the audio goes beside it, in ``FILE.settings.json``
(``settings_path``), not into it: a ``#`` comment line would break readers that do not expect
one (``csv.DictReader``, ``pandas.read_csv`` by default). The settings file holds the scoring
settings (``scoring.SCORING_SETTINGS``: two CSVs scored under other settings are never
compared), the library versions, what was scored (the command, folders or checkpoint), and the
SHA-256 of the CSV's bytes: a settings file that does not describe the CSV beside it (the CSV
was edited, or replaced by an older bsrnn) is ignored with a warning, never trusted.

CSVs written before the settings file existed, and CSVs without their settings file, are still
read; their settings are unknown, which ``bsrnn compare`` says and goes on. A metric column an
old CSV lacks (``si_sdr`` before it was added) reads as NaN and is listed as missing.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import astuple, dataclass, fields
from importlib import metadata
from pathlib import Path

from bsrnn.errors import UserError
from bsrnn.metrics.scoring import METRICS, SCORING_SETTINGS, FileScore
from bsrnn.output import InputFiles, check_destinations, write_bytes

CSV_COLUMNS = tuple(field.name for field in fields(FileScore))
"""The CSV header: file, pesq, csig, cbak, covl, ssnr, stoi, si_sdr, duration_s, error
(``FileScore``'s fields, in order)."""

NOISY_PREFIX = "noisy_"
NOISY_COLUMNS = tuple(NOISY_PREFIX + name for name in (*METRICS, "error"))
"""After ``CSV_COLUMNS`` where the noisy input was scored: its metrics against the same clean
reference, and why any is NaN."""

SETTINGS_SUFFIX = ".settings.json"
SETTINGS_FORMAT = "bsrnn score settings"
SETTINGS_VERSION = 1
_SCORED_LIBRARIES = ("bsrnn", "pesq", "pystoi", "numpy", "scipy", "soundfile")


def settings_path(csv_path: str | os.PathLike[str]) -> Path:
    """Where the settings of a score CSV are written: ``scores.csv`` -> ``scores.csv.settings.json``."""
    path = Path(csv_path)
    return path.with_name(path.name + SETTINGS_SUFFIX)


def csv_cell(value: object) -> str:
    """A value as the score CSVs write it: floats with 6 decimals, NaN as ``nan``."""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6f}"
    return str(value)


def check_csv_path(path: Path, flag: str = "--csv", *, overwrite: bool = False,
                   inputs: InputFiles | None = None) -> None:
    """Refuse a CSV path that cannot or may not be written, before any scoring work is done.

    Finding out after an hour of scoring would waste the hour. Missing folders are fine
    (``write_csv`` creates them), as long as the nearest existing one is a folder this user
    can write in; nothing is created here. The output writer's rules apply to the CSV and to
    its settings file (``bsrnn.output.check_destinations``): no symbolic link, no input, and
    an existing file only with ``overwrite``.
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
    check_destinations([path, settings_path(path)], overwrite=overwrite, flag=flag, inputs=inputs)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: expected a place this user can write, found {existing} is not "
                        "writable. Fix: choose another path")


def csv_text(scores: Sequence[FileScore], noisy: Sequence[FileScore] | None = None) -> str:
    """One row per file, the columns of ``CSV_COLUMNS`` (and ``NOISY_COLUMNS`` with ``noisy``,
    the noisy input's scores, file for file), as the text of a CSV file."""
    if noisy is not None and [score.file for score in noisy] != [score.file for score in scores]:
        raise ValueError("csv_text: the noisy scores must name the same files, in the same order")
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS + (NOISY_COLUMNS if noisy is not None else ()))
    for index, score in enumerate(scores):
        row = [csv_cell(value) for value in astuple(score)]
        if noisy is not None:
            row += [csv_cell(value) for value in (*noisy[index].metrics().values(), noisy[index].error)]
        writer.writerow(row)
    return buffer.getvalue()


def library_versions() -> dict[str, str]:
    """The versions of what computes a score; a difference between two CSVs is warned about."""
    versions = {}
    for name in _SCORED_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "unknown"
    return versions


def write_csv(scores: Sequence[FileScore], path: str | os.PathLike[str], *,
              noisy: Sequence[FileScore] | None = None, source: Mapping[str, object] | None = None,
              overwrite: bool = False, flag: str = "--csv", inputs: InputFiles | None = None) -> None:
    """Write ``csv_text(scores, noisy)`` to ``path``, then its settings file beside it
    (``settings_path``), each through ``bsrnn.output.write_file``; missing folders are created.

    ``source`` says what was scored (the command, its folders or checkpoint), for the reader.
    Each file is complete or not there: a full disk leaves the previous file (or none), never a
    0-byte or cut-off one; a settings file left from an earlier CSV does not match this CSV's
    digest and is ignored. Existing files are replaced only with ``overwrite``.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # A file name that is not UTF-8 (its bytes held as surrogate escapes) is written with the
    # escapes spelt out (``bad\\udcfd.wav``), as the terminal shows it.
    data = csv_text(scores, noisy).encode("utf-8", errors="backslashreplace")
    write_bytes(target, data, overwrite=overwrite, flag=flag, inputs=inputs)
    record = {
        "format": SETTINGS_FORMAT,
        "version": SETTINGS_VERSION,
        "csv": target.name,
        "csv_sha256": hashlib.sha256(data).hexdigest(),
        "rows": len(scores),
        "noisy_scored": noisy is not None,
        "settings": SCORING_SETTINGS,
        "versions": library_versions(),
        "source": dict(source or {}),
        "written": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    text = json.dumps(record, indent=2, sort_keys=False, default=str) + "\n"
    write_bytes(settings_path(target), text.encode("utf-8"), overwrite=overwrite, flag=flag, inputs=inputs)


@dataclass(frozen=True)
class ScoreFile:
    """A score CSV read back, with what its settings file says (if it says anything)."""

    path: Path
    scores: list[FileScore]
    noisy: list[FileScore] | None
    """The noisy input's scores, file for file, where the CSV holds them."""
    missing: tuple[str, ...]
    """Metrics the CSV has no column for (NaN in ``scores``): an older CSV, say."""
    settings: dict[str, object] | None
    """``SCORING_SETTINGS`` as they were when it was scored; None: unknown (see ``unknown``)."""
    versions: dict[str, str]
    source: dict[str, object]
    unknown: str = ""
    """Why ``settings`` is None ("" when known)."""


def _number(text: str, path: Path, line: int, column: str) -> float:
    if text.strip() == "":
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise UserError(f"{path}, line {line}: expected a number in column {column}, found {text!r}. "
                        "Fix: pass a CSV written by `bsrnn score` or `bsrnn evaluate`") from None


def _read_settings(csv_path: Path, data: bytes) -> tuple[dict[str, object] | None, dict[str, object], str]:
    """The settings file's record, or None with why it cannot be used."""
    sidecar = settings_path(csv_path)
    if not sidecar.is_file():
        return None, {}, (f"no {sidecar.name} beside it (written before bsrnn recorded settings, or "
                          "copied without it)")
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return None, {}, f"{sidecar.name} cannot be read ({error})"
    if not isinstance(record, dict) or record.get("format") != SETTINGS_FORMAT:
        return None, {}, f"{sidecar.name} is not a bsrnn settings file"
    if record.get("csv_sha256") != hashlib.sha256(data).hexdigest():
        return None, {}, (f"{sidecar.name} describes another version of the CSV (its SHA-256 differs: "
                          "the CSV was edited or replaced since)")
    settings = record.get("settings")
    if not isinstance(settings, dict):
        return None, {}, f"{sidecar.name} has no settings"
    return settings, record, ""


def _file_scores(rows: list[dict[str, str]], path: Path, prefix: str, present: Sequence[str]) -> list[FileScore]:
    scores = []
    for line, row in enumerate(rows, start=2):
        values = {metric: _number(row[prefix + metric], path, line, prefix + metric) if metric in present
                  else math.nan for metric in METRICS}
        duration = row.get("duration_s")
        scores.append(FileScore(file=row["file"], **values, error=row.get(prefix + "error") or "",
                                duration_s=_number(duration, path, line, "duration_s") if duration else math.nan))
    return scores


def read_scores(path: str | os.PathLike[str]) -> ScoreFile:
    """Read a CSV of ``bsrnn score`` or ``bsrnn evaluate`` (any version) and its settings file.

    Refused (``UserError``, naming the file and the fix): a missing or unreadable file, one
    without a ``file`` column or any metric column, a value that is no number, a file name that
    appears twice.
    """
    csv_path = Path(path)
    try:
        data = csv_path.read_bytes()
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{csv_path}: expected a score CSV, cannot read it ({error}). Fix: check the path") from error
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = reader.fieldnames or []
    present = tuple(metric for metric in METRICS if metric in columns)
    if "file" not in columns or not present:
        raise UserError(f"{csv_path}: expected a CSV of `bsrnn score` or `bsrnn evaluate` (a file column and "
                        f"metric columns such as pesq), found the columns {', '.join(columns) or 'none'}. "
                        "Fix: pass the --csv file those commands wrote")
    rows = list(reader)
    names = [row["file"] for row in rows]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UserError(f"{csv_path}: expected one row per file, found {', '.join(repeated[:5])} more than once. "
                        "Fix: pass the --csv file those commands wrote, unedited")
    noisy_present = tuple(metric for metric in present if NOISY_PREFIX + metric in columns)
    settings, record, unknown = _read_settings(csv_path, data)
    versions, source = record.get("versions", {}), record.get("source", {})
    return ScoreFile(
        path=csv_path,
        scores=_file_scores(rows, csv_path, "", present),
        noisy=_file_scores(rows, csv_path, NOISY_PREFIX, noisy_present) if noisy_present else None,
        missing=tuple(metric for metric in METRICS if metric not in present),
        settings=settings,
        versions=dict(versions) if isinstance(versions, dict) else {},
        source=dict(source) if isinstance(source, dict) else {},
        unknown=unknown,
    )
