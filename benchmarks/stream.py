"""How fast a causal BSRNN streams: compute time per 8 ms hop, against the 8 ms a hop lasts.

Why: a stream is real-time only if each hop (128 samples at 16 kHz) is processed in less than
8 ms on average, and its latency budget grows by the slowest hops. This feeds a random signal
hop by hop to ``bsrnn.streaming.WaveformStream`` (random weights: speed does not depend on
them) and prints the real-time factor (compute seconds per audio second) and the per-hop time
percentiles; and, for comparison, the offline RTF of the same causal model and of the reference
model (``enhance_segment``: the cumulative norms' cost).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/stream.py --seconds 10 --threads 1
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from bsrnn.audio import HOP_LENGTH, SAMPLE_RATE
from bsrnn.enhancement import enhance_segment
from bsrnn.models import BSRNN
from bsrnn.streaming import WaveformStream


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--num-channel", type=int, default=64)
    parser.add_argument("--num-layer", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    signal = (0.1 * np.random.default_rng(0).standard_normal(int(args.seconds * SAMPLE_RATE))).astype(np.float32)
    causal = BSRNN(args.num_channel, args.num_layer, causal=True).eval()
    reference = BSRNN(args.num_channel, args.num_layer).eval()
    enhance_segment(causal, signal[:SAMPLE_RATE])  # warm-up
    stream = WaveformStream(causal)
    hops = []
    for start in range(0, len(signal), HOP_LENGTH):
        began = time.perf_counter()
        stream.process(signal[start : start + HOP_LENGTH])
        hops.append(time.perf_counter() - began)
    stream.flush()
    hop_ms = 1000 * np.array(hops)
    print(f"N {args.num_channel}, L {args.num_layer}, {args.seconds:g} s, {args.threads} thread(s)")
    print(f"stream, hop by hop: RTF {hop_ms.sum() / 1000 / args.seconds:.3f}; per hop (8 ms of audio): median "
          f"{np.median(hop_ms):.2f} ms, p99 {np.percentile(hop_ms, 99):.2f} ms, max {hop_ms.max():.2f} ms")
    for name, model in (("causal", causal), ("reference", reference)):
        began = time.perf_counter()
        enhance_segment(model, signal)
        print(f"offline, whole signal, {name}: RTF {(time.perf_counter() - began) / args.seconds:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
