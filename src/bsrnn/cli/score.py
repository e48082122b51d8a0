"""``bsrnn score CLEAN_DIR ENHANCED_DIR``: score any system's enhanced files the way ours are.

Files pair by name, the file name without its suffix, whatever their formats (any format
libsndfile reads: ``x.flac`` in CLEAN_DIR pairs with ``x.wav`` in ENHANCED_DIR). Every name
present in both folders is scored (PESQ wide band, CSIG, CBAK, COVL, SSNR, STOI at 16 kHz)
with the same code as ``bsrnn evaluate``; the means are printed as a table and ``--csv``
writes one row per file, named by the clean reference's file name (the name that stays the
same whichever system's outputs are scored). Inputs are checked before any scoring starts, so
a bad file fails in a second, not after an hour.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import NamedTuple

from bsrnn.cli.main import quiet
from bsrnn.errors import DataError, UserError
from bsrnn.output import add_overwrite_argument

log = logging.getLogger(__name__)

_EXAMPLES_SHOWN = 5
_LENGTH_MISMATCH_WARN_S = 0.1


def _available_cpus() -> int:
    """CPUs this process may run on (respects taskset and SLURM cpusets)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("clean_dir", metavar="CLEAN_DIR", type=Path,
                        help="folder of clean reference audio files (WAV, FLAC, ...)")
    parser.add_argument("enhanced_dir", metavar="ENHANCED_DIR", type=Path,
                        help="folder of enhanced audio files with the same names (any format)")
    parser.add_argument("--csv", metavar="FILE", type=Path, default=None,
                        help="write one row per file (file, pesq, csig, cbak, covl, ssnr, stoi, "
                             "duration_s, error)")
    add_overwrite_argument(parser, "the --csv file")
    parser.add_argument("--workers", metavar="N", type=int, default=None,
                        help=f"parallel scoring processes (default: number of CPUs, "
                             f"{_available_cpus()} here)")


class ScorePair(NamedTuple):
    """One row to score: the clean file's name (the CSV's ``file``) and both paths."""

    file: str
    clean: Path
    enhanced: Path


def _audio_by_name(folder: Path, role: str) -> dict[str, Path]:
    from bsrnn.audio import audio_files_by_name, describe_name_clashes

    if not folder.is_dir():
        found = "a file" if folder.exists() else "nothing"
        raise UserError(f"{role} {folder}: expected a folder of audio files, found {found}. "
                        f"Fix: check the path")
    files, clashes = audio_files_by_name(folder)
    if clashes:
        raise DataError(f"{role} {folder}: expected one audio file per name, found "
                        f"{describe_name_clashes(clashes)}. Fix: keep one file of each (rename or "
                        "remove the others)")
    return files


def _few(names: list[str]) -> str:
    shown = ", ".join(names[:_EXAMPLES_SHOWN])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _EXAMPLES_SHOWN else "")


def pair_by_name(clean_dir: Path, enhanced_dir: Path) -> list[ScorePair]:
    """The files both folders hold under one name, sorted by the clean file's name; files
    only in one folder are warned about."""
    clean = _audio_by_name(clean_dir, "CLEAN_DIR")
    enhanced = _audio_by_name(enhanced_dir, "ENHANCED_DIR")
    common = clean.keys() & enhanced.keys()
    if not common:
        raise UserError(
            f"no audio file name (without its suffix) is in both folders: CLEAN_DIR {clean_dir} has "
            f"{len(clean)} audio files, ENHANCED_DIR {enhanced_dir} has {len(enhanced)}. "
            f"Fix: point both at folders whose enhanced files keep the clean file names"
        )
    for folder, files, other in ((clean_dir, clean, enhanced), (enhanced_dir, enhanced, clean)):
        only = sorted(files[name].name for name in files.keys() - other.keys())
        if only:
            log.warning("%d files only in %s are skipped: %s", len(only), folder, _few(only))
    pairs = [ScorePair(clean[name].name, clean[name], enhanced[name]) for name in common]
    return sorted(pairs, key=lambda pair: pair.file)


def check_pairs(pairs: list[ScorePair]) -> None:
    """Refuse unreadable, empty and multi-channel files up front; say which will be resampled."""
    from bsrnn.audio import SAMPLE_RATE
    from bsrnn.metrics import inspect_audio

    resampled: list[str] = []
    length_mismatch: list[str] = []
    for pair in pairs:
        durations = []
        for path in (pair.clean, pair.enhanced):
            info = inspect_audio(path)
            if info.rate != SAMPLE_RATE:
                resampled.append(f"{path} ({info.rate} Hz)")
            durations.append(info.frames / info.rate)
        if abs(durations[0] - durations[1]) > _LENGTH_MISMATCH_WARN_S:
            length_mismatch.append(f"{pair.file} ({durations[0]:.2f} s vs {durations[1]:.2f} s)")
    if resampled:
        log.info("resampling %d files to 16 kHz (scipy.signal.resample_poly) before scoring: %s",
                 len(resampled), _few(resampled))
    if length_mismatch:
        log.warning("%d clean/enhanced pairs differ in length by more than %.1f s and are "
                    "trimmed to the shorter one; check they are aligned: %s",
                    len(length_mismatch), _LENGTH_MISMATCH_WARN_S, _few(length_mismatch))


def run(args: argparse.Namespace) -> int:
    from bsrnn.metrics import check_csv_path, format_table, score_files, write_csv
    from bsrnn.output import InputFiles

    workers = _available_cpus() if args.workers is None else args.workers
    if workers < 1:
        raise UserError(f"--workers: expected 1 or more processes, got {workers}. "
                        f"Fix: pass --workers 1 to score in this process")
    if args.csv is not None:
        check_csv_path(args.csv, overwrite=args.overwrite)
    pairs = pair_by_name(args.clean_dir, args.enhanced_dir)
    inputs = InputFiles(path for pair in pairs for path in (pair.clean, pair.enhanced))
    if args.csv is not None:  # again, now that the inputs are known: the CSV never replaces one
        check_csv_path(args.csv, overwrite=args.overwrite, inputs=inputs)
    check_pairs(pairs)
    workers = min(workers, len(pairs))
    log.info("scoring %d files with %d worker%s", len(pairs), workers, "s" if workers > 1 else "")
    scores = score_files(pairs, workers=workers, progress=not quiet(args))
    print(format_table(scores))
    if args.csv is not None:
        try:
            write_csv(scores, args.csv, overwrite=args.overwrite, inputs=inputs)
        except OSError as error:
            raise UserError(f"--csv {args.csv}: cannot write it ({error}). Fix: choose a "
                            f"writable path; the table above has the means") from error
        log.info("wrote %s (%d rows)", args.csv, len(scores))
    return 0
