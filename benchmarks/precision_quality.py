"""What ``--precision`` costs in quality: PESQ and STOI of a trained model's test set at each precision.

Why: bf16 and int8 compute a different function from the float32 network they come from
(``bsrnn.enhancement.prepare_for_inference``); whether that matters is a question about speech
quality, not about waveform differences. This script enhances every test utterance of a data
set at each precision with the package's own code (``load_generator``, ``enhance_waveform``,
the same path as ``bsrnn evaluate --precision``), scores them with the package's metrics
(``bsrnn.metrics.score_files``: the same PESQ and STOI as ``bsrnn evaluate``), and prints, per
precision: the PESQ and STOI means, their difference against fp32 measured on the same files in
the same run, the per-file differences (mean, worst, how many files got worse), the SNR of the
enhanced waveform against fp32's, and the RTF of the enhancement (informative only: the
scoring runs in between, and ``benchmarks/enhance.py`` is the speed benchmark).

A precision this machine cannot run (bf16 on a CPU without AVX512-BF16/AMX, int8 on a GPU) is
reported as not run, with the reason; fp32 always runs, as the baseline.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/precision_quality.py runs/corpus \\
        --data-dir ../shared/corpus --threads 1 --workers 2 --csv runs/corpus/precision_quality.csv
    .venv/bin/python benchmarks/precision_quality.py runs/demo --demo       # a quick try
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench_common import add_test_set_arguments, describe_machine, load_average, test_pairs_of
from bsrnn.audio import SAMPLE_RATE
from bsrnn.data import load_pair
from bsrnn.enhancement import PRECISIONS, check_precision, enhance_waveform, load_generator
from bsrnn.errors import UserError
from bsrnn.metrics import METRICS, FileScore, mean_scores, score_files

REPORTED_METRICS = ("pesq", "stoi")


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Power of ``reference`` over the power of the difference, in dB (inf when identical)."""
    difference = float(np.sum((reference.astype(np.float64) - estimate) ** 2))
    return math.inf if difference == 0 else float(10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / difference))


def runnable_precisions(wanted: list[str], device: str) -> list[str]:
    """The wanted precisions this device can run, fp32 first (the baseline); the others are named."""
    runnable = []
    for precision in ["fp32", *[p for p in wanted if p != "fp32"]]:
        try:
            check_precision(precision, device)
            runnable.append(precision)
        except UserError as error:
            print(f"{precision}: not run here: {error}")
    return runnable


def enhance_test_set(location: Path, which: str, precision: str, device: str,
                     pairs: list[tuple[str, np.ndarray, np.ndarray]]) -> tuple[list[np.ndarray], float, str]:
    """The enhanced test set at ``precision``, the RTF of enhancing it, and which checkpoint was used."""
    generator = load_generator(location, which, device, precision)
    outputs, seconds, audio_seconds = [], 0.0, 0.0
    for _, _, noisy in pairs:
        started = time.perf_counter()
        outputs.append(enhance_waveform(generator.enhancer, noisy, device))
        seconds += time.perf_counter() - started
        audio_seconds += len(noisy) / SAMPLE_RATE
    return outputs, seconds / audio_seconds, generator.describe()


def per_file_differences(scores: list[FileScore], baseline: list[FileScore], metric: str) -> np.ndarray:
    """``metric`` of each file minus fp32's on the same file, where both are finite."""
    values = np.array([getattr(a, metric) - getattr(b, metric) for a, b in zip(scores, baseline)], dtype=np.float64)
    return values[np.isfinite(values)]


def print_report(scores: dict[str, list[FileScore]], rtfs: dict[str, float], snrs: dict[str, list[float]]) -> None:
    baseline = scores["fp32"]
    means = {precision: mean_scores(rows) for precision, rows in scores.items()}
    header = f"{'precision':<10}{'RTF':>7}{'SNR vs fp32 dB':>16}"
    for metric in REPORTED_METRICS:
        header += f"{metric + ' mean':>11}{'- fp32':>9}{'per-file mean':>15}{'worst':>9}{'worse/files':>13}"
    print(header)
    for precision, rows in scores.items():
        finite_snrs = [value for value in snrs[precision] if math.isfinite(value)]
        snr_text = f"{np.mean(finite_snrs):.1f} (mean)" if finite_snrs else "identical"
        line = f"{precision:<10}{rtfs[precision]:>7.3f}{snr_text:>16}"
        for metric in REPORTED_METRICS:
            differences = per_file_differences(rows, baseline, metric)
            worse = int(np.sum(differences < 0))
            line += (f"{means[precision][metric]:>11.4f}{means[precision][metric] - means['fp32'][metric]:>+9.4f}"
                     f"{differences.mean() if differences.size else math.nan:>+15.4f}"
                     f"{differences.min() if differences.size else math.nan:>+9.4f}"
                     f"{f'{worse}/{differences.size}':>13}")
        print(line)


def write_rows(path: Path, scores: dict[str, list[FileScore]], snrs: dict[str, list[float]]) -> None:
    """One row per file and precision: the six metrics and the waveform SNR against fp32."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["precision", "file", *METRICS, "snr_vs_fp32_db", "error"])
        for precision, rows in scores.items():
            for row, snr in zip(rows, snrs[precision]):
                writer.writerow([precision, row.file, *(f"{value:.6f}" for value in row.metrics().values()),
                                 f"{snr:.3f}", row.error])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_test_set_arguments(parser)
    parser.add_argument("--precisions", default=",".join(PRECISIONS),
                        help=f"comma-separated (default {','.join(PRECISIONS)}; fp32 always runs)")
    parser.add_argument("--csv", type=Path, help="write one row per file and precision here")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    print(describe_machine())
    try:
        test_pairs = test_pairs_of(args)
        pairs = [(pair.name, *load_pair(pair)) for pair in test_pairs]
        precisions = runnable_precisions([p for p in args.precisions.split(",") if p], args.device)
        scores: dict[str, list[FileScore]] = {}
        rtfs: dict[str, float] = {}
        outputs: dict[str, list[np.ndarray]] = {}
        for precision in precisions:
            outputs[precision], rtfs[precision], described = enhance_test_set(
                args.checkpoint, args.load, precision, args.device, pairs)
            print(described)
            scores[precision] = score_files([(name, clean, enhanced) for (name, clean, _), enhanced
                                             in zip(pairs, outputs[precision])], workers=max(1, args.workers),
                                            progress=False)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    snrs = {precision: [snr_db(reference, estimate) for reference, estimate in zip(outputs["fp32"], enhanced)]
            for precision, enhanced in outputs.items()}
    print(f"\n{len(pairs)} test pairs, {sum(len(n) for _, _, n in pairs) / SAMPLE_RATE:.0f} s of audio, "
          f"{args.threads} thread(s); differences are against fp32 on the same files in this run")
    print_report(scores, rtfs, snrs)
    if args.csv is not None:
        write_rows(args.csv, scores, snrs)
        print(f"Wrote {args.csv}")
    print(f"load average at the end: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
