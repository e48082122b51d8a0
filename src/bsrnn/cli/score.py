"""``bsrnn score CLEAN_DIR ENHANCED_DIR``: score any system's enhanced wavs the way ours are.

Every ``*.wav`` name present in both folders is scored (PESQ wide band, CSIG, CBAK, COVL, SSNR,
STOI at 16 kHz) with the same code as ``bsrnn evaluate``; the means are printed as a table and
``--csv`` writes one row per file. Inputs are checked before any scoring starts, so a bad file
fails in a second, not after an hour.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from bsrnn.errors import UserError

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
                        help="folder of clean reference wavs")
    parser.add_argument("enhanced_dir", metavar="ENHANCED_DIR", type=Path,
                        help="folder of enhanced wavs with the same file names")
    parser.add_argument("--csv", metavar="FILE", type=Path, default=None,
                        help="write one row per file (file, pesq, csig, cbak, covl, ssnr, stoi, "
                             "duration_s, error)")
    parser.add_argument("--workers", metavar="N", type=int, default=None,
                        help=f"parallel scoring processes (default: number of CPUs, "
                             f"{_available_cpus()} here)")


def _wav_names(folder: Path, role: str) -> set[str]:
    if not folder.is_dir():
        found = "a file" if folder.exists() else "nothing"
        raise UserError(f"{role} {folder}: expected a folder of .wav files, found {found}. "
                        f"Fix: check the path")
    return {path.name for path in folder.iterdir()
            if path.suffix.lower() == ".wav" and path.is_file()}


def _few(names: list[str]) -> str:
    shown = ", ".join(names[:_EXAMPLES_SHOWN])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _EXAMPLES_SHOWN else "")


def common_wav_names(clean_dir: Path, enhanced_dir: Path) -> list[str]:
    """Sorted wav names both folders hold; names only in one folder are warned about."""
    clean_names = _wav_names(clean_dir, "CLEAN_DIR")
    enhanced_names = _wav_names(enhanced_dir, "ENHANCED_DIR")
    common = sorted(clean_names & enhanced_names)
    if not common:
        raise UserError(
            f"no .wav file name is in both folders: CLEAN_DIR {clean_dir} has "
            f"{len(clean_names)} wavs, ENHANCED_DIR {enhanced_dir} has {len(enhanced_names)}. "
            f"Fix: point both at folders whose enhanced files keep the clean file names"
        )
    for folder, only in ((clean_dir, clean_names - enhanced_names),
                         (enhanced_dir, enhanced_names - clean_names)):
        if only:
            log.warning("%d wavs only in %s are skipped: %s", len(only), folder, _few(sorted(only)))
    return common


def check_wavs(clean_dir: Path, enhanced_dir: Path, names: list[str]) -> None:
    """Refuse unreadable, empty and multi-channel wavs up front; say which will be resampled."""
    from bsrnn.metrics.scoring import SAMPLE_RATE, inspect_wav

    resampled: list[str] = []
    length_mismatch: list[str] = []
    for name in names:
        durations = []
        for folder in (clean_dir, enhanced_dir):
            info = inspect_wav(folder / name)
            if info.samplerate != SAMPLE_RATE:
                resampled.append(f"{folder / name} ({info.samplerate} Hz)")
            durations.append(info.frames / info.samplerate)
        if abs(durations[0] - durations[1]) > _LENGTH_MISMATCH_WARN_S:
            length_mismatch.append(f"{name} ({durations[0]:.2f} s vs {durations[1]:.2f} s)")
    if resampled:
        log.info("resampling %d wavs to 16 kHz (scipy.signal.resample_poly) before scoring: %s",
                 len(resampled), _few(resampled))
    if length_mismatch:
        log.warning("%d clean/enhanced pairs differ in length by more than %.1f s and are "
                    "trimmed to the shorter one; check they are aligned: %s",
                    len(length_mismatch), _LENGTH_MISMATCH_WARN_S, _few(length_mismatch))


def run(args: argparse.Namespace) -> int:
    from bsrnn.metrics.scoring import check_csv_path, format_table, score_files, write_csv

    workers = _available_cpus() if args.workers is None else args.workers
    if workers < 1:
        raise UserError(f"--workers: expected 1 or more processes, got {workers}. "
                        f"Fix: pass --workers 1 to score in this process")
    if args.csv is not None:
        check_csv_path(args.csv)
    names = common_wav_names(args.clean_dir, args.enhanced_dir)
    check_wavs(args.clean_dir, args.enhanced_dir, names)
    workers = min(workers, len(names))
    log.info("scoring %d files with %d worker%s", len(names), workers, "s" if workers > 1 else "")
    pairs = [(name, args.clean_dir / name, args.enhanced_dir / name) for name in names]
    scores = score_files(pairs, workers=workers)
    print(format_table(scores))
    if args.csv is not None:
        try:
            write_csv(scores, args.csv)
        except OSError as error:
            raise UserError(f"--csv {args.csv}: cannot write it ({error}). Fix: choose a "
                            f"writable path; the table above has the means") from error
        log.info("wrote %s (%d rows)", args.csv, len(scores))
    return 0
