"""Score enhanced speech against clean references: one pair, many files, and their summary.

``bsrnn score`` (wav folders) and ``bsrnn evaluate`` (signals enhanced in memory) both go
through ``score_files``, so any system's outputs are scored exactly the way ours are. Metrics
are PESQ (wide band), CSIG, CBAK, COVL, SSNR and STOI at 16 kHz. A metric that cannot be
computed for a file (silent reference, too short) is NaN with the reason in ``error``, is left
out of the means, and is counted, so a failure is never mistaken for a score.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import logging
import math
import multiprocessing
import os
import sys
import threading
import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, as_completed, wait
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from bsrnn.errors import DataError
from bsrnn.metrics.composite import composite_distortions, composite_ratings, frame_length
from bsrnn.metrics.pesq_pool import PESQ_SAMPLE_RATE, _init_worker, start_workers, wideband_pesq

log = logging.getLogger(__name__)

SAMPLE_RATE = PESQ_SAMPLE_RATE
METRICS = ("pesq", "csig", "cbak", "covl", "ssnr", "stoi")
CSV_COLUMNS = ("file", *METRICS, "duration_s", "error")

AudioSource = str | os.PathLike[str] | np.ndarray
"""A wav path, or a mono signal already at 16 kHz."""

_SCORE_IN_PARENT = True  # tests turn it off to make the helper processes do all the work


def resample_to_16k(signal: np.ndarray, sample_rate: int) -> np.ndarray:
    """Polyphase resampling to 16 kHz: PESQ wide band is defined only there."""
    if sample_rate == SAMPLE_RATE:
        return signal
    from scipy.signal import resample_poly  # scipy.signal takes ~1 s to import

    divisor = math.gcd(SAMPLE_RATE, int(sample_rate))
    return resample_poly(signal, SAMPLE_RATE // divisor, int(sample_rate) // divisor)


def _unreadable(path: str | os.PathLike[str], error: Exception) -> DataError:
    return DataError(f"{path}: cannot read it as audio ({error}); expected a wav file. Fix: "
                     f"re-export it (16-bit or float wav) or remove it")


def _refuse_unscorable(path: str | os.PathLike[str], channels: int, frames: int) -> None:
    if channels != 1:
        raise DataError(f"{path}: expected a mono wav, found {channels} channels. Fix: score "
                        f"one channel per file (e.g. `sox in.wav out.wav remix 1`)")
    if frames == 0:
        raise DataError(f"{path}: expected speech samples, found an empty wav. Fix: remove it "
                        f"or re-create it")


def inspect_wav(path: str | os.PathLike[str]) -> Any:
    """The header (``soundfile.info``) of a wav that can be scored; DataError naming it if not.

    Reads no samples, so a folder can be checked before any scoring starts.
    """
    import soundfile

    try:
        info = soundfile.info(str(path))
    except RuntimeError as error:  # soundfile's LibsndfileError
        raise _unreadable(path, error) from error
    _refuse_unscorable(path, info.channels, info.frames)
    return info


def read_mono_16k(path: str | os.PathLike[str]) -> np.ndarray:
    """A mono wav as float64 at 16 kHz (other rates are resampled, multi-channel refused)."""
    import soundfile

    try:
        samples, sample_rate = soundfile.read(str(path), dtype="float64", always_2d=True)
    except RuntimeError as error:  # soundfile's LibsndfileError
        raise _unreadable(path, error) from error
    _refuse_unscorable(path, samples.shape[1], samples.shape[0])
    return resample_to_16k(samples[:, 0], sample_rate)


# pystoi needs 30 frames of 256 samples, hop 128, at 10 kHz after dropping silent frames.
_STOI_MIN_SECONDS = (29 * 128 + 256) / 10000


def _stoi(clean: np.ndarray, enhanced: np.ndarray) -> tuple[float, str | None]:
    """Classic (non-extended) STOI; NaN instead of pystoi's 1e-5 placeholder or a crash."""
    failure = float("nan"), f"STOI needs at least {_STOI_MIN_SECONDS:.2f} s of non-silent speech"
    if len(clean) < _STOI_MIN_SECONDS * SAMPLE_RATE:
        return failure
    from pystoi import stoi

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(stoi(clean, enhanced, SAMPLE_RATE, extended=False))
    if any("Not enough STFT frames" in str(warning.message) for warning in caught):
        return failure
    return value, None


