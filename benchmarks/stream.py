"""How fast a causal BSRNN streams, in PyTorch and in ONNX Runtime: compute time per 8 ms hop.

Why: a stream is real-time only if each hop (128 samples at 16 kHz) is processed in less than
8 ms, and its latency budget grows by the slowest hops. For each model size (default: the default
N 64, L 5 and a small N 16, L 2), this saves a causal BSRNN with freshly initialised weights
(``BSRNN.reset_parameters``, seed 0: speed does not depend on the weights) as a checkpoint,
exports it with ``bsrnn ckpt export --format onnx``, and feeds a random signal hop by hop to
``Enhancer.stream`` for each runtime: the checkpoint (PyTorch eager) and the ``.onnx`` file (its
streaming step in ONNX Runtime, on one thread). Both run the same stream code; only the network
step differs. The runtimes take turns (``--repeats`` passes each, round-robin) so that a burst of
foreign load hits both alike. Per runtime: the time of each ``process`` call of one hop (the whole
hop: STFT, network, mask, overlap-add) as median, p99 and max against the 8 ms hop, the network
step alone (median, p99), and the RTF (compute seconds per audio second); each in wall time, and
the hop and RTF also in the thread's CPU time (``time.thread_time``: both runtimes compute in the
calling thread on one thread), which leaves out the time a loaded machine kept the process
waiting for a core. The load average is printed with each figure (``/proc/loadavg``), and the CPU
(``lscpu``) once. ``--offline`` adds the
offline RTF of the causal and the reference model in PyTorch (``enhance_segment``).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/stream.py --seconds 10 --threads 1
"""

from __future__ import annotations

import argparse
import contextlib
import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bsrnn.audio import HOP_LENGTH, SAMPLE_RATE
from bsrnn.checkpoint import CheckpointManager
from bsrnn.cli.main import main as bsrnn_main
from bsrnn.enhancement import enhance_segment
from bsrnn.inference import Enhancer
from bsrnn.models import BSRNN
from bsrnn.models.streaming import MaskStep

HOP_MS = 1000 * HOP_LENGTH / SAMPLE_RATE


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu() -> str:
    """The CPU as ``lscpu`` names it, and its AVX-512 / AMX flags."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown CPU"
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    flags = fields.get("Flags", "").split()
    wide = sorted(flag for flag in flags if flag.startswith(("avx512", "amx", "avx_vnni")))
    return (f"{fields.get('Model name', '?').strip()}, {fields.get('CPU(s)', '?').strip()} CPUs; "
            f"{' '.join(wide) or 'no AVX-512'}{'' if any(f.startswith('amx') for f in flags) else '; no AMX'}")


class TimedStep:
    """A ``MaskStep`` that records how long each call of the one it wraps takes."""

    def __init__(self, step: MaskStep, record: list[float]) -> None:
        self.step, self.record = step, record

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        began = time.perf_counter()
        mask = self.step(frames)
        self.record.append(time.perf_counter() - began)
        return mask


def stream_once(enhancer: Enhancer, signal: np.ndarray, hops: list[float], cpu_hops: list[float],
                steps: list[float]) -> None:
    """Feed ``signal`` hop by hop to a fresh stream, appending each hop's wall and CPU time and each
    network call's wall time."""
    stream = enhancer.stream(SAMPLE_RATE)
    stream.inner.frames.step = TimedStep(stream.inner.frames.step, steps)
    for start in range(0, len(signal), HOP_LENGTH):
        began, began_cpu = time.perf_counter(), time.thread_time()
        stream.process(signal[start : start + HOP_LENGTH])
        hops.append(time.perf_counter() - began)
        cpu_hops.append(time.thread_time() - began_cpu)
    stream.flush()


def saved(model: BSRNN, folder: Path) -> tuple[Path, Path]:
    """``model`` as a run directory's checkpoint and as the ``.onnx`` file exported from it."""
    run = folder / "run"
    with CheckpointManager(run) as manager:
        manager.register("model_state_dict", model)
        manager.save(metric=0.5, values={"epoch": 0, "step_in_epoch": 0, "config": model.config()})
    onnx = folder / "model.onnx"
    with contextlib.redirect_stdout(io.StringIO()):
        assert bsrnn_main(["-q", "ckpt", "export", str(run), "--format", "onnx", "--out", str(onnx)]) == 0
    return run, onnx


