"""Helpers shared by the benchmark scripts: machine description, interleaved timing, test data.

Why interleaved: the CPUs these benchmarks run on are often shared, so the load changes while a
script runs. Every script times the things it compares round-robin (one repetition of each,
then the next) and reports medians, so a burst of foreign load hits all of them alike instead
of whichever happened to run at that moment; the load average at start and end is printed so a
reader can judge the noise.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_DIR = Path(__file__).resolve().parent


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or the platform's answer elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load_average() -> str:
    """The 1/5/15-minute load averages as ``uptime`` prints them, and CPU pressure if known.

    CPU pressure (``/proc/pressure/cpu``, "some", last 10 s) is the share of time in which some
    runnable task waited for a CPU: on a shared machine, how contended the cores were.
    """
    try:
        text = " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        text = "n/a"
    try:
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        text += f", CPU pressure {some.split('avg10=')[1].split()[0]} %"
    except (OSError, IndexError):
        pass
    return text


def describe_machine(with_torch: bool = True) -> str:
    """One line: CPU, core count, torch version and threads, load average now.

    ``with_torch=False`` leaves torch unimported (the scoring benchmark's helper processes
    re-import the main script, and torch would add seconds to their start-up).
    """
    line = f"machine: {cpu_model()}, {os.cpu_count()} cores"
    if with_torch:
        import torch

        line += f", torch {torch.__version__}, {torch.get_num_threads()} intra-op threads"
    return f"{line}, load average {load_average()}"


def fixtures_dir() -> Path | None:
    """The shared reference fixtures (``$BSRNN_FIXTURES`` or ``../shared/fixtures``), if present.

    Same rule as the test suite's ``fixtures_dir`` fixture; None where a clone has none.
    """
    override = os.environ.get("BSRNN_FIXTURES")
    path = Path(override) if override else REPO_ROOT.parent / "shared" / "fixtures"
    return path if path.is_dir() else None


def load_baseline_module() -> ModuleType:
    """``benchmarks/reference_bsrnn.py`` (the per-band loop baseline), imported by path."""
    path = BENCHMARKS_DIR / "reference_bsrnn.py"
    spec = importlib.util.spec_from_file_location("reference_bsrnn", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import the per-band baseline from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Timings:
    """Named lists of durations (seconds); medians and ratios for reporting."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = defaultdict(list)

    def add(self, name: str, seconds: float) -> None:
        self.samples[name].append(seconds)

    @contextmanager
    def measure(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.add(name, time.perf_counter() - started)

    def median(self, name: str) -> float:
        return statistics.median(self.samples[name])

    def spread(self, name: str) -> str:
        """``min..max`` in ms, to show how noisy a median is."""
        values = self.samples[name]
        return f"{1000 * min(values):.0f}..{1000 * max(values):.0f}"

    def minimum(self, name: str) -> float:
        """The least disturbed run: on a shared machine, closest to the intrinsic cost."""
        return min(self.samples[name])

    def count(self, name: str) -> int:
        return len(self.samples[name])


def round_robin(repeats: int, tasks: dict[str, Callable[[], None]]) -> None:
    """Run every task once per repetition, in a rotating order (no task always goes first)."""
    names = list(tasks)
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            tasks[name]()


def speech_pairs(count: int, samples: int, seed: int = 0, snr_db: float = 5.0
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` (clean, noisy) float32 pairs of speech-like audio at 16 kHz, deterministic.

    Uses the demo corpus's synthetic voices (harmonic source, moving formants, syllables and
    pauses) so that PESQ and STOI find utterances, and pink/white/babble noise at ``snr_db``.
    """
    from bsrnn.data.synth import make_noise, random_speaker, speech_like

    rng = np.random.default_rng(seed)
    kinds = ("pink", "white", "babble")
    pairs = []
    for index in range(count):
        clean = speech_like(rng, samples, random_speaker(rng)) * 0.05
        noise = make_noise(kinds[index % len(kinds)], rng, samples)
        noise *= np.sqrt(np.mean(clean**2) / 10 ** (snr_db / 10) / np.mean(noise**2))
        pairs.append((clean.astype(np.float32), (clean + noise).astype(np.float32)))
    return pairs


def add_test_set_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the benchmarks that score a trained model on a test split, as `bsrnn evaluate`
    takes them: checkpoint, --data-dir | --demo, --load, --device, --threads, --workers, --limit."""
    parser.add_argument("checkpoint", type=Path, metavar="CHECKPOINT_OR_RUN_DIR_OR_BUNDLE")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data-dir", type=Path, help="dataset root with test/clean and test/noisy")
    source.add_argument("--demo", action="store_true", help="the built-in demo set's test split")
    parser.add_argument("--load", choices=["auto", "best", "last"], default="auto",
                        help="which checkpoint of a run directory (as `bsrnn evaluate`)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="scoring processes")
    parser.add_argument("--limit", type=int, default=0, help="only the first N test pairs (0: all)")


def test_pairs_of(args: argparse.Namespace) -> list:
    """The test pairs ``add_test_set_arguments`` asked for, checked as `bsrnn evaluate` checks them."""
    from bsrnn.data import check_data_dir, demo_corpus
    from bsrnn.data.validate import check_finite_samples

    corpus = demo_corpus(seed=0) if args.demo else check_data_dir(args.data_dir, splits=("test",))
    if not args.demo:
        check_finite_samples(corpus, splits=("test",))
    return corpus.test[: args.limit] if args.limit > 0 else corpus.test