def score_pair(clean: np.ndarray, enhanced: np.ndarray,
               sample_rate: int = SAMPLE_RATE) -> dict[str, float | str]:
    """PESQ, CSIG, CBAK, COVL, SSNR and STOI of one enhanced signal against its reference.

    Both signals are resampled to 16 kHz if needed and trimmed to the shorter one. Every
    metric key is always present; metrics that could not be computed are NaN, and an extra
    ``error`` key then says why (e.g. PESQ found no utterances in a silent reference, which
    also makes CSIG, CBAK and COVL NaN, since they are regressions on PESQ).
    """
    signals = []
    for role, signal in (("clean", clean), ("enhanced", enhanced)):
        signal = np.asarray(signal, dtype=np.float64)
        if signal.ndim != 1:
            raise ValueError(f"score_pair needs 1-D {role} samples, got shape {signal.shape}")
        signals.append(resample_to_16k(signal, sample_rate))
    length = min(len(signals[0]), len(signals[1]))
    clean_16k, enhanced_16k = signals[0][:length], signals[1][:length]

    result: dict[str, float | str] = dict.fromkeys(METRICS, float("nan"))
    for role, signal in (("clean", clean_16k), ("enhanced", enhanced_16k)):
        if not np.all(np.isfinite(signal)):
            result["error"] = f"the {role} signal has non-finite samples (NaN or inf)"
            return result
    if not np.any(clean_16k):
        result["error"] = "the clean reference is all zeros or empty: nothing to score against"
        return result
    errors = []
    pesq_score, pesq_error = wideband_pesq(clean_16k, enhanced_16k)
    if pesq_error:
        errors.append(pesq_error)
    distortions = composite_distortions(clean_16k, enhanced_16k, SAMPLE_RATE)
    if math.isnan(distortions.segsnr):
        window, hop = frame_length(SAMPLE_RATE)
        errors.append(f"composite measures need at least {window + hop} samples, got {length}")
    result.update(pesq=pesq_score, ssnr=distortions.segsnr,
                  **composite_ratings(pesq_score, distortions))
    result["stoi"], stoi_error = _stoi(clean_16k, enhanced_16k)
    if stoi_error:
        errors.append(stoi_error)
    if errors:
        result["error"] = "; ".join(errors)
    return result


@dataclass(frozen=True)
class FileScore:
    """Scores of one file; NaN metrics are explained by ``error``."""

    file: str
    pesq: float
    csig: float
    cbak: float
    covl: float
    ssnr: float
    stoi: float
    duration_s: float
    error: str = ""

    def metrics(self) -> dict[str, float]:
        """The six metrics by name, in table order."""
        return {name: getattr(self, name) for name in METRICS}


def _load(source: AudioSource) -> np.ndarray:
    if isinstance(source, np.ndarray):
        return source
    return read_mono_16k(source)


def _score_job(job: tuple[str, AudioSource, AudioSource]) -> FileScore:
    """Worker task: load (or take) both signals and score them."""
    file_name, clean_source, enhanced_source = job
    clean, enhanced = _load(clean_source), _load(enhanced_source)
    values = score_pair(clean, enhanced, SAMPLE_RATE)
    error = str(values.pop("error", ""))
    duration_s = min(len(clean), len(enhanced)) / SAMPLE_RATE
    return FileScore(file=file_name, duration_s=duration_s, error=error,
                     **{metric: float(values[metric]) for metric in METRICS})


def _warm_up() -> None:
    """Helper task: import what scoring needs (pystoi pulls in scipy.signal, ~1-2 s)."""
    import pystoi  # noqa: F401
    import soundfile  # noqa: F401


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
def _single_threaded_blas() -> Iterator[None]:
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


def _fork_is_safe() -> bool:
    """Whether helpers may be forked from this process instead of spawned.

    A forked helper is a copy of this (already warm) process and can score at once; a spawned
    one starts a fresh interpreter and spends ~1.5-2 s importing scipy before its first file,
    which on a small set is most of the time there is to save. Forking is only safe when this
    process has no other thread (a child keeps only the forking thread, and any lock another
    thread held stays locked) and has not loaded torch (whose OpenMP pool and CUDA state do not
    survive a fork): true for ``bsrnn score``, not for ``bsrnn evaluate`` (which holds a model).
    """
    return ("fork" in multiprocessing.get_all_start_methods() and "torch" not in sys.modules
            and threading.active_count() == 1)


def _score_in_forked_helpers(jobs: list[tuple[str, AudioSource, AudioSource]], workers: int,
                             results: list[FileScore | None], progress: bool) -> None:
    """Score every job in ``workers`` processes forked from this (warm) process.

    Forked helpers start in milliseconds, so this process need not score while they start (as
    it must with spawned ones): it hands out single files and collects. Every helper takes the
    next file when it finishes one, so the last one to finish is at most one file behind.
    """
    _warm_up()  # the children inherit the imports
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"),
                                   initializer=_init_worker, initargs=(os.getpid(),))
    try:
        # With the fork method every process is created at the first submit, before the
        # executor starts its own threads; the progress bar (and its monitor thread) after.
        futures = {executor.submit(_score_job, job): index for index, job in enumerate(jobs)}
        with _progress_bar(len(jobs), progress) as bar:
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.update()
    finally:
        executor.shutdown(wait=False, cancel_futures=True)


