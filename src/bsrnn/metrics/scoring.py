"""Score enhanced speech against clean references: one pair, and many files.

``bsrnn score`` (folders of audio files) and ``bsrnn evaluate`` (signals enhanced in memory)
both go through ``score_files``, so any system's outputs are scored exactly the way ours are.
Metrics are PESQ (wide band), CSIG, CBAK, COVL, SSNR, STOI and SI-SDR at 16 kHz (their
definitions: README.md, "What the metrics are"; what must agree for two score files to be
compared: ``SCORING_SETTINGS``). A metric that cannot
be computed for a file (silent reference, too short) is NaN with the reason in ``error``, is
left out of the means, and is counted, so a failure is never mistaken for a score.

Files are read with ``bsrnn.audio`` (any format libsndfile reads) and worked on in float64;
other rates are resampled to 16 kHz. The processes that score many files are
``bsrnn.metrics.parallel``'s; the table and the CSV are ``bsrnn.metrics.report``'s.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bsrnn.audio import SAMPLE_RATE, AudioFileError, AudioInfo, audio_info, read_audio, resample
from bsrnn.metrics.composite import composite_distortions, composite_ratings, frame_length
from bsrnn.metrics.parallel import run_jobs
from bsrnn.metrics.pesq_pool import wideband_pesq
from bsrnn.metrics.si_sdr import si_sdr

log = logging.getLogger(__name__)

METRICS = ("pesq", "csig", "cbak", "covl", "ssnr", "stoi", "si_sdr")
"""The metrics of a score, in table and CSV order; higher is better for every one."""

SCORING_SETTINGS: dict[str, object] = {
    "sample_rate": SAMPLE_RATE,
    "pesq": "P.862.2 wide-band MOS-LQO, pesq package mode wb, raw",
    "composite": "CSIG/CBAK/COVL, Hu & Loizou 2008, on wide-band PESQ",
    "ssnr": "segmental SNR, frames clipped to [-10, 35] dB",
    "stoi": "classic, pystoi extended=False",
    "si_sdr": "Le Roux et al. 2019, zero-mean, float64 epsilon",
    "alignment": "shorter length, other rates resampled with resample_poly",
}
"""What a score's numbers depend on, beside the audio: written beside every score CSV
(``csvfile``), and two CSVs scored under other settings are refused by ``bsrnn compare``.
Change a value here whenever a change of this code changes a score, so that old and new
numbers are never compared as if they were alike. Library versions are recorded apart
(``csvfile.library_versions``): a different one only warns."""

ScoreInput = str | os.PathLike[str] | np.ndarray
"""An audio file's path, or a mono signal already at 16 kHz."""


def _refuse_unscorable(path: str | os.PathLike[str], channels: int, frames: int) -> None:
    if channels != 1:
        raise AudioFileError(f"{path}: expected mono audio, found {channels} channels. Fix: score one "
                             f"channel per file (e.g. `sox IN OUT remix 1`)", str(path), f"{channels} channels")
    if frames == 0:
        raise AudioFileError(f"{path}: expected speech samples, found a file with none. Fix: remove it "
                             f"or re-create it", str(path), "no samples")


def inspect_audio(path: str | os.PathLike[str]) -> AudioInfo:
    """The header of an audio file that can be scored; DataError naming it if not.

    Reads no samples, so a folder can be checked before any scoring starts.
    """
    info = audio_info(path)
    _refuse_unscorable(path, info.channels, info.frames)
    return info


def read_mono_16k(path: str | os.PathLike[str]) -> np.ndarray:
    """A mono audio file as float64 at 16 kHz (other rates are resampled, multi-channel refused)."""
    samples, rate = read_audio(path)
    _refuse_unscorable(path, 1 if samples.ndim == 1 else samples.shape[0], samples.shape[-1])
    return resample(samples.astype(np.float64), rate, SAMPLE_RATE)


