"""Paired statistics over files: how much one system beats another, and how sure that is.

Two systems scored on the same files give one difference per file (``after - before``: the
enhanced minus the noisy input in a score table, B minus A in ``bsrnn compare``). Pairing
removes what the files themselves contribute (a hard file is hard for both), so the interval
is far narrower than one built from the two means alone.

- The 95 % confidence interval of the mean difference: ``mean ± t(0.975, n-1) * sd / sqrt(n)``
  (Student's t, ``sd`` with n - 1 degrees of freedom), as ``scipy.stats.ttest_rel`` gives it.
  It assumes the mean difference is close to normal, which holds for test sets of tens of
  files or more.
- The two-sided sign test: how often B is better than A, against a fair coin, exact binomial,
  ties dropped. It assumes nothing about the differences' distribution, so a few files with
  huge differences cannot carry it.

Files where either value is NaN (a metric that could not be computed) are left out of the
pair, and ``files`` says how many pairs remained.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

CONFIDENCE = 0.95
"""The confidence level of every interval bsrnn prints."""


@dataclass(frozen=True)
class PairedDifference:
    """The per-file differences ``after - before`` of one metric, summarised."""

    files: int
    """Pairs where both values are finite: the n of the interval."""
    mean: float
    ci_half_width: float
    """``t(0.975, n-1) * sd / sqrt(n)``; NaN below 2 pairs (no spread to estimate)."""
    better: int
    """Files where ``after`` is higher (every bsrnn metric is better when higher)."""
    worse: int
    ties: int
    sign_test_p: float
    """Two-sided exact sign test of better against worse, ties dropped (1.0 if all tie)."""

    @property
    def ci_low(self) -> float:
        return self.mean - self.ci_half_width

    @property
    def ci_high(self) -> float:
        return self.mean + self.ci_half_width


def t_half_width(differences: ArrayLike, confidence: float = CONFIDENCE) -> float:
    """Half the width of the Student-t confidence interval of the mean of ``differences``.

    NaN for fewer than 2 values: one difference says nothing about the spread.
    """
    values = np.asarray(differences, dtype=np.float64)
    if values.size < 2:
        return math.nan
    from scipy.stats import t  # scipy.stats takes ~0.3 s to import: only when a table is made

    quantile = float(t.ppf(0.5 + confidence / 2, values.size - 1))
    return quantile * float(values.std(ddof=1)) / math.sqrt(values.size)


def sign_test(better: int, worse: int) -> float:
    """Two-sided p-value of the exact sign test: ``better`` successes in ``better + worse``
    fair coin flips, as ``scipy.stats.binomtest(better, better + worse).pvalue`` gives it.

    Computed with whole numbers (``math.comb``), so it is exact for any test set's size, where
    a float binomial would underflow past ~1000 files.
    """
    if better < 0 or worse < 0:
        raise ValueError(f"sign_test needs counts >= 0, got {better} and {worse}")
    trials = better + worse
    if trials == 0:
        return 1.0
    ways = sum(math.comb(trials, k) for k in range(min(better, worse) + 1))  # the smaller tail
    return min(1.0, 2 * ways / 2**trials)  # the larger one mirrors it (p = 1/2 is symmetric)


def paired_difference(before: ArrayLike, after: ArrayLike) -> PairedDifference:
    """Summarise ``after - before`` file by file; the two arrays hold one value per file, in the
    same file order. Pairs with a NaN or infinite value on either side are left out."""
    first = np.asarray(before, dtype=np.float64)
    second = np.asarray(after, dtype=np.float64)
    if first.shape != second.shape or first.ndim != 1:
        raise ValueError(f"paired_difference needs two 1-D arrays of one length, got shapes "
                         f"{first.shape} and {second.shape}")
    both = np.isfinite(first) & np.isfinite(second)
    differences = second[both] - first[both]
    better, worse = int(np.sum(differences > 0)), int(np.sum(differences < 0))
    return PairedDifference(
        files=int(differences.size),
        mean=float(differences.mean()) if differences.size else math.nan,
        ci_half_width=t_half_width(differences),
        better=better,
        worse=worse,
        ties=int(differences.size) - better - worse,
        sign_test_p=sign_test(better, worse),
    )
