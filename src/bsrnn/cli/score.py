"""``bsrnn score CLEAN_DIR ENHANCED_DIR [--noisy NOISY_DIR]``: score any system's enhanced files
the way ours are.

Files pair by name, the file name without its suffix, whatever their formats (any format
libsndfile reads: ``x.flac`` in CLEAN_DIR pairs with ``x.wav`` in ENHANCED_DIR). Every name
present in both folders is scored (PESQ wide band, CSIG, CBAK, COVL, SSNR, STOI, SI-SDR at
16 kHz) with the same code as ``bsrnn evaluate``. With ``--noisy``, the noisy inputs of those
names are scored too, and the table shows the noisy mean, the improvement with its 95 %
confidence interval and the files improved (``bsrnn.metrics.report``), in ``--format``
text, markdown, latex or json. ``--csv`` writes one row per file, named by the clean
reference's file name (the name that stays the same whichever system's outputs are scored),
and its settings beside it (``bsrnn.metrics.csvfile``). Inputs are checked before any scoring
starts, so a bad file fails in a second, not after an hour.

``bsrnn score --no-reference DIR`` rates the files of one folder with DNSMOS instead, which needs
no clean reference (``bsrnn.metrics.dnsmos``; the optional extra ``bsrnn[dnsmos]``).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from bsrnn.cli.main import quiet
from bsrnn.errors import DataError, UserError
from bsrnn.output import InputFiles, add_overwrite_argument

if TYPE_CHECKING:
    from bsrnn.metrics import FileScore

log = logging.getLogger(__name__)

_EXAMPLES_SHOWN = 5
_LENGTH_MISMATCH_WARN_S = 0.1


def _available_cpus() -> int:
    """CPUs this process may run on (respects taskset and SLURM cpusets)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def add_format_argument(parser: argparse.ArgumentParser) -> None:
    """``--format``, shared by score, evaluate and compare: the same table for every reader."""
    from bsrnn.metrics.tables import FORMATS

    parser.add_argument("--format", choices=FORMATS, default="text",
                        help="how the table is printed: text (default), markdown, latex (a booktabs "
                             "tabular), or json (every number at full precision); with markdown, latex or json "
                             "stdout holds the table alone")


CSV_HELP = ("write one row per file (file, pesq, csig, cbak, covl, ssnr, stoi, si_sdr, duration_s, error; "
            "then noisy_pesq ... noisy_error where the noisy input is scored) and its scoring settings "
            "beside it, in FILE.settings.json (what `bsrnn compare` checks)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("clean_dir", metavar="CLEAN_DIR", type=Path, nargs="?",
                        help="folder of clean reference audio files (WAV, FLAC, ...)")
    parser.add_argument("enhanced_dir", metavar="ENHANCED_DIR", type=Path, nargs="?",
                        help="folder of enhanced audio files with the same names (any format)")
    parser.add_argument("--no-reference", metavar="DIR", type=Path, default=None,
                        help="instead of CLEAN_DIR ENHANCED_DIR: rate every audio file in DIR with DNSMOS "
                             "(SIG, BAK, OVRL, P.808 MOS), which needs no clean reference; needs "
                             "pip install 'bsrnn[dnsmos]'")
    parser.add_argument("--noisy", metavar="NOISY_DIR", type=Path, default=None,
                        help="folder of the noisy inputs, same names: also scored, for the baseline, the "
                             "improvement and its 95%% confidence interval (one more scoring pass)")
    add_format_argument(parser)
    parser.add_argument("--csv", metavar="FILE", type=Path, default=None, help=CSV_HELP)
    add_overwrite_argument(parser, "the --csv file and its settings file")
    parser.add_argument("--workers", metavar="N", type=int, default=None,
                        help=f"parallel scoring processes (default: number of CPUs, "
                             f"{_available_cpus()} here)")


class ScorePair(NamedTuple):
    """One row to score: the clean file's name (the CSV's ``file``) and the paths."""

    file: str
    clean: Path
    enhanced: Path
    noisy: Path | None = None
    """The noisy input of the same name, with ``--noisy``."""


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


def pair_by_name(clean_dir: Path, enhanced_dir: Path, noisy_dir: Path | None = None) -> list[ScorePair]:
    """The files both folders hold under one name, sorted by the clean file's name; files
    only in one folder are warned about. With ``noisy_dir``, every such name must be there too
    (a baseline over other files than the enhanced ones would not pair): refused if not."""
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
    noisy = _audio_by_name(noisy_dir, "--noisy") if noisy_dir is not None else None
    if noisy is not None:
        lacking = sorted(clean[name].name for name in common - noisy.keys())
        if lacking:
            raise UserError(f"--noisy {noisy_dir}: expected the noisy input of every file scored, found "
                            f"{len(lacking)} of {len(common)} missing: {_few(lacking)}. Fix: point --noisy at "
                            "the folder these files were enhanced from")
    pairs = [ScorePair(clean[name].name, clean[name], enhanced[name], noisy[name] if noisy is not None else None)
             for name in common]
    return sorted(pairs, key=lambda pair: pair.file)


def check_pairs(pairs: list[ScorePair]) -> None:
    """Refuse unreadable, empty and multi-channel files up front; say which will be resampled."""
    from bsrnn.audio import SAMPLE_RATE
    from bsrnn.metrics import inspect_audio

    resampled: list[str] = []
    length_mismatch: list[str] = []
    for pair in pairs:
        durations = []
        for path in (pair.clean, pair.enhanced, pair.noisy):
            if path is None:
                continue
            info = inspect_audio(path)
            if info.rate != SAMPLE_RATE:
                resampled.append(f"{path} ({info.rate} Hz)")
            durations.append(info.frames / info.rate)
        if max(durations) - min(durations) > _LENGTH_MISMATCH_WARN_S:
            length_mismatch.append(f"{pair.file} ({' vs '.join(f'{seconds:.2f} s' for seconds in durations)})")
    if resampled:
        log.info("resampling %d files to 16 kHz (scipy.signal.resample_poly) before scoring: %s",
                 len(resampled), _few(resampled))
    if length_mismatch:
        log.warning("%d clean/enhanced%s pairs differ in length by more than %.1f s and are "
                    "trimmed to the shorter one; check they are aligned: %s",
                    len(length_mismatch), "/noisy" if pairs[0].noisy is not None else "",
                    _LENGTH_MISMATCH_WARN_S, _few(length_mismatch))


