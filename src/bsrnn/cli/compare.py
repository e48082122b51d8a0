"""``bsrnn compare A.csv B.csv``: system B against system A, file by file.

Reads two CSVs of ``bsrnn score`` or ``bsrnn evaluate`` and prints, per metric, A's and B's
means, B - A with its 95 % confidence interval, wins, losses, ties and the sign test's p-value,
then the files where B loses most by PESQ (``bsrnn.metrics.comparison``). Two CSVs scored on
other files or under other scoring settings are refused (exit 2, naming what differs); a CSV
without its settings file (written before they were recorded) is compared with a warning.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from bsrnn.cli.score import add_format_argument

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("csv_a", metavar="A.csv", type=Path,
                        help="scores of the baseline system (--csv of `bsrnn score` or `bsrnn evaluate`)")
    parser.add_argument("csv_b", metavar="B.csv", type=Path,
                        help="scores of the system compared with it, on the same files; differences are B - A")
    add_format_argument(parser)


def run(args: argparse.Namespace) -> int:
    from bsrnn.metrics.comparison import compare, format_comparison
    from bsrnn.metrics.csvfile import read_scores

    comparison = compare(read_scores(args.csv_a), read_scores(args.csv_b))
    for warning in comparison.warnings:
        log.warning("%s", warning)
    print(format_comparison(comparison, args.format))
    return 0