def _score_with_helpers(jobs: list[tuple[str, AudioSource, AudioSource]], helpers: int,
                        results: list[FileScore | None], bar: Any) -> None:
    """Score in this process while ``helpers`` spawned processes start, then share the rest.

    A spawned helper spends a second or more importing before it can score anything. This
    process scores from the front of the list meanwhile, and each helper takes jobs from the
    back once it is warm (two at a time, so it never idles while this process is busy), so
    adding workers never makes a small set much slower and a large set approaches
    ``helpers + 1`` times faster.
    """
    executor, warming = start_workers(helpers, _warm_up)
    todo = deque(range(len(jobs)))
    in_flight: dict[Future, int] = {}
    try:
        while todo or in_flight:
            warm = sum(1 for probe in warming if probe.done() and probe.result() is None)
            while todo and len(in_flight) < 2 * warm:
                index = todo.pop()
                in_flight[executor.submit(_score_job, jobs[index])] = index
            if todo and _SCORE_IN_PARENT:
                index = todo.popleft()
                results[index] = _score_job(jobs[index])
                bar.update()
            else:
                unfinished = [future for future in (*warming, *in_flight) if not future.done()]
                wait(unfinished, return_when=FIRST_COMPLETED)
            for future in [future for future in in_flight if future.done()]:
                results[in_flight.pop(future)] = future.result()
                bar.update()
    finally:
        # Do not wait for helpers still importing: they exit on their own once started.
        executor.shutdown(wait=False, cancel_futures=True)


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


def _progress_bar(total: int, progress: bool) -> Any:
    return tqdm(total=total, desc="scoring", unit="file", disable=None) if progress else _NoProgress()


def score_files(pairs: Sequence[tuple[str, AudioSource, AudioSource]], workers: int,
                progress: bool = True) -> list[FileScore]:
    """Score ``(name, clean, enhanced)`` triples, in input order, on ``workers`` processes.

    Sources are wav paths or mono 16 kHz arrays. ``workers=1`` scores in this process. With
    more, ``workers`` helpers forked from this process score every file when forking is safe
    (no torch, no other thread: see ``_fork_is_safe``); otherwise (e.g. after torch or CUDA is
    initialised) ``workers - 1`` spawned helpers join this process. OpenBLAS runs
    single-threaded in every scoring process. Results do not depend on the worker count.
    Files that could not be fully scored are logged once, with a few examples.
    """
    jobs = list(pairs)
    results: list[FileScore | None] = [None] * len(jobs)
    workers = min(workers, len(jobs))
    with _single_threaded_blas():
        if workers <= 1:
            with _progress_bar(len(jobs), progress) as bar:
                for index, job in enumerate(jobs):
                    results[index] = _score_job(job)
                    bar.update()
        elif _fork_is_safe():
            _score_in_forked_helpers(jobs, workers, results, progress)
        else:
            with _progress_bar(len(jobs), progress) as bar:
                _score_with_helpers(jobs, workers - 1, results, bar)
    scores = [score for score in results if score is not None]
    assert len(scores) == len(jobs), "every job either returned a score or raised"
    _log_failures(scores)
    return scores


def _log_failures(scores: Sequence[FileScore]) -> None:
    failed = [score for score in scores if score.error]
    if failed:
        examples = "; ".join(f"{score.file}: {score.error}" for score in failed[:3])
        log.warning("%d of %d files could not be fully scored; their missing metrics are NaN "
                    "and left out of the means (%s%s)", len(failed), len(scores), examples,
                    "; ..." if len(failed) > 3 else "")


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


def check_csv_path(path: Path, flag: str = "--csv") -> None:
    """Refuse a CSV path that cannot be written, before any scoring work is done.

    Finding out after an hour of scoring would waste the hour. Missing folders are fine
    (``write_csv`` creates them), as long as the nearest existing one is a folder this user
    can write in; nothing is created here.
    """
    from bsrnn.errors import UserError

    if path.is_dir():
        raise UserError(f"{flag} {path}: expected a file name, found a folder. "
                        f"Fix: pass e.g. {flag} {path / 'scores.csv'}")
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{flag} {path}: expected a folder to write it in, found that {existing} is a file. "
                        "Fix: choose a path inside a folder")
    target = path if path.exists() else existing
    if not os.access(target, os.W_OK) or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: expected a place this user can write, found {target} is not "
                        "writable. Fix: choose another path")


def write_csv(scores: Sequence[FileScore], path: str | os.PathLike[str]) -> None:
    """One row per file: file, pesq, csig, cbak, covl, ssnr, stoi, duration_s, error."""
    assert tuple(field.name for field in fields(FileScore)) == CSV_COLUMNS
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for score in scores:
            writer.writerow([_csv_value(value) for value in asdict(score).values()])