def score_with_baseline(enhanced: list[tuple[str, Any, Any]], noisy: list[tuple[str, Any, Any]] | None,
                        workers: int, progress: bool = True) -> tuple[list[FileScore], list[FileScore] | None]:
    """Score ``(name, clean, enhanced)`` jobs and, if given, the ``(name, clean, noisy)`` jobs of
    the same names, in one pool (started once), so the baseline costs one more scoring pass."""
    from bsrnn.metrics import score_files

    scores = score_files([*enhanced, *(noisy or [])], workers=workers, progress=progress)
    return scores[:len(enhanced)], (scores[len(enhanced):] if noisy is not None else None)


def print_and_write(scores: list[FileScore], noisy: list[FileScore] | None, args: argparse.Namespace,
                    source: dict[str, object], inputs: InputFiles) -> None:
    """Print the table in ``--format``, then write ``--csv`` (and its settings) if asked: the
    end that ``score`` and ``evaluate`` share."""
    from bsrnn.metrics import format_table, settings_path, write_csv

    print(format_table(scores, noisy, args.format))
    if args.csv is None:
        return
    try:
        write_csv(scores, args.csv, noisy=noisy, source=source, overwrite=args.overwrite, inputs=inputs)
    except OSError as error:
        raise UserError(f"--csv {args.csv}: cannot write it ({error}). Fix: choose a "
                        f"writable path; the table above has the means") from error
    log.info("wrote %s (%d rows) and its settings, %s", args.csv, len(scores), settings_path(args.csv).name)


def run_no_reference(args: argparse.Namespace, workers: int) -> int:
    """``--no-reference DIR``: DNSMOS ratings of every file in DIR, as a table and a CSV."""
    from bsrnn.metrics import check_csv_path, inspect_audio
    from bsrnn.metrics.dnsmos import dnsmos_csv_text, dnsmos_files, format_dnsmos, require_dnsmos, score_no_reference
    from bsrnn.output import write_bytes

    require_dnsmos()
    files = dnsmos_files(args.no_reference)
    inputs = InputFiles(path for _, path in files)
    if args.csv is not None:
        check_csv_path(args.csv, overwrite=args.overwrite, inputs=inputs)
    for _, path in files:
        inspect_audio(path)
    log.info("rating %d files with DNSMOS on %d worker%s", len(files), min(workers, len(files)),
             "s" if min(workers, len(files)) > 1 else "")
    scores = score_no_reference(files, workers)
    print(format_dnsmos(scores, args.format))
    if args.csv is not None:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(args.csv, dnsmos_csv_text(scores).encode("utf-8", errors="backslashreplace"), overwrite=args.overwrite, flag="--csv",
                    inputs=inputs)
        log.info("wrote %s (%d rows)", args.csv, len(scores))
    return 0


def run(args: argparse.Namespace) -> int:
    from bsrnn.metrics import check_csv_path

    workers = _available_cpus() if args.workers is None else args.workers
    if workers < 1:
        raise UserError(f"--workers: expected 1 or more processes, got {workers}. "
                        f"Fix: pass --workers 1 to score in this process")
    if args.no_reference is not None:
        if args.clean_dir is not None or args.noisy is not None:
            raise UserError("bsrnn score: expected either CLEAN_DIR ENHANCED_DIR or --no-reference DIR, found both. "
                            "Fix: drop the folders (DNSMOS needs no reference) or --no-reference")
        return run_no_reference(args, workers)
    if args.enhanced_dir is None:
        raise UserError("bsrnn score: expected CLEAN_DIR and ENHANCED_DIR (or --no-reference DIR for DNSMOS). "
                        "Run `bsrnn score --help` for usage.")
    if args.csv is not None:
        check_csv_path(args.csv, overwrite=args.overwrite)
    pairs = pair_by_name(args.clean_dir, args.enhanced_dir, args.noisy)
    inputs = InputFiles(path for pair in pairs for path in pair[1:] if path is not None)
    if args.csv is not None:  # again, now that the inputs are known: the CSV never replaces one
        check_csv_path(args.csv, overwrite=args.overwrite, inputs=inputs)
    check_pairs(pairs)
    workers = min(workers, len(pairs) * (2 if args.noisy is not None else 1))
    log.info("scoring %d files%s with %d worker%s", len(pairs), " and their noisy inputs" if args.noisy else "",
             workers, "s" if workers > 1 else "")
    enhanced = [(pair.file, pair.clean, pair.enhanced) for pair in pairs]
    noisy = [(pair.file, pair.clean, pair.noisy) for pair in pairs] if args.noisy is not None else None
    scores, noisy_scores = score_with_baseline(enhanced, noisy, workers, progress=not quiet(args))
    source: dict[str, object] = {
        "command": "score",
        "scored": f"score of {args.enhanced_dir}",
        "clean_dir": str(args.clean_dir.resolve()),
        "enhanced_dir": str(args.enhanced_dir.resolve()),
        "noisy_dir": str(args.noisy.resolve()) if args.noisy is not None else None,
    }
    print_and_write(scores, noisy_scores, args, source, inputs)
    return 0
