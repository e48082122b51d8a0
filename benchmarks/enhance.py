"""Enhancement benchmark: speed, memory and chunking error of ``bsrnn.enhancement``.

Why: ``bsrnn enhance`` must handle hour-long recordings on a CPU. This script measures, for
the default model (N 64, L 5):

1. real-time factor (processing seconds per audio second) of ``enhance_waveform`` on a long
   signal (default 5 min), with one 30 s chunk per forward pass (the CPU default) and with
   four chunks batched into one forward pass, timed round-robin in the same run; plus the
   arithmetic floor: the model's FLOPs per audio second against this CPU's measured
   matrix-multiply rate;
2. peak resident memory for a 60-minute file, in a fresh subprocess: the whole pipeline runs
   (every chunk's STFT, inverse STFT and cross-fade, the output array), with the real network
   on the first ``--rss-batches`` batches and the identity afterwards (every batch has the
   same shape, so the peak is reached in the first one; the rest would only take time);
3. how far chunked output is from whole-input output, away from the seams, as a function of
   chunk length, for random weights and (if present) the reference fixture's weights. The
   network's GroupNorms normalise over the whole input, time included, so the two can never
   agree exactly; this is what chooses ``DEFAULT_CHUNK_SECONDS``;
4. each ``--precision`` (fp32, bf16, int8; ``bsrnn.enhancement.prepare_for_inference``): RTF
   of ``enhance_waveform`` and peak resident memory, each run in a fresh process (the peak is
   a per-process high-water mark: ``VmHWM`` of /proc/self/status, see ``peak_rss_bytes``),
   the precisions interleaved round-robin, with the ratio to fp32 from the same run and the
   SNR of each output against fp32's (default model, fixture weights if present, else random).
   A precision this machine cannot run (bf16 on a CPU without AVX512-BF16/AMX) is reported
   as refused, with the reason. Load averages are printed at its start and end.

    .venv/bin/python benchmarks/enhance.py                         # all four, ~15 min
    .venv/bin/python benchmarks/enhance.py --seconds 60 --skip-accuracy   # quick
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/enhance.py --threads 1 --skip-rtf --skip-rss \\
        --skip-accuracy --precision-seconds 30        # the precision table only
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench_common import describe_machine, fixtures_dir, load_average, speech_pairs
from bsrnn.audio import SAMPLE_RATE
from bsrnn.enhancement import (
    DEFAULT_BATCH_SECONDS,
    DEFAULT_CHUNK_SECONDS,
    DEFAULT_OVERLAP_SECONDS,
    PRECISIONS,
    check_precision,
    chunk_starts,
    enhance_segment,
    enhance_waveform,
    prepare_for_inference,
)
from bsrnn.errors import UserError
from bsrnn.models import BSRNN, generator_state_dict_from_reference

TARGET_RTF = 0.05
TARGET_RSS_BYTES = 1 << 30  # 1 GiB for a 60-minute file
GIB = float(1 << 30)
MIB = float(1 << 20)


def model_flops_per_second(num_channel: int = 64, num_layer: int = 5) -> float:
    """Multiply-adds x 2 of one forward pass per second of audio (125 frames), from the shapes.

    Per frame and band: time LSTM 2 (N + 2N) 8N, band LSTM twice that (two directions), the
    Linears after them 2 (2N) N and 2 (4N) N; the mask decoder 2 N 4N per band and 2 4N 12 per
    bin; the band split 2 (2 bins) N per bin. The LSTMs are ~90 % of it.
    """
    bands, bins, n = 31, 257, num_channel
    lstm = 2 * (n + 2 * n) * 8 * n
    per_layer = bands * (lstm + 2 * lstm + 2 * 2 * n * n + 2 * 4 * n * n)
    decoder = bands * 2 * n * 4 * n + bins * 2 * 4 * n * 12
    split = bins * 2 * 2 * n
    return (num_layer * per_layer + decoder + split) * 125.0


def matmul_gflops(size: int = 1024, repeats: int = 10) -> float:
    """Best-of rate of a square float32 matrix product with the current torch threads."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def long_signal(seconds: float, seed: int = 0) -> np.ndarray:
    """Speech-like noisy audio of ``seconds``: 30 s of generated utterances, tiled, plus noise.

    Tiling keeps generation cheap for an hour of audio; fresh noise keeps chunks different.
    Built block by block in place, so making it needs no temporaries the size of the result
    (they would raise the peak RSS that the memory measurement reads).
    """
    pairs = speech_pairs(10, 3 * SAMPLE_RATE, seed=seed)
    block = np.concatenate([noisy for _, noisy in pairs])
    rng = np.random.default_rng(seed)
    audio = np.empty(int(seconds * SAMPLE_RATE), dtype=np.float32)
    for start in range(0, len(audio), len(block)):
        part = audio[start : start + len(block)]
        part[:] = block[: len(part)]
        part += 0.003 * rng.standard_normal(len(part), dtype=np.float32)
    return audio