STOI_MIN_SECONDS = (29 * 128 + 256) / 10000
"""pystoi needs 30 frames of 256 samples, hop 128, at 10 kHz after dropping silent frames."""


def classic_stoi(clean: np.ndarray, enhanced: np.ndarray) -> tuple[float, str | None]:
    """Classic (non-extended) STOI of 16 kHz signals as ``(value, None)``, or ``(nan, reason)``
    where pystoi would return its 1e-5 placeholder or crash."""
    failure = float("nan"), f"STOI needs at least {STOI_MIN_SECONDS:.2f} s of non-silent speech"
    if len(clean) < STOI_MIN_SECONDS * SAMPLE_RATE:
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
    """PESQ, CSIG, CBAK, COVL, SSNR, STOI and SI-SDR of one enhanced signal against its reference.

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
        signals.append(resample(signal, sample_rate, SAMPLE_RATE))
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
    result["stoi"], stoi_error = classic_stoi(clean_16k, enhanced_16k)
    if stoi_error:
        errors.append(stoi_error)
    try:
        result["si_sdr"] = si_sdr(clean_16k, enhanced_16k)
    except ValueError as error:
        errors.append(str(error))
    if errors:
        result["error"] = "; ".join(errors)
    return result


@dataclass(frozen=True)
class FileScore:
    """Scores of one file; NaN metrics are explained by ``error``. The fields, in order, are
    the CSV's columns."""

    file: str
    pesq: float
    csig: float
    cbak: float
    covl: float
    ssnr: float
    stoi: float
    si_sdr: float
    duration_s: float
    error: str = ""

    def metrics(self) -> dict[str, float]:
        """The metrics by name, in table order."""
        return {name: getattr(self, name) for name in METRICS}


def _load(source: ScoreInput) -> np.ndarray:
    if isinstance(source, np.ndarray):
        return source
    return read_mono_16k(source)


def _score_job(job: tuple[str, ScoreInput, ScoreInput]) -> FileScore:
    """Helper task: load (or take) both signals and score them."""
    file_name, clean_source, enhanced_source = job
    clean, enhanced = _load(clean_source), _load(enhanced_source)
    values = score_pair(clean, enhanced, SAMPLE_RATE)
    error = str(values.pop("error", ""))
    duration_s = min(len(clean), len(enhanced)) / SAMPLE_RATE
    return FileScore(file=file_name, duration_s=duration_s, error=error,
                     **{metric: float(values[metric]) for metric in METRICS})


def import_scoring_libraries() -> None:
    """What a helper process runs first: the imports scoring needs (pystoi pulls in
    scipy.signal, ~1-2 s), so that its first file is scored at full speed."""
    import pystoi  # noqa: F401
    import scipy.signal  # noqa: F401


def score_files(pairs: Sequence[tuple[str, ScoreInput, ScoreInput]], workers: int,
                progress: bool = True) -> list[FileScore]:
    """Score ``(name, clean, enhanced)`` triples, in input order, on ``workers`` processes.

    Sources are audio file paths or mono 16 kHz arrays; ``name`` is the row's ``file``.
    ``workers=1`` scores in this process; how more are used is ``parallel.run_jobs``'s. Results
    do not depend on the worker count. Files that could not be fully scored are logged once,
    with a few examples.
    """
    scores = run_jobs(_score_job, list(pairs), workers, warm_up=import_scoring_libraries,
                      progress=progress, desc="scoring", unit="file")
    _log_failures(scores)
    return scores


def _log_failures(scores: Sequence[FileScore]) -> None:
    failed = [score for score in scores if score.error]
    if failed:
        examples = "; ".join(f"{score.file}: {score.error}" for score in failed[:3])
        log.warning("%d of %d files could not be fully scored; their missing metrics are NaN "
                    "and left out of the means (%s%s)", len(failed), len(scores), examples,
                    "; ..." if len(failed) > 3 else "")
