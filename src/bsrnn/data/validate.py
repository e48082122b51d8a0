"""Check a whole corpus before anything trains on it, and report every problem at once.

The default scan reads only each file's first bytes and its header (``bsrnn.audio.audio_info``,
well under a millisecond per file, so VoiceBank+DEMAND's 24k files take seconds), and decodes
no sample: missing, unreadable, empty files and files libsndfile cannot read, the sample rate
(16 kHz), the channel count (mono), the length (at least one 512-sample frame) and equal
clean/noisy lengths, as the reference asserts.
``deep=True`` also decodes every clip to find NaN/inf samples and all-silent clips, which no
header can reveal.

Multi-channel files are rejected in every split, not only in training: scoring a
multi-channel test file would silently depend on which channel was meant.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path

from bsrnn.audio import N_FFT, SAMPLE_RATE
from bsrnn.data.layout import SPLITS, Corpus, scan_corpus
from bsrnn.data.report import DataProblem, ProblemReport
from bsrnn.data.sources import AudioHeader, AudioSource, Pair, sample_problems

logger = logging.getLogger(__name__)


def _header_or_problem(source: AudioSource, report: ProblemReport) -> AudioHeader | None:
    try:
        return source.header()
    except DataProblem as problem:
        report.add(problem)
        return None


def _check_header(source: AudioSource, header: AudioHeader, report: ProblemReport) -> bool:
    where = source.describe()
    problems = []
    if header.rate != SAMPLE_RATE:
        problems.append(DataProblem.of("rate", where, f"{header.rate} Hz"))
    if header.channels != 1:
        problems.append(DataProblem.of("channels", where, f"{header.channels} channels"))
    if header.frames < N_FFT:
        problems.append(DataProblem.of("too_short", where, f"{header.frames} samples"))
    for problem in problems:
        report.add(problem)
    return not problems


def check_pair(pair: Pair, deep: bool = False) -> ProblemReport:
    """Every problem of one pair; decoding only when ``deep`` and the headers are sound."""
    report = ProblemReport()
    headers = {side: _header_or_problem(getattr(pair, side), report) for side in ("clean", "noisy")}
    sound = {
        side: header is not None and _check_header(getattr(pair, side), header, report)
        for side, header in headers.items()
    }
    clean_header, noisy_header = headers["clean"], headers["noisy"]
    if clean_header is not None and noisy_header is not None and clean_header.frames != noisy_header.frames:
        report.add(
            DataProblem.of(
                "length_mismatch",
                pair.clean.describe(),
                f"{clean_header.frames} samples, but {noisy_header.frames} in {pair.noisy.describe()}",
            )
        )
    if deep:
        for side in ("clean", "noisy"):
            if not sound[side]:
                continue
            for problem in decoded_problems(getattr(pair, side)):
                report.add(problem)
    return report


def decoded_problems(source: AudioSource, kinds: Iterable[str] | None = None) -> list[DataProblem]:
    """What decoding one clip finds: that it cannot be decoded, or its samples' problems
    (all of them, or only those of ``kinds``)."""
    try:
        samples, _ = source.load()
    except DataProblem as problem:
        return [problem]
    found = sample_problems(samples, source.describe())
    return [problem for problem in found if kinds is None or problem.kind in kinds]


def validate_corpus(corpus: Corpus, splits: Iterable[str] = SPLITS, deep: bool = False) -> ProblemReport:
    """All problems of the files of ``splits`` (see the module docstring), without raising."""
    report = ProblemReport()
    started = time.monotonic()
    count = 0
    for split in splits:
        for pair in corpus.split(split):
            report.extend(check_pair(pair, deep=deep))
            count += 1
    logger.info(
        "Checked %d pairs (%s scan) in %.1f s: %d problem(s)",
        count,
        "deep" if deep else "header",
        time.monotonic() - started,
        len(report),
    )
    return report


def check_finite_samples(corpus: Corpus, splits: Iterable[str] = SPLITS) -> None:
    """Decode every clip of ``splits``; one DataError names each with NaN/inf samples.

    Unlike ``deep=True`` this does not refuse all-silent clips: scoring reports those per file
    (NaN metrics with the reason), while a NaN/inf sample would make the whole file garbage.
    Run it before enhancing a test set, so a bad file fails the command before any work.
    """
    report = ProblemReport()
    for split in splits:
        for pair in corpus.split(split):
            for source in (pair.clean, pair.noisy):
                for problem in decoded_problems(source, kinds=("non_finite",)):
                    report.add(problem)
    report.raise_if_any(f"Dataset {corpus.describe()}")


def check_corpus(corpus: Corpus, splits: Iterable[str] = SPLITS, deep: bool = False) -> None:
    """Raise one DataError naming every bad file of ``corpus``, if there is any."""
    validate_corpus(corpus, splits, deep=deep).raise_if_any(f"Dataset {corpus.describe()}")


def check_data_dir(data_dir: str | Path, splits: Iterable[str] = SPLITS, deep: bool = False) -> Corpus:
    """Find the corpus under ``data_dir`` and check it; one DataError lists every problem.

    This is what to run before the first training step (``splits=("train", "test")``) or
    before scoring (``splits=("test",)``): folder, pairing and file problems all come in the
    same message, so a user fixes everything in one round.
    """
    wanted = tuple(splits)
    corpus, report = scan_corpus(data_dir, wanted)
    report.extend(validate_corpus(corpus, wanted, deep=deep))
    report.raise_if_any(f"Data directory {data_dir} ({corpus.layout} layout)")
    return corpus