# ------------------------------------------------------------------------------ 1. speed
def measure_rtf(model: BSRNN, seconds: float, repeats: int) -> dict[str, float]:
    """Median real-time factor of the default (batched) and the one-chunk-per-forward paths."""
    audio = long_signal(seconds)
    configs = {
        "1 chunk per forward (CPU default)": {"batch_seconds": DEFAULT_CHUNK_SECONDS},
        "4 chunks per forward": {"batch_seconds": 4 * DEFAULT_CHUNK_SECONDS},
    }
    enhance_waveform(model, audio[: int(1.5 * DEFAULT_CHUNK_SECONDS * SAMPLE_RATE)])  # warm-up
    samples: dict[str, list[float]] = {name: [] for name in configs}
    for repeat in range(repeats):
        names = list(configs)[repeat % 2 :] + list(configs)[: repeat % 2]
        for name in names:
            started = time.perf_counter()
            enhance_waveform(model, audio, **configs[name])
            samples[name].append((time.perf_counter() - started) / seconds)
    return {name: statistics.median(values) for name, values in samples.items()}


# ----------------------------------------------------------------------------- 2. memory
class FirstBatchesOnly(nn.Module):
    """The real network for the first ``batches`` forward calls, then the identity."""

    def __init__(self, model: BSRNN, batches: int) -> None:
        super().__init__()
        self.model, self.remaining = model, batches

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        if self.remaining > 0:
            self.remaining -= 1
            return self.model(spec)
        return spec


def peak_rss_bytes() -> int:
    """This process's peak resident set size: ``VmHWM`` from /proc/self/status.

    Not ``getrusage(RUSAGE_SELF).ru_maxrss``: Linux carries that over from the parent across
    fork + exec, so a child started by a big process reports the parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss_child(minutes: float, batches: int) -> None:
    """Subprocess body: print JSON with peak RSS before and after enhancing ``minutes`` of audio."""
    torch.set_num_threads(1)
    model = BSRNN().eval()
    after_setup = peak_rss_bytes()
    audio = long_signal(minutes * 60.0)
    after_input = peak_rss_bytes()
    started = time.perf_counter()
    output = enhance_waveform(FirstBatchesOnly(model, batches), audio)  # type: ignore[arg-type]
    elapsed = time.perf_counter() - started
    peak = peak_rss_bytes()
    print(json.dumps({"setup": after_setup, "input": after_input, "peak": peak,
                      "array_bytes": audio.nbytes + output.nbytes, "seconds": elapsed,
                      "finite": bool(np.isfinite(output).all())}))


def measure_rss(minutes: float, batches: int) -> dict[str, float]:
    """Run ``rss_child`` in a fresh interpreter (ru_maxrss is a per-process high-water mark)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--rss-child", str(minutes),
               "--rss-batches", str(batches)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- 3. accuracy
def far_from_seams(length: int, chunk: int, overlap: int, margin: int) -> np.ndarray:
    """True where a sample is more than ``margin`` from every chunk edge inside the signal."""
    mask = np.ones(length, dtype=bool)
    for start in chunk_starts(length, chunk, chunk - overlap):
        for edge in (start, start + chunk):
            if 0 < edge < length:
                mask[max(0, edge - margin) : edge + margin] = False
    return mask


def measure_accuracy(models: dict[str, BSRNN], seconds: float, chunk_lengths: list[float]) -> None:
    """Print chunked-vs-whole differences for each model and chunk length.

    The signal must not repeat (unlike ``long_signal``): a chunk as long as the repetition
    period would see the whole signal's statistics and look far better than real audio.
    """
    pairs = speech_pairs(int(math.ceil(seconds / 4)), 4 * SAMPLE_RATE, seed=1)
    audio = np.concatenate([noisy for _, noisy in pairs])[: int(seconds * SAMPLE_RATE)]
    overlap = int(DEFAULT_OVERLAP_SECONDS * SAMPLE_RATE)
    print(f"\n3. chunked vs whole-input output, {seconds:g} s of speech-like audio, overlap "
          f"{DEFAULT_OVERLAP_SECONDS:g} s; 'away from seams' = more than 1 s from every chunk edge")
    print(f"  {'weights':<9}{'chunk s':>8}{'max |diff| far':>16}{'/ peak':>10}{'SNR far dB':>12}"
          f"{'max |diff| all':>16}{'SNR all dB':>12}")
    for name, model in models.items():
        whole = enhance_segment(model, audio)
        peak = float(np.abs(whole).max())
        for chunk_seconds in chunk_lengths:
            if chunk_seconds >= seconds:
                continue
            chunked = enhance_waveform(model, audio, chunk_seconds=chunk_seconds)
            diff = np.abs(chunked - whole)
            far = far_from_seams(len(audio), int(chunk_seconds * SAMPLE_RATE), overlap, SAMPLE_RATE)

            def snr(mask: np.ndarray) -> float:
                return float(10 * np.log10(np.sum(whole[mask] ** 2) / max(np.sum(diff[mask] ** 2), 1e-30)))

            everywhere = np.ones_like(far)
            print(f"  {name:<9}{chunk_seconds:>8g}{diff[far].max():>16.3g}{diff[far].max() / peak:>10.2e}"
                  f"{snr(far):>12.1f}{diff.max():>16.3g}{snr(everywhere):>12.1f}", flush=True)


