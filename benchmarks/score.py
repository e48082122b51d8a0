"""Scoring benchmark: ``bsrnn.metrics.score_files`` on one process against several.

Why: ``bsrnn score`` and ``bsrnn evaluate`` spread files over processes; this measures the
speed-up on a small set (default 24 generated 3 s files, what a quick evaluation scores) and
what limits it: the time one file takes per metric, and how long a spawned helper needs before
it scores its first file. Files are speech-like (harmonic voices with formants and pauses, from
the demo corpus generator) with noise, written as 16-bit wavs to a temporary folder, so the
timings include reading them as ``bsrnn score`` does.

Each repetition scores the whole set once with every worker count, round-robin, and the medians
are compared. Results are checked to be identical whatever the worker count.

    .venv/bin/python benchmarks/score.py                 # 24 files x 3 s, 1 vs 2 workers, 3 repeats
    .venv/bin/python benchmarks/score.py --files 48 --workers 1,2,4
"""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import wait
from pathlib import Path

import numpy as np

from bench_common import describe_machine, load_average

TARGET_SPEEDUP = 1.8  # 2 workers vs 1 on 2 cores


def write_files(folder: Path, count: int, seconds: float, seed: int) -> list[tuple[str, str, str]]:
    """``count`` clean/"enhanced" wav pairs in ``folder``; the pairs ``score_files`` takes.

    The "enhanced" signal is the noisy mixture pulled halfway back towards the clean one, so
    the scores are in a realistic range (PESQ about 1.5-3).
    """
    import soundfile

    from bench_common import speech_pairs  # imports torch (via bsrnn.data): child process only

    (folder / "clean").mkdir()
    (folder / "enhanced").mkdir()
    pairs = []
    for index, (clean, noisy) in enumerate(speech_pairs(count, int(seconds * 16000), seed=seed)):
        name = f"utt_{index:03d}.wav"
        soundfile.write(folder / "clean" / name, clean, 16000, subtype="PCM_16")
        soundfile.write(folder / "enhanced" / name, 0.5 * (clean + noisy), 16000, subtype="PCM_16")
        pairs.append((name, str(folder / "clean" / name), str(folder / "enhanced" / name)))
    return pairs


def per_metric_seconds(pairs: list[tuple[str, str, str]], files: int = 4) -> dict[str, float]:
    """Mean in-process seconds per file for reading and for each metric family."""
    from bsrnn.metrics.composite import composite_distortions
    from bsrnn.metrics.pesq_pool import wideband_pesq
    from bsrnn.metrics.scoring import classic_stoi, read_mono_16k

    totals = {"read": 0.0, "pesq": 0.0, "composite (llr, wss, ssnr)": 0.0, "stoi": 0.0}
    for _, clean_path, enhanced_path in pairs[:files]:
        started = time.perf_counter()
        clean, enhanced = read_mono_16k(clean_path), read_mono_16k(enhanced_path)
        totals["read"] += time.perf_counter() - started
        for name, function in (("pesq", wideband_pesq), ("composite (llr, wss, ssnr)", lambda c, e: composite_distortions(c, e, 16000)),
                               ("stoi", classic_stoi)):
            started = time.perf_counter()
            function(clean, enhanced)
            totals[name] += time.perf_counter() - started
    return {name: total / files for name, total in totals.items()}


def helper_start_seconds() -> float:
    """From spawning one scoring helper to its warm-up (imports) being done (the spawn path)."""
    from bsrnn.workers import start_workers
    from bsrnn.metrics.scoring import import_scoring_libraries

    started = time.perf_counter()
    executor, warming = start_workers(1, import_scoring_libraries)
    try:
        wait(warming)
        return time.perf_counter() - started
    finally:
        executor.shutdown(wait=True)


@contextlib.contextmanager
def legacy_code_path(enabled: bool) -> Iterator[None]:
    """Within the block, score as before the scoring changes: helpers always spawned, and this
    process's OpenBLAS left at its default thread count. Lets one run attribute the change."""
    from bsrnn.metrics import parallel

    if not enabled:
        yield
        return
    saved = parallel.fork_is_safe, parallel.single_threaded_blas
    parallel.fork_is_safe = lambda: False
    parallel.single_threaded_blas = contextlib.nullcontext
    try:
        yield
    finally:
        parallel.fork_is_safe, parallel.single_threaded_blas = saved


def _spin(seconds: float) -> float:
    """Busy-loop for ``seconds`` of wall time; return the CPU time this process got."""
    started, cpu = time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds:
        pass
    return time.process_time() - cpu


