"""``bsrnn compare A.csv B.csv``: is system B better than system A, file by file, and how sure?

Both CSVs (``bsrnn score`` or ``bsrnn evaluate``) must score the same files under the same
scoring settings, or the comparison is refused (``check_comparable``): a mean over other files,
or numbers computed another way, would pass for a difference between the systems. Per metric:
the means of A and B over the files both could score, the per-file difference B - A with its
95 % confidence interval, how many files B wins, loses and ties, and the sign test's p-value
(``stats.paired_difference``); then the files where B loses most by PESQ, the first to listen to.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from bsrnn.errors import UserError
from bsrnn.metrics.csvfile import ScoreFile
from bsrnn.metrics.report import DECIMALS, LABELS, PESQ_NOTE, metric_values
from bsrnn.metrics.scoring import METRICS
from bsrnn.metrics.stats import CONFIDENCE, PairedDifference, paired_difference
from bsrnn.metrics.tables import PLUS_MINUS, Table, interval, number, p_value, render, to_json

WORST_SHOWN = 5
"""How many of the files where B loses most by PESQ are listed."""

_NAMES_SHOWN = 5


def _few(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_NAMES_SHOWN])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _NAMES_SHOWN else "")


def check_comparable(a: ScoreFile, b: ScoreFile) -> list[str]:
    """Refuse two score files that do not score the same files under the same settings
    (``UserError``, exit 2, naming what differs); return warnings for what cannot be checked
    (a CSV without its settings) or may shift numbers slightly (other library versions)."""
    names_a = {score.file for score in a.scores}
    names_b = {score.file for score in b.scores}
    if names_a != names_b:
        only_a, only_b = sorted(names_a - names_b), sorted(names_b - names_a)
        parts = [f"{len(only)} only in {path} ({_few(only)})" for only, path in ((only_a, a.path), (only_b, b.path))
                 if only]
        raise UserError(f"{a.path} and {b.path} were scored on different files: {'; '.join(parts)}. A paired "
                        "comparison needs every file scored by both systems. Fix: score both on the same test set "
                        "(the same clean files, all of them)")
    warnings = [f"{score_file.path}: scoring settings unknown: {score_file.unknown}; compared as if they were "
                "the same" for score_file in (a, b) if score_file.settings is None]
    if a.settings is not None and b.settings is not None and a.settings != b.settings:
        keys = sorted(set(a.settings) | set(b.settings))
        differ = [f"{key}: {a.settings.get(key, 'not recorded')!r} in A, {b.settings.get(key, 'not recorded')!r} in B"
                  for key in keys if a.settings.get(key) != b.settings.get(key)]
        raise UserError(f"{a.path} (A) and {b.path} (B) were scored with different settings: {'; '.join(differ)}. "
                        "Their numbers are not comparable. Fix: score both systems with one bsrnn version "
                        "(`bsrnn score CLEAN ENHANCED --csv ...` again for the older one)")
    versions = sorted(name for name in set(a.versions) & set(b.versions) if a.versions[name] != b.versions[name])
    if versions:
        warnings.append("scored with other library versions (" + ", ".join(
            f"{name} {a.versions[name]} in A, {b.versions[name]} in B" for name in versions)
            + "): scores may differ slightly for that reason alone")
    return warnings


@dataclass(frozen=True)
class MetricComparison:
    """One metric of A and B over the files both could score."""

    metric: str
    mean_a: float
    mean_b: float
    difference: PairedDifference | None
    """B - A file by file; None where A or B has no column for the metric."""
    missing_in: str = ""
    """"A", "B" or "A and B" when the metric is not in that CSV (an older one)."""


@dataclass(frozen=True)
class FileDifference:
    """One file's PESQ in A and B, and B - A."""

    file: str
    a: float
    b: float
    difference: float


@dataclass(frozen=True)
class Comparison:
    """Everything ``bsrnn compare`` prints, in every format."""

    a: ScoreFile
    b: ScoreFile
    files: int
    metrics: list[MetricComparison]
    worst: list[FileDifference]
    """Up to ``WORST_SHOWN`` files where B's PESQ is lower than A's, the largest loss first."""
    warnings: list[str]


def _by_file(score_file: ScoreFile, order: Sequence[str], metric: str) -> np.ndarray:
    values = dict(zip((score.file for score in score_file.scores), metric_values(score_file.scores, metric)))
    return np.array([values[name] for name in order], dtype=np.float64)


