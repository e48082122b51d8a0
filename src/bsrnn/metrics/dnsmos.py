"""DNSMOS: quality without a clean reference (``bsrnn score --no-reference DIR``), optional.

DNSMOS P.835 (Reddy et al., "DNSMOS P.835: a non-intrusive perceptual objective speech quality
metric to evaluate noise suppressors", ICASSP 2022) predicts the three ratings of an ITU-T
P.835 listening test from the audio alone: SIG (speech signal), BAK (background noise), OVRL
(overall), 1 to 5; with them, the P.808 overall MOS of its predecessor. It scores recordings
that have no clean version (real noisy speech, a demo set, a user's files), which the
intrusive metrics cannot.

The models are Microsoft's ONNX files as the ``speechmos`` package ships them inside its wheel
(``dnsmos_models/sig_bak_ovr.onnx`` and ``model_v8.onnx``; nothing is downloaded when it
runs), run by ``speechmos.dnsmos.run``: non-personalised, 9.01 s windows hopped by 1 s (a
shorter file is repeated to fill one), each rating averaged over the windows, the SIG/BAK/OVRL
polynomial calibration of the DNS Challenge applied. ``speechmos`` needs librosa and
onnxruntime, which bsrnn does not otherwise use: ``pip install 'bsrnn[dnsmos]'``.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from dataclasses import astuple, dataclass, fields
from pathlib import Path

from bsrnn.audio import SAMPLE_RATE
from bsrnn.errors import UserError
from bsrnn.metrics.csvfile import csv_cell
from bsrnn.metrics.parallel import run_jobs
from bsrnn.metrics.tables import Table, number, render, to_json

DNSMOS_METRICS = ("sig", "bak", "ovrl", "p808")
"""The ratings, in table and CSV order (``speechmos`` names them ``sig_mos``, ... ``p808_mos``)."""

LABELS = {"sig": "DNSMOS SIG", "bak": "DNSMOS BAK", "ovrl": "DNSMOS OVRL", "p808": "DNSMOS P.808"}
NOTE = ("DNSMOS P.835 (SIG, BAK, OVRL) and P.808 MOS, 1 to 5, from the speechmos package's ONNX models, "
        "non-personalised: 9.01 s windows hopped by 1 s, averaged per file; no clean reference.")
INSTALL_HINT = "pip install 'bsrnn[dnsmos]'"


def require_dnsmos() -> None:
    """Import ``speechmos.dnsmos`` now, or stop with how to install it (exit 2), before any file is read."""
    try:
        import speechmos.dnsmos  # noqa: F401  (its imports: librosa, onnxruntime, requests)
    except ImportError as error:
        raise UserError(f"--no-reference scores with DNSMOS, which needs the speechmos package and its "
                        f"dependencies (librosa, onnxruntime), found them missing ({error}). "
                        f"Fix: {INSTALL_HINT}") from None


@dataclass(frozen=True)
class DnsmosScore:
    """DNSMOS ratings of one file; NaN ratings are explained by ``error``. The fields, in order,
    are the CSV's columns."""

    file: str
    sig: float
    bak: float
    ovrl: float
    p808: float
    duration_s: float
    error: str = ""


CSV_COLUMNS = tuple(f"dnsmos_{field.name}" if field.name in DNSMOS_METRICS else field.name
                    for field in fields(DnsmosScore))
"""file, dnsmos_sig, dnsmos_bak, dnsmos_ovrl, dnsmos_p808, duration_s, error."""


def _dnsmos_job(job: tuple[str, str]) -> DnsmosScore:
    """Helper task: read one file at 16 kHz and rate it."""
    from speechmos import dnsmos

    from bsrnn.metrics.scoring import read_mono_16k

    name, path = job
    samples = read_mono_16k(path)
    duration_s = len(samples) / SAMPLE_RATE
    if not (samples.size and float(abs(samples).max()) <= 1.0):  # speechmos refuses louder arrays
        return DnsmosScore(name, *[math.nan] * len(DNSMOS_METRICS), duration_s,
                           error="DNSMOS needs samples within [-1, 1] (a float file louder than full scale)")
    ratings = dnsmos.run(samples, SAMPLE_RATE)
    return DnsmosScore(name, *(float(ratings[f"{metric}_mos"]) for metric in DNSMOS_METRICS), duration_s)


def _warm_up() -> None:
    import speechmos.dnsmos  # noqa: F401


def score_no_reference(files: Sequence[tuple[str, str | os.PathLike[str]]], workers: int,
                       progress: bool = True) -> list[DnsmosScore]:
    """Rate ``(name, path)`` audio files with DNSMOS, in input order, on ``workers`` processes
    (``parallel.run_jobs``). Call ``require_dnsmos`` first."""
    jobs = [(name, os.fspath(path)) for name, path in files]
    return run_jobs(_dnsmos_job, jobs, workers, warm_up=_warm_up, progress=progress, desc="DNSMOS", unit="file")


def dnsmos_means(scores: Sequence[DnsmosScore]) -> dict[str, tuple[float, int]]:
    """Each rating's mean over the files it could be computed for (NaN if none), and that count."""
    means = {}
    for metric in DNSMOS_METRICS:
        values = [getattr(score, metric) for score in scores if math.isfinite(getattr(score, metric))]
        means[metric] = (sum(values) / len(values) if values else math.nan, len(values))
    return means


def format_dnsmos(scores: Sequence[DnsmosScore], fmt: str = "text") -> str:
    """The means in ``fmt`` (``tables.FORMATS``), with how many files each covers."""
    means = dnsmos_means(scores)
    failed = sum(1 for score in scores if score.error)
    if fmt == "json":
        return to_json({"files": len(scores), "not_rated": failed, "model": NOTE,
                        "metrics": {metric: {"label": LABELS[metric], "mean": mean, "files": count}
                                    for metric, (mean, count) in means.items()}})
    names = LABELS if fmt != "text" else {metric: f"dnsmos_{metric}" for metric in DNSMOS_METRICS}
    rows = [[names[metric], number(mean, 3), str(count)] for metric, (mean, count) in means.items()]
    footer = f"{len(scores)} files" + (f", {failed} not rated (left out of the means)" if failed else "")
    return render(Table(["metric", "mean", "files"], rows, [False, True, True], [footer, NOTE]), fmt)


def dnsmos_csv_text(scores: Sequence[DnsmosScore]) -> str:
    """One row per file, the columns of ``CSV_COLUMNS``, written as the score CSVs are."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for score in scores:
        writer.writerow([csv_cell(value) for value in astuple(score)])
    return buffer.getvalue()


def dnsmos_files(folder: Path) -> list[tuple[str, Path]]:
    """The audio files of ``folder`` as ``(file name, path)``, sorted; refused if it holds none
    or one name in two formats."""
    from bsrnn.audio import audio_files_by_name, describe_name_clashes

    if not folder.is_dir():
        raise UserError(f"--no-reference {folder}: expected a folder of audio files, found "
                        f"{'a file' if folder.exists() else 'nothing'}. Fix: check the path")
    files, clashes = audio_files_by_name(folder)
    if clashes:
        raise UserError(f"--no-reference {folder}: expected one audio file per name, found "
                        f"{describe_name_clashes(clashes)}. Fix: keep one file of each")
    if not files:
        raise UserError(f"--no-reference {folder}: expected audio files, found none. Fix: check the path")
    return sorted((path.name, path) for path in files.values())