def available_cores(processes: int = 2, seconds: float = 1.0) -> float:
    """How many cores ``processes`` busy processes actually get right now (CPU s / wall s).

    On a shared machine this, not the core count, bounds any speed-up from more workers.
    """
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool:
        return sum(pool.map(_spin, [seconds] * processes)) / seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=24, help="number of file pairs (default 24)")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each file (default 3 s)")
    parser.add_argument("--workers", default="1,2", help="worker counts to compare (default 1,2)")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions, round-robin (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-legacy", action="store_true",
                        help="skip the previous code path (spawned helpers, multi-threaded OpenBLAS)")
    parser.add_argument("--write-files", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.write_files is not None:
        write_files(args.write_files, args.files, args.seconds, args.seed)
        return 0
    counts = [int(value) for value in args.workers.split(",") if value.strip()]
    if not counts or min(counts) < 1 or args.repeats < 1:
        parser.error("--workers needs counts >= 1 and --repeats >= 1")

    from bsrnn.metrics import score_files
    from bsrnn.metrics.parallel import fork_is_safe

    print(describe_machine(with_torch=False))
    with tempfile.TemporaryDirectory(prefix="bsrnn-score-bench-") as scratch:
        # Generated in a child: the generator needs torch, and this process must stay like
        # `bsrnn score` (no torch), which decides how helpers start.
        subprocess.run([sys.executable, str(Path(__file__).resolve()), "--write-files", scratch,
                        "--files", str(args.files), "--seconds", str(args.seconds),
                        "--seed", str(args.seed)], check=True)
        names = sorted(path.name for path in (Path(scratch) / "clean").glob("*.wav"))
        pairs = [(name, str(Path(scratch) / "clean" / name), str(Path(scratch) / "enhanced" / name))
                 for name in names]
        print(f"{len(pairs)} file pairs x {args.seconds:g} s in {scratch}; helpers will be "
              f"{'forked (no torch, no threads here)' if fork_is_safe() else 'spawned'}")
        score_files(pairs[:1], workers=1, progress=False)  # import scipy/pystoi here first
        variants = [(f"{count} worker{'s' if count > 1 else ''}", count, False) for count in counts]
        if not args.no_legacy:
            variants += [(f"{count} worker{'s' if count > 1 else ''}, previous code path", count, True)
                         for count in counts]
        times: dict[str, list[float]] = {label: [] for label, _, _ in variants}
        results = {}
        cores_before = available_cores()
        for repeat in range(args.repeats):
            shift = repeat % len(variants)
            for label, count, legacy in variants[shift:] + variants[:shift]:
                with legacy_code_path(legacy):
                    started = time.perf_counter()
                    results[label] = score_files(pairs, workers=count, progress=False)
                    times[label].append(time.perf_counter() - started)
        cores_after = available_cores()
        reference = next(iter(results.values()))
        same = all(
            [(r.file, r.error, *(np.float64(v).tobytes() for v in r.metrics().values())) for r in result]
            == [(r.file, r.error, *(np.float64(v).tobytes() for v in r.metrics().values())) for r in reference]
            for result in results.values()
        )
        metric_times = per_metric_seconds(pairs)
        start_up = statistics.median(helper_start_seconds() for _ in range(3))

    single = "1 worker"
    sequential = statistics.median(times[single]) if single in times else math.nan
    print(f"\nscore_files wall time (median of {args.repeats}, round-robin; min..max):")
    for label, _, legacy in variants:
        median = statistics.median(times[label])
        base = statistics.median(times["1 worker, previous code path"]) if legacy else sequential
        print(f"  {label:<36}{median:6.2f} s  ({min(times[label]):.2f}..{max(times[label]):.2f})"
              f"   speed-up vs 1 worker{' (previous)' if legacy else ''}: {base / median:.2f}x")
    print(f"  results identical for every variant: {'yes' if same else 'NO'}")
    print(f"  CPU available to 2 busy processes (busy-loop probe, cores): {cores_before:.2f} before, "
          f"{cores_after:.2f} after")
    per_file = sum(metric_times.values())
    print(f"\none file in-process: {1000 * per_file:.0f} ms = " + ", ".join(
        f"{name} {1000 * seconds:.0f}" for name, seconds in metric_times.items()) + " ms")
    print(f"spawned helper start-up (interpreter + imports until it can score): {start_up:.2f} s "
          f"(median of 3); a forked helper starts in milliseconds")
    for count in counts:
        if count > 1:
            # The parent scores while spawned helpers start; then all `count` share the rest.
            work = sequential
            ideal = work / (start_up + max(0.0, work - start_up) / count) if work > start_up else 1.0
            print(f"  ideal speed-up for {count} workers with spawned helpers: {ideal:.2f}x; with forked "
                  f"ones: {count:.2f}x (given {count} idle cores)")
    print(f"load average at the end: {load_average()}")
    if "2 workers" in times and single in times:
        speedup = sequential / statistics.median(times["2 workers"])
        print(f"target speed-up >= {TARGET_SPEEDUP}x with 2 workers: {speedup:.2f}x "
              f"({'met' if speedup >= TARGET_SPEEDUP else 'NOT met'})")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