def compare(a: ScoreFile, b: ScoreFile) -> Comparison:
    """Compare two score files, refused first if they are not comparable (``check_comparable``)."""
    warnings = check_comparable(a, b)
    order = [score.file for score in a.scores]
    metrics = []
    for metric in METRICS:
        missing = " and ".join(name for name, score_file in (("A", a), ("B", b)) if metric in score_file.missing)
        if missing:
            metrics.append(MetricComparison(metric, math.nan, math.nan, None, missing))
            continue
        first, second = _by_file(a, order, metric), _by_file(b, order, metric)
        both = np.isfinite(first) & np.isfinite(second)
        mean_a = float(first[both].mean()) if both.any() else math.nan
        mean_b = float(second[both].mean()) if both.any() else math.nan
        metrics.append(MetricComparison(metric, mean_a, mean_b, paired_difference(first, second)))
    worst: list[FileDifference] = []
    if "pesq" not in a.missing and "pesq" not in b.missing:
        first, second = _by_file(a, order, "pesq"), _by_file(b, order, "pesq")
        losses = [FileDifference(name, float(x), float(y), float(y - x))
                  for name, x, y in zip(order, first, second) if math.isfinite(y - x) and y < x]
        worst = sorted(losses, key=lambda loss: (loss.difference, loss.file))[:WORST_SHOWN]
    return Comparison(a, b, len(order), metrics, worst, warnings)


def _scored(score_file: ScoreFile) -> str:
    scored = score_file.source.get("scored")
    return f"{score_file.path} ({scored})" if scored else str(score_file.path)


def comparison_table(comparison: Comparison, labels: dict[str, str] | None = None) -> Table:
    """Per metric: A, B, B - A with its interval, wins, losses, ties, sign-test p, files."""
    names = labels or {metric: metric for metric in METRICS}
    rows = []
    for row in comparison.metrics:
        change = row.difference
        if change is None:
            rows.append([names[row.metric], "n/a", "n/a", f"not in {row.missing_in}", "", "", "", "", "0"])
            continue
        decimals = DECIMALS[row.metric]
        rows.append([names[row.metric], number(row.mean_a, decimals), number(row.mean_b, decimals),
                     interval(change.mean, change.ci_half_width, decimals), str(change.better), str(change.worse),
                     str(change.ties), p_value(change.sign_test_p), str(change.files)])
    notes = [f"A: {_scored(comparison.a)}", f"B: {_scored(comparison.b)}",
             (f"{comparison.files} files in both; per metric over the files both could score. B - A: mean "
              f"{PLUS_MINUS} half-width of its {CONFIDENCE:.0%} confidence interval (Student's t, n-1 df); "
              "p: two-sided exact sign test of B better against B worse, ties dropped."), PESQ_NOTE]
    columns = ["metric", "A", "B", f"B - A ({CONFIDENCE:.0%} CI)", "B better", "B worse", "ties", "p (sign)", "files"]
    return Table(columns, rows, [False, *[True] * 8], notes)


def worst_table(comparison: Comparison) -> Table:
    """The files where B loses most by PESQ (none: a one-line table saying so)."""
    rows = [[loss.file, number(loss.a, 3), number(loss.b, 3), number(loss.difference, 3, signed=True)]
            for loss in comparison.worst]
    if not rows:
        rows = [["(B's PESQ is below A's on no file)", "", "", ""]]
    return Table(["file (B loses most, by PESQ)", "A", "B", "B - A"], rows, [False, True, True, True])


def comparison_json(comparison: Comparison) -> str:
    """Every number of the comparison at full precision, with both files' settings and sources."""
    metrics = {}
    for row in comparison.metrics:
        entry: dict[str, object] = {"label": LABELS[row.metric], "a": row.mean_a, "b": row.mean_b}
        if row.difference is None:
            entry["missing_in"] = row.missing_in
        else:
            change = row.difference
            entry["difference"] = {**asdict(change), "ci_low": change.ci_low, "ci_high": change.ci_high}
        metrics[row.metric] = entry
    return to_json({
        "a": {"csv": str(comparison.a.path), "settings": comparison.a.settings, "source": comparison.a.source},
        "b": {"csv": str(comparison.b.path), "settings": comparison.b.settings, "source": comparison.b.source},
        "files": comparison.files,
        "confidence": CONFIDENCE,
        "metrics": metrics,
        "worst_by_pesq": [asdict(loss) for loss in comparison.worst],
        "warnings": comparison.warnings,
    })


def format_comparison(comparison: Comparison, fmt: str = "text") -> str:
    """The comparison in ``fmt`` (``tables.FORMATS``): the metric table, then the worst files."""
    if fmt == "json":
        return comparison_json(comparison)
    labels = None if fmt == "text" else LABELS
    return render(comparison_table(comparison, labels), fmt) + "\n\n" + render(worst_table(comparison), fmt)
