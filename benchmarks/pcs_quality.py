"""What ``--pcs`` does to quality: a trained model's test-set scores with and without perceptual contrast stretching.

Why: perceptual contrast stretching (Chao et al., "Perceptual Contrast Stretching on Target
Feature for Speech Enhancement", Interspeech 2022; ``bsrnn.pcs.perceptual_contrast_stretch``)
is reported to raise PESQ when applied after other enhancement networks; whether it helps
this one, on this test set, is a measurement. This script enhances every test utterance
once through the network and writes both outputs with the package's own code
(``enhance_waveform`` with ``pcs`` off and on: the same path as ``bsrnn evaluate [--pcs]``;
the second call replays the network's recorded output spectra, so the network runs once per
file and the two outputs come from the same spectra), scores both with the package's metrics
(``bsrnn.metrics.score_files``: the same six metrics as ``bsrnn evaluate``), and prints:

- per variant, the means of all six metrics;
- for PESQ and STOI: the difference of the means, the per-file differences (mean with a 95 %
  normal-approximation interval, worst, and how many files got better / worse), measured on
  the same files in the same run;
- the SNR of the PCS output against the plain one, the RTF of the enhancement, and the time
  of the ``--pcs`` run with the network replayed, an upper bound of what PCS adds
  (informative only: ``benchmarks/enhance.py`` is the speed benchmark).

PESQ and STOI do not depend on the output's gain; SSNR (and so CBAK) does, and ``--pcs``
scales its output to the plain output's peak (``enhance_waveform``).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pcs_quality.py runs/corpus \\
        --data-dir ../shared/corpus --threads 1 --workers 2 --csv runs/corpus/pcs_quality.csv
    .venv/bin/python benchmarks/pcs_quality.py runs/demo --demo       # a quick try
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
from bsrnn.enhancement import DEFAULT_PRECISION, PRECISIONS, SpectrumEnhancer, enhance_waveform, load_generator
from bsrnn.errors import UserError
from bsrnn.metrics import METRICS, FileScore, mean_scores, score_files
from precision_quality import per_file_differences, snr_db

REPORTED_METRICS = ("pesq", "stoi")
VARIANTS = ("off", "pcs")


class Recorder:
    """Runs ``enhancer`` and keeps every (input, output) spectrum pair, in call order."""

    def __init__(self, enhancer: SpectrumEnhancer) -> None:
        self.enhancer = enhancer
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, spectrum: torch.Tensor) -> torch.Tensor:
        output = self.enhancer(spectrum)
        self.calls.append((spectrum, output))
        return output


class Replay:
    """Returns the recorded outputs in order, after checking that each input is the recorded one
    (the STFT of the same audio, chunked the same way), so nothing but the network is skipped."""

    def __init__(self, calls: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.calls = list(calls)

    def __call__(self, spectrum: torch.Tensor) -> torch.Tensor:
        if not self.calls:
            raise RuntimeError("replay: more network calls with --pcs than without; the two runs differ")
        recorded_input, recorded_output = self.calls.pop(0)
        if not torch.equal(spectrum, recorded_input):
            raise RuntimeError("replay: a network input differs from the recorded one; the two runs differ")
        return recorded_output


def enhance_both(enhancer: SpectrumEnhancer, noisy: np.ndarray,
                 device: str) -> tuple[np.ndarray, np.ndarray, float, float]:
    """The plain and the PCS output of one utterance, the seconds the plain one took, and the
    seconds the PCS one took with the network replayed (STFT, stretching, both inverse STFTs,
    joining, levelling)."""
    recorder = Recorder(enhancer)
    started = time.perf_counter()
    plain = enhance_waveform(recorder, noisy, device)
    plain_seconds = time.perf_counter() - started
    replay = Replay(recorder.calls)
    started = time.perf_counter()
    stretched = enhance_waveform(replay, noisy, device, pcs=True)
    pcs_seconds = time.perf_counter() - started
    if replay.calls:
        raise RuntimeError("replay: fewer network calls with --pcs than without; the two runs differ")
    return plain, stretched, plain_seconds, pcs_seconds


def interval_text(differences: np.ndarray) -> str:
    """Mean +- the 95 % normal-approximation half-width of the per-file differences."""
    if differences.size == 0:
        return "n/a"
    half_width = 1.96 * differences.std(ddof=1) / math.sqrt(differences.size) if differences.size > 1 else math.nan
    return f"{differences.mean():+.4f}+-{half_width:.4f}"


def print_report(scores: dict[str, list[FileScore]], snrs: list[float]) -> None:
    means = {variant: mean_scores(rows) for variant, rows in scores.items()}
    print(f"{'variant':<9}" + "".join(f"{metric:>9}" for metric in METRICS))
    for variant, values in means.items():
        print(f"{variant:<9}" + "".join(f"{values[metric]:>9.4f}" for metric in METRICS))
    finite_snrs = [value for value in snrs if math.isfinite(value)]
    print(f"\nPCS output against the plain one: {np.mean(finite_snrs):.1f} dB SNR (mean over files)"
          if finite_snrs else "\nPCS output identical to the plain one")
    print(f"{'metric':<8}{'pcs - off':>11}{'per-file mean +-95%':>22}{'worst':>9}{'better/worse/files':>20}")
    for metric in REPORTED_METRICS:
        differences = per_file_differences(scores["pcs"], scores["off"], metric)
        better, worse = int(np.sum(differences > 0)), int(np.sum(differences < 0))
        print(f"{metric:<8}{means['pcs'][metric] - means['off'][metric]:>+11.4f}{interval_text(differences):>22}"
              f"{differences.min() if differences.size else math.nan:>+9.4f}"
              f"{f'{better}/{worse}/{differences.size}':>20}")


def write_rows(path: Path, scores: dict[str, list[FileScore]], snrs: list[float]) -> None:
    """One row per file and variant: the six metrics, and the PCS output's SNR against the plain one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["variant", "file", *METRICS, "snr_vs_off_db", "error"])
        for variant, rows in scores.items():
            for row, snr in zip(rows, snrs if variant == "pcs" else [math.inf] * len(rows)):
                writer.writerow([variant, row.file, *(f"{value:.6f}" for value in row.metrics().values()),
                                 f"{snr:.3f}", row.error])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_test_set_arguments(parser)
    parser.add_argument("--precision", choices=PRECISIONS, default=DEFAULT_PRECISION,
                        help="arithmetic of the generator (as `bsrnn evaluate`; default fp32)")
    parser.add_argument("--csv", type=Path, help="write one row per file and variant here")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    print(describe_machine())
    try:
        test_pairs = test_pairs_of(args)
        generator = load_generator(args.checkpoint, args.load, args.device, args.precision)
        print(generator.describe())
        names, cleans, outputs = [], [], {variant: [] for variant in VARIANTS}
        plain_seconds = pcs_seconds = audio_seconds = 0.0
        snrs = []
        for pair in test_pairs:
            clean, noisy = load_pair(pair)
            plain, stretched, plain_time, pcs_time = enhance_both(generator.enhancer, noisy, args.device)
            names.append(pair.name)
            cleans.append(clean)
            outputs["off"].append(plain)
            outputs["pcs"].append(stretched)
            snrs.append(snr_db(plain, stretched))
            plain_seconds, pcs_seconds = plain_seconds + plain_time, pcs_seconds + pcs_time
            audio_seconds += len(noisy) / SAMPLE_RATE
        scores = {variant: score_files(list(zip(names, cleans, outputs[variant])), workers=max(1, args.workers),
                                       progress=False) for variant in VARIANTS}
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"\n{len(names)} test pairs, {audio_seconds:.0f} s of audio, {args.threads} thread(s), "
          f"precision {args.precision}; differences are PCS minus off on the same files in this run")
    print(f"enhancement RTF {plain_seconds / audio_seconds:.3f}; the --pcs run without the network (STFT, "
          f"stretching, two inverse STFTs, joining, levelling) {pcs_seconds / audio_seconds:.4f} s per audio "
          "second, an upper bound of what PCS adds\n")
    print_report(scores, snrs)
    if args.csv is not None:
        write_rows(args.csv, scores, snrs)
        print(f"Wrote {args.csv}")
    print(f"load average at the end: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