def measure(size: tuple[int, int], signal: np.ndarray, seconds: float, runtimes: list[str], repeats: int,
            offline: bool) -> None:
    num_channel, num_layer = size
    torch.manual_seed(0)
    model = BSRNN(num_channel, num_layer, causal=True).eval()
    parameters = sum(parameter.numel() for parameter in model.parameters())
    with tempfile.TemporaryDirectory() as scratch:
        run, onnx = saved(model, Path(scratch))
        enhancers = {"pytorch": Enhancer.load(run), "onnx": Enhancer.load(onnx)}
        print(f"\nN {num_channel}, L {num_layer}: {parameters:,} generator parameters (initialised weights, seed 0); "
              f".onnx {onnx.stat().st_size / 1e6:.1f} MB; {seconds:g} s fed hop by hop, {repeats} pass(es) per "
              "runtime, round-robin", flush=True)
        hops: dict[str, list[float]] = {name: [] for name in runtimes}
        cpu_hops: dict[str, list[float]] = {name: [] for name in runtimes}
        steps: dict[str, list[float]] = {name: [] for name in runtimes}
        for name in runtimes:  # warm-up: the first calls allocate
            stream_once(enhancers[name], signal[:SAMPLE_RATE], [], [], [])
        before = loadavg()
        for _ in range(repeats):
            for name in runtimes:
                stream_once(enhancers[name], signal, hops[name], cpu_hops[name], steps[name])
        after = loadavg()
        audio = seconds * repeats
        print(f"  {'ms per ' + format(HOP_MS, 'g') + ' ms hop':<17}{'median':>8}{'p99':>8}{'max':>8}{'CPU med':>9}"
              f"{'CPU p99':>9}{'step med':>10}{'step p99':>10}{'RTF':>7}{'RTF CPU':>9}")
        for name in runtimes:
            hop_ms, cpu_ms, step_ms = (1000 * np.array(values) for values in (hops[name], cpu_hops[name], steps[name]))
            label = "PyTorch eager" if name == "pytorch" else "ONNX Runtime"
            print(f"  {label:<17}{np.median(hop_ms):>8.2f}{np.percentile(hop_ms, 99):>8.2f}{hop_ms.max():>8.2f}"
                  f"{np.median(cpu_ms):>9.2f}{np.percentile(cpu_ms, 99):>9.2f}{np.median(step_ms):>10.2f}"
                  f"{np.percentile(step_ms, 99):>10.2f}{hop_ms.sum() / 1000 / audio:>7.3f}"
                  f"{cpu_ms.sum() / 1000 / audio:>9.3f}", flush=True)
        print(f"  load average (1, 5, 15 min) before {before}, after {after}", flush=True)
    if offline:
        reference = BSRNN(num_channel, num_layer).eval()
        enhance_segment(model, signal[:SAMPLE_RATE])  # warm-up
        for name, network in (("causal", model), ("reference", reference)):
            began = time.perf_counter()
            enhance_segment(network, signal)
            print(f"  offline, whole signal, PyTorch, {name}: RTF {(time.perf_counter() - began) / seconds:.3f} "
                  f"(load {loadavg()})", flush=True)


def size(text: str) -> tuple[int, int]:
    channels, _, layers = text.partition("x")
    return int(channels), int(layers)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="audio per pass (default 10)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1; ONNX "
                        "Runtime's streaming step always runs on one)")
    parser.add_argument("--sizes", type=size, nargs="+", default=[(64, 5), (16, 2)], metavar="NxL",
                        help="model sizes, num_channel x num_layer (default 64x5 16x2)")
    parser.add_argument("--runtimes", nargs="+", choices=["pytorch", "onnx"], default=["pytorch", "onnx"])
    parser.add_argument("--repeats", type=int, default=2, help="passes per runtime, round-robin (default 2)")
    parser.add_argument("--offline", action="store_true", help="also the offline RTF in PyTorch")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu()}; torch {torch.__version__}, {args.threads} thread(s)")
    signal = (0.1 * np.random.default_rng(0).standard_normal(int(args.seconds * SAMPLE_RATE))).astype(np.float32)
    for model_size in args.sizes:
        measure(model_size, signal, args.seconds, args.runtimes, args.repeats, args.offline)
    return 0


if __name__ == "__main__":
    sys.exit(main())
