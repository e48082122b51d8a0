"""Speech-quality metrics: PESQ, Hu & Loizou's composite measures, SSNR, STOI.

- ``composite``: LLR, WSS and segmental SNR, and the CSIG/CBAK/COVL regressions.
- ``pesq_pool``: wide-band PESQ that reports failures, and the persistent pool that scores the
  discriminator's batches while the generator trains.
- ``scoring``: the metrics of one pair, and of many files (``score_files``).
- ``parallel``: the helper processes ``score_files`` runs on, and their thread limits.
- ``report``: the table and the CSV that ``bsrnn score`` and ``bsrnn evaluate`` share.

``import bsrnn.metrics`` loads numpy, soundfile, pesq and tqdm only (never torch, so that
``bsrnn score`` may fork its helpers); scipy and pystoi load when first used.
"""

from __future__ import annotations

from bsrnn.metrics.composite import CompositeDistortions, composite_distortions, composite_ratings
from bsrnn.metrics.pesq_pool import PendingPesq, PesqBatch, PesqPool, wideband_pesq
from bsrnn.metrics.report import CSV_COLUMNS, check_csv_path, format_table, mean_scores, write_csv
from bsrnn.metrics.scoring import METRICS, FileScore, inspect_audio, read_mono_16k, score_files, score_pair

__all__ = [
    "CSV_COLUMNS",
    "METRICS",
    "CompositeDistortions",
    "FileScore",
    "PendingPesq",
    "PesqBatch",
    "PesqPool",
    "check_csv_path",
    "composite_distortions",
    "composite_ratings",
    "format_table",
    "inspect_audio",
    "mean_scores",
    "read_mono_16k",
    "score_files",
    "score_pair",
    "wideband_pesq",
    "write_csv",
]