def fixture_model() -> BSRNN | None:
    """The default-size generator with the reference fixture's weights, if the fixtures exist."""
    folder = fixtures_dir()
    path = folder / "reference_default.pt" if folder else None
    if path is None or not path.is_file():
        return None
    state = torch.load(path, weights_only=True)["generator_64_5"]["state_dict"]
    model = BSRNN()
    model.load_state_dict(generator_state_dict_from_reference(state))
    return model.eval()


# ------------------------------------------------------------------------- 4. precision
def precision_child(precision: str, seconds: float, threads: int, output: Path) -> None:
    """Subprocess body: enhance ``seconds`` of audio at ``precision`` once (after a warm-up), save
    the output to ``output`` (.npy) and print JSON with the RTF and peak RSS at each stage."""
    torch.set_num_threads(threads)
    after_imports = peak_rss_bytes()
    loaded = fixture_model()
    model = loaded if loaded is not None else BSRNN().eval()
    enhancer = prepare_for_inference(model, precision, "cpu")
    after_model = peak_rss_bytes()
    audio = long_signal(seconds)
    enhance_waveform(enhancer, audio[: min(len(audio), 2 * SAMPLE_RATE)])  # warm-up (oneDNN/fbgemm set-up)
    started = time.perf_counter()
    result = enhance_waveform(enhancer, audio)
    elapsed = time.perf_counter() - started
    np.save(output, result)
    print(json.dumps({"imports": after_imports, "model": after_model, "peak": peak_rss_bytes(),
                      "rtf": elapsed / seconds, "weights": "fixture" if loaded is not None else "random"}))


def measure_precisions(precisions: list[str], seconds: float, threads: int, repeats: int) -> dict[str, dict]:
    """Per precision: median RTF and peak RSS over ``repeats`` fresh processes, run round-robin
    (repeat r starts at the r-th precision), and the output's SNR against fp32's."""
    runs: dict[str, list[dict]] = {precision: [] for precision in precisions}
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(repeats):
            shift = repeat % len(precisions)
            for precision in precisions[shift:] + precisions[:shift]:
                output = Path(folder) / f"{precision}.npy"
                command = [sys.executable, str(Path(__file__).resolve()), "--precision-child", precision,
                           "--precision-seconds", str(seconds), "--threads", str(threads),
                           "--precision-output", str(output)]
                result = subprocess.run(command, capture_output=True, text=True, check=True)
                runs[precision].append(json.loads(result.stdout.strip().splitlines()[-1]))
        outputs = {precision: np.load(Path(folder) / f"{precision}.npy") for precision in precisions}
    summary = {}
    reference = outputs.get("fp32")
    for precision, measured in runs.items():
        summary[precision] = {key: statistics.median(run[key] for run in measured)
                              for key in ("imports", "model", "peak", "rtf")}
        summary[precision]["weights"] = measured[0]["weights"]
        if reference is not None:
            difference = np.sum((outputs[precision] - reference) ** 2)
            summary[precision]["snr_db"] = (float("inf") if difference == 0 else
                                            float(10 * np.log10(np.sum(reference**2) / difference)))
    return summary


