"""Where the generator's forward+backward time goes: the LSTMs against everything else.

Answers "what limits the generator ratio" with a measurement instead of a guess. One run
times, round-robin, median of ``--steps`` after warm-up, at batch B x 2 s (default N 64, L 5):

- the per-band baseline's and ``BSRNN``'s whole forward+backward (STFT, network, loss);
- their 2L LSTMs alone, forward+backward on inputs of exactly the shapes the generator feeds
  them (time layers: B x 31 sequences of T frames; band layers: B x T sequences of 31 bands;
  gradients to the inputs too, as inside the network), once called as the reference calls
  them (the whole batch in one call) and once as ``BSRNN`` calls them on CPU (in row groups,
  see ``ResidualRNNLayer``).

Both models run the same LSTMs on the same sequences (the reference already batches each
layer's LSTM over all bands or all frames), so their LSTM time is a floor that no rewrite of
the rest of the network can go under: ours / baseline >= ours' LSTM time / baseline total.
``torch.profiler`` was tried first and is not used: with it on, a pass took 20x longer.

    .venv/bin/python benchmarks/profile_generator.py            # about 2 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import nn

from bench_common import Timings, describe_machine, load_average, load_baseline_module, round_robin, speech_pairs
from bsrnn.audio import stft
from bsrnn.losses import DEFAULT_LOSS_WEIGHTS, generator_loss
from bsrnn.models import BSRNN
from bsrnn.models.bands import NUM_BANDS


def generator_pass(model: nn.Module, noisy: torch.Tensor, clean_spec: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        estimate = model(stft(noisy))
        generator_loss(estimate, clean_spec, None, DEFAULT_LOSS_WEIGHTS).total.backward()
        model.zero_grad(set_to_none=True)
    return run


def lstm_pass(model: BSRNN, batch: int, frames: int, grouped: bool) -> Callable[[], None]:
    """Forward+backward of ``model``'s 2L LSTMs alone, on inputs shaped as in the network."""
    calls = []
    for layers, rows, length in ((model.time_layers, batch * NUM_BANDS, frames),
                                 (model.band_layers, batch * frames, NUM_BANDS)):
        for layer in layers:
            group = layer._rows_per_call(torch.empty(0), rows) if grouped else rows
            inputs = torch.randn(rows, length, layer.lstm.input_size, requires_grad=True)
            calls.append((layer.lstm, inputs, group))

    def run() -> None:
        total = torch.zeros(())
        for lstm, inputs, group in calls:
            for part in inputs.split(group):
                total = total + lstm(part)[0].sum()
        total.backward()
        model.zero_grad(set_to_none=True)
        for _, inputs, _ in calls:
            inputs.grad = None
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="timed passes per variant (median)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(describe_machine())
    pairs = speech_pairs(args.batch, 32000, seed=0)
    clean = torch.stack([torch.from_numpy(pair[0]) for pair in pairs])
    noisy = torch.stack([torch.from_numpy(pair[1]) for pair in pairs])
    clean_spec = stft(clean)
    frames = clean_spec.shape[-1]
    torch.manual_seed(0)
    baseline = load_baseline_module().ReferenceBSRNN(num_channel=64, num_layer=5)
    ours = BSRNN(num_channel=64, num_layer=5)
    timings = Timings()
    recording = [False]

    def timed(name: str, run: Callable[[], None]) -> Callable[[], None]:
        def task() -> None:
            started = time.perf_counter()
            run()
            if recording[0]:
                timings.add(name, time.perf_counter() - started)
        return task

    tasks = {
        "baseline": timed("baseline", generator_pass(baseline, noisy, clean_spec)),
        "ours": timed("ours", generator_pass(ours, noisy, clean_spec)),
        "lstm_whole": timed("lstm_whole", lstm_pass(ours, args.batch, frames, grouped=False)),
        "lstm_grouped": timed("lstm_grouped", lstm_pass(ours, args.batch, frames, grouped=True)),
    }
    round_robin(args.warmup, tasks)
    recording[0] = True
    round_robin(args.steps, tasks)

    base, mine = timings.median("baseline"), timings.median("ours")
    whole, grouped = timings.median("lstm_whole"), timings.median("lstm_grouped")
    print(f"\ngenerator forward+backward, batch {args.batch} x 2 s ({frames} frames), "
          f"median of {args.steps} (min..max ms)")
    for label, name in (("baseline, whole", "baseline"), ("ours, whole", "ours"),
                        ("its LSTMs alone, reference calls", "lstm_whole"),
                        ("its LSTMs alone, our CPU row groups", "lstm_grouped")):
        print(f"  {label:<38}{1000 * timings.median(name):>8.0f} ms   {timings.spread(name)}")
    print(f"  LSTM share: baseline {whole / base:.1%}, ours {grouped / mine:.1%}; "
          f"everything else: baseline {1000 * (base - whole):.0f} ms, ours {1000 * (mine - grouped):.0f} ms")
    print(f"floor: ours / baseline >= {1000 * grouped:.0f} / {1000 * base:.0f} = {grouped / base:.3f} "
          f"(target 0.75); measured here: {mine / base:.3f}")
    print(f"load average at the end: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
