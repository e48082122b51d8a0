"""Speech-quality metrics: PESQ, Hu & Loizou's composite measures, SSNR, STOI.

- ``composite``: LLR, WSS and segmental SNR, and the CSIG/CBAK/COVL regressions.
- ``pesq_pool``: wide-band PESQ that reports failures, and the persistent pool that scores the
  discriminator's batches while the generator trains.
- ``scoring``: one pair, many files in parallel, and the table and CSV that ``bsrnn score`` and
  ``bsrnn evaluate`` share.

``import bsrnn.metrics`` loads numpy, pesq and tqdm only; scipy and pystoi load when first used.
"""

from __future__ import annotations

from bsrnn.metrics.composite import CompositeDistortions, composite_distortions, composite_ratings
from bsrnn.metrics.pesq_pool import PendingPesq, PesqBatch, PesqPool, wideband_pesq
from bsrnn.metrics.scoring import (
    CSV_COLUMNS,
    METRICS,
    FileScore,
    format_table,
    inspect_wav,
    mean_scores,
    read_mono_16k,
    score_files,
    score_pair,
    write_csv,
)

__all__ = [
    "CSV_COLUMNS",
    "METRICS",
    "CompositeDistortions",
    "FileScore",
    "PendingPesq",
    "PesqBatch",
    "PesqPool",
    "composite_distortions",
    "composite_ratings",
    "format_table",
    "inspect_wav",
    "mean_scores",
    "read_mono_16k",
    "score_files",
    "score_pair",
    "wideband_pesq",
    "write_csv",
]