def report_precisions(wanted: list[str], seconds: float, threads: int, repeats: int) -> None:
    """Print section 4: one row per precision, ratios against fp32 measured in the same run."""
    print(f"\n4. precision: RTF on {seconds:g} s (one pass after a warm-up, median of {repeats} fresh "
          f"process(es) each, precisions round-robin, {threads} thread(s)), peak RSS = VmHWM of each process")
    print(f"  load average at the start: {load_average()}")
    runnable = []
    for precision in wanted:
        try:
            check_precision(precision, "cpu")
            runnable.append(precision)
        except UserError as error:
            print(f"  {precision:<6} not run here: {error}")
    if "fp32" not in runnable:
        runnable.insert(0, "fp32")  # the baseline every ratio is taken against
    summary = measure_precisions(runnable, seconds, threads, repeats)
    base = summary["fp32"]
    print(f"  weights: {base['weights']}; peak above imports = peak RSS - RSS after importing torch and bsrnn")
    print(f"  {'precision':<10}{'RTF':>8}{'x fp32':>8}{'peak MiB':>10}{'x fp32':>8}"
          f"{'above imports MiB':>19}{'x fp32':>8}{'SNR vs fp32 dB':>16}")
    for precision, row in summary.items():
        above, base_above = row["peak"] - row["imports"], base["peak"] - base["imports"]
        print(f"  {precision:<10}{row['rtf']:>8.3f}{row['rtf'] / base['rtf']:>8.2f}{row['peak'] / MIB:>10.0f}"
              f"{row['peak'] / base['peak']:>8.2f}{above / MIB:>19.0f}{above / base_above:>8.2f}"
              f"{row['snr_db']:>16.1f}")
    print(f"  load average at the end: {load_average()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--seconds", type=float, default=300.0, help="audio length for the RTF (default 300)")
    parser.add_argument("--repeats", type=int, default=1, help="RTF repetitions per variant (default 1)")
    parser.add_argument("--rss-minutes", type=float, default=60.0, help="file length for peak RSS (default 60)")
    parser.add_argument("--rss-batches", type=int, default=2,
                        help="batches that run the real network in the RSS run (default 2)")
    parser.add_argument("--accuracy-seconds", type=float, default=64.0,
                        help="signal length for the chunking-error study (default 64)")
    parser.add_argument("--chunks", default="4,8,16,30", help="chunk lengths (s) for the error study")
    parser.add_argument("--skip-rtf", action="store_true")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--precisions", default=",".join(PRECISIONS),
                        help=f"precisions for section 4 (default {','.join(PRECISIONS)}; fp32 always runs)")
    parser.add_argument("--precision-seconds", type=float, default=60.0,
                        help="audio length for section 4's RTF (default 60)")
    parser.add_argument("--precision-repeats", type=int, default=1,
                        help="fresh processes per precision in section 4 (default 1)")
    parser.add_argument("--skip-precision", action="store_true")
    parser.add_argument("--rss-child", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--precision-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--precision-output", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child is not None:
        rss_child(args.rss_child, args.rss_batches)
        return 0
    if args.precision_child is not None:
        precision_child(args.precision_child, args.precision_seconds, args.threads, args.precision_output)
        return 0

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = BSRNN().eval()
    print(describe_machine())
    print(f"enhance_waveform defaults: chunk {DEFAULT_CHUNK_SECONDS:g} s, overlap "
          f"{DEFAULT_OVERLAP_SECONDS:g} s, audio per forward pass {DEFAULT_BATCH_SECONDS}")
    status = 0
    if not args.skip_rtf:
        flops = model_flops_per_second()
        rate = matmul_gflops()
        print(f"\n1. real-time factor on {args.seconds:g} s (median of {args.repeats}):")
        for name, rtf in measure_rtf(model, args.seconds, args.repeats).items():
            print(f"  {name:<34} RTF {rtf:.3f}  ({rtf * 3600 / 60:.1f} min per hour of audio)")
        print(f"  model cost {flops / 1e9:.1f} GFLOP per audio second; 1024^2 matmul here: "
              f"{rate:.0f} GFLOP/s -> RTF floor {flops / 1e9 / rate:.3f} if every FLOP ran at that rate")
        print(f"  target RTF <= {TARGET_RTF}: needs {flops / 1e9 / TARGET_RTF:.0f} GFLOP/s sustained")
    if not args.skip_rss:
        rss = measure_rss(args.rss_minutes, args.rss_batches)
        print(f"\n2. peak RSS, {args.rss_minutes:g}-minute file (fresh process, 1 thread; real network on "
              f"the first {args.rss_batches} batches):")
        print(f"  after imports + model {rss['setup'] / MIB:.0f} MiB; with the input array "
              f"{rss['input'] / MIB:.0f} MiB; peak {rss['peak'] / MIB:.0f} MiB "
              f"(input + output arrays {rss['array_bytes'] / MIB:.0f} MiB); output finite: {rss['finite']}")
        met = rss["peak"] <= TARGET_RSS_BYTES
        print(f"  target peak <= 1 GiB: {rss['peak'] / GIB:.2f} GiB ({'met' if met else 'NOT met'})")
    if not args.skip_accuracy:
        models = {"random": model}
        loaded = fixture_model()
        if loaded is not None:
            models["fixture"] = loaded
        else:
            print("\n(fixture weights not found: accuracy study with random weights only)")
        measure_accuracy(models, args.accuracy_seconds, [float(v) for v in args.chunks.split(",")])
    if not args.skip_precision:
        report_precisions([p for p in args.precisions.split(",") if p], args.precision_seconds, args.threads,
                          args.precision_repeats)
    print(f"\nload average at the end: {load_average()}")
    return status


if __name__ == "__main__":
    sys.exit(main())
