"""The table ``bsrnn score`` and ``bsrnn evaluate`` print: the one a paper prints.

Per metric: the mean of the enhanced files, and with a noisy baseline (``score --noisy``, and
``evaluate`` unless ``--no-baseline``) the noisy input's mean, the improvement (enhanced -
noisy, paired over files) with its 95 % confidence interval, and how many files improved
(``stats.paired_difference``). The same table in text, Markdown, LaTeX or JSON (``tables``).

A metric that could not be computed for a file is NaN in its row (written ``nan``) with the
reason in ``error``; it is left out of that metric's mean and of the pairs, and the table says
over how many files each number was taken, so a failure is never mistaken for a score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from bsrnn.metrics.scoring import METRICS, SCORING_SETTINGS, FileScore
from bsrnn.metrics.stats import CONFIDENCE, PairedDifference, paired_difference
from bsrnn.metrics.tables import PLUS_MINUS, Table, interval, number, render, to_json

LABELS = {"pesq": "PESQ", "csig": "CSIG", "cbak": "CBAK", "covl": "COVL", "ssnr": "SSNR (dB)", "stoi": "STOI",
          "si_sdr": "SI-SDR (dB)"}
"""How a paper names each metric (Markdown and LaTeX tables); text tables use the CSV's names."""

DECIMALS = {"pesq": 3, "csig": 3, "cbak": 3, "covl": 3, "ssnr": 2, "stoi": 4, "si_sdr": 2}
"""Decimals shown per metric (JSON keeps every digit): as papers print them, one more."""

PESQ_NOTE = "PESQ: wide-band (ITU-T P.862.2) MOS-LQO as the pesq package computes it, raw (not mapped)."
INTERVAL_NOTE = (f"improvement: enhanced - noisy per file, mean {PLUS_MINUS} half-width of its "
                 f"{CONFIDENCE:.0%} confidence interval (Student's t, n-1 df); improved: files whose enhanced "
                 "score is higher, of those scored both ways.")


def metric_values(scores: Sequence[FileScore], metric: str) -> np.ndarray:
    """One metric of every file, in file order (NaN where it could not be computed)."""
    return np.array([getattr(score, metric) for score in scores], dtype=np.float64)


def _mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan


def mean_scores(scores: Sequence[FileScore]) -> dict[str, float]:
    """Mean of each metric over the files where it could be computed (NaN if none)."""
    return {name: _mean(metric_values(scores, name)) for name in METRICS}


@dataclass(frozen=True)
class MetricSummary:
    """One row of the table: one metric over the test set."""

    metric: str
    files: int
    """Enhanced files where the metric could be computed: the enhanced mean's n."""
    enhanced: float
    noisy: float | None
    """The noisy input's mean (over its own finite files); None without a baseline."""
    improvement: PairedDifference | None


def summarize(scores: Sequence[FileScore], noisy: Sequence[FileScore] | None = None) -> list[MetricSummary]:
    """The table's rows; ``noisy`` holds the noisy input's scores, file for file with ``scores``."""
    if noisy is not None and [score.file for score in noisy] != [score.file for score in scores]:
        raise ValueError("summarize: the noisy scores must name the same files, in the same order")
    rows = []
    for metric in METRICS:
        enhanced = metric_values(scores, metric)
        baseline = None if noisy is None else metric_values(noisy, metric)
        rows.append(MetricSummary(
            metric=metric,
            files=int(np.isfinite(enhanced).sum()),
            enhanced=_mean(enhanced),
            noisy=None if baseline is None else _mean(baseline),
            improvement=None if baseline is None else paired_difference(baseline, enhanced),
        ))
    return rows


def _failures(scores: Sequence[FileScore], noisy: Sequence[FileScore] | None) -> str:
    failed = sum(1 for score in scores if score.error)
    text = f"{len(scores)} files"
    if failed:
        text += f", {failed} not fully scored (NaN metrics are left out of the means)"
    noisy_failed = sum(1 for score in noisy or () if score.error)
    if noisy_failed:
        text += f"; {noisy_failed} noisy inputs not fully scored"
    return text


def score_table(scores: Sequence[FileScore], noisy: Sequence[FileScore] | None = None, *,
                labels: dict[str, str] | None = None) -> Table:
    """The table as cells: ``labels`` name the metrics (default: the CSV's column names)."""
    names = labels or {metric: metric for metric in METRICS}
    rows = []
    for row in summarize(scores, noisy):
        decimals = DECIMALS[row.metric]
        cells = [names[row.metric]]
        if row.improvement is not None and row.noisy is not None:
            change = row.improvement
            cells += [number(row.noisy, decimals), number(row.enhanced, decimals),
                      interval(change.mean, change.ci_half_width, decimals), f"{change.better}/{change.files}"]
        else:
            cells.append(number(row.enhanced, decimals))
        rows.append([*cells, str(row.files)])
    if noisy is None:
        return Table(["metric", "enhanced", "files"], rows, [False, True, True],
                     [_failures(scores, noisy), PESQ_NOTE])
    columns = ["metric", "noisy", "enhanced", f"improvement ({CONFIDENCE:.0%} CI)", "improved", "files"]
    return Table(columns, rows, [False, True, True, True, True, True],
                 [_failures(scores, noisy), INTERVAL_NOTE, PESQ_NOTE])


def score_json(scores: Sequence[FileScore], noisy: Sequence[FileScore] | None = None) -> str:
    """The table's numbers at full precision, with the settings they were scored under."""
    metrics = {}
    for row in summarize(scores, noisy):
        entry: dict[str, object] = {"label": LABELS[row.metric], "files": row.files, "enhanced": row.enhanced}
        if row.improvement is not None:
            change = row.improvement
            entry["noisy"] = row.noisy
            entry["improvement"] = {**asdict(change), "ci_low": change.ci_low, "ci_high": change.ci_high}
        metrics[row.metric] = entry
    return to_json({
        "files": len(scores),
        "not_fully_scored": sum(1 for score in scores if score.error),
        "noisy_baseline": noisy is not None,
        "confidence": CONFIDENCE,
        "settings": SCORING_SETTINGS,
        "metrics": metrics,
    })


def format_table(scores: Sequence[FileScore], noisy: Sequence[FileScore] | None = None, fmt: str = "text") -> str:
    """The table in ``fmt`` (``tables.FORMATS``): what ``score`` and ``evaluate`` print."""
    if fmt == "json":
        return score_json(scores, noisy)
    return render(score_table(scores, noisy, labels=None if fmt == "text" else LABELS), fmt)
