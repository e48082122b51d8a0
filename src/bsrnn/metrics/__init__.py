"""Speech-quality metrics: PESQ, Hu & Loizou's composite measures, SSNR, STOI, SI-SDR, and the
tables and statistics that report them.

- ``composite``: LLR, WSS and segmental SNR, and the CSIG/CBAK/COVL regressions.
- ``pesq_pool``: wide-band PESQ that reports failures, and the persistent pool that scores the
  discriminator's batches while the generator trains.
- ``si_sdr``: scale-invariant SDR (Le Roux et al. 2019).
- ``scoring``: the metrics of one pair, and of many files (``score_files``).
- ``parallel``: the helper processes ``score_files`` runs on, and their thread limits.
- ``stats``: paired differences over files, their confidence interval and sign test.
- ``tables``: one table as text, Markdown, LaTeX or JSON.
- ``report``: the table that ``bsrnn score`` and ``bsrnn evaluate`` print.
- ``csvfile``: their per-file CSV and its settings file, written and read back.
- ``comparison``: ``bsrnn compare``, two CSVs file by file.
- ``dnsmos``: DNSMOS ratings without a clean reference (optional: ``bsrnn[dnsmos]``); not
  imported here.

``import bsrnn.metrics`` loads numpy, soundfile, pesq and tqdm only (never torch, so that
``bsrnn score`` may fork its helpers); scipy and pystoi load when first used.
"""

from __future__ import annotations

from bsrnn.metrics.composite import CompositeDistortions, composite_distortions, composite_ratings
from bsrnn.metrics.csvfile import (
    CSV_COLUMNS,
    NOISY_COLUMNS,
    ScoreFile,
    check_csv_path,
    read_scores,
    settings_path,
    write_csv,
)
from bsrnn.metrics.pesq_pool import PendingPesq, PesqBatch, PesqPool, wideband_pesq
from bsrnn.metrics.report import format_table, mean_scores, summarize
from bsrnn.metrics.scoring import (
    METRICS,
    SCORING_SETTINGS,
    FileScore,
    inspect_audio,
    read_mono_16k,
    score_files,
    score_pair,
)
from bsrnn.metrics.si_sdr import si_sdr
from bsrnn.metrics.stats import PairedDifference, paired_difference, sign_test
from bsrnn.metrics.tables import FORMATS

__all__ = [
    "CSV_COLUMNS",
    "FORMATS",
    "METRICS",
    "NOISY_COLUMNS",
    "SCORING_SETTINGS",
    "CompositeDistortions",
    "FileScore",
    "PairedDifference",
    "PendingPesq",
    "PesqBatch",
    "PesqPool",
    "ScoreFile",
    "check_csv_path",
    "composite_distortions",
    "composite_ratings",
    "format_table",
    "inspect_audio",
    "mean_scores",
    "paired_difference",
    "read_mono_16k",
    "read_scores",
    "score_files",
    "score_pair",
    "settings_path",
    "si_sdr",
    "sign_test",
    "summarize",
    "wideband_pesq",
    "write_csv",
]
