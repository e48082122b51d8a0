"""Where the generator's forward+backward time goes: LSTM kernels against everything else.

Answers "what limits the generator ratio" with a profiler instead of a guess. For the
per-band baseline and for ``bsrnn.models.BSRNN`` (default N 64, L 5), after warm-up,
``torch.profiler`` records a few forward+backward passes at batch B x 2 s; every operator's
self CPU time is put in one of three groups:

- ``lstm``: the recurrent kernels (forward and backward; oneDNN's ``mkldnn_rnn_layer`` on
  CPU, cuDNN's ``_cudnn_rnn`` on GPU) -- the same sequences in both models;
- ``matmul``: the band-split / mask-decoder projections (``mm``, ``bmm``, ``addmm``, ...);
- ``other``: norms, element-wise ops, copies, STFT, the loss.

Both models run the same LSTMs on the same sequences (the reference already batches each
layer's LSTM over all bands or all frames), so the LSTM time is a floor the rest of the model
cannot go below: ours / baseline >= lstm_ms / baseline_total. The script prints that bound.

    .venv/bin/python benchmarks/profile_generator.py            # about 1 minute on 2 cores
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from bench_common import describe_machine, load_baseline_module, speech_pairs
from bsrnn.audio import stft
from bsrnn.losses import DEFAULT_LOSS_WEIGHTS, generator_loss
from bsrnn.models import BSRNN

LSTM_MARKERS = ("rnn", "lstm")
MATMUL_OPS = {"aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::matmul", "aten::linear"}


def group_of(name: str) -> str:
    lowered = name.lower()
    if any(marker in lowered for marker in LSTM_MARKERS):
        return "lstm"
    if name in MATMUL_OPS or any(op.removeprefix("aten::") in lowered for op in ("mmbackward", "bmmbackward")):
        return "matmul"
    return "other"


def profile_model(model: torch.nn.Module, noisy: torch.Tensor, clean_spec: torch.Tensor,
                  passes: int) -> tuple[dict[str, float], int, float]:
    """Per forward+backward pass: self CPU ms per group, operator calls, total self CPU ms."""
    def step() -> None:
        estimate = model(stft(noisy))
        generator_loss(estimate, clean_spec, None, DEFAULT_LOSS_WEIGHTS).total.backward()
        model.zero_grad(set_to_none=True)

    step()  # warm-up: allocator, oneDNN primitive caches
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(passes):
            step()
    groups: dict[str, float] = defaultdict(float)
    calls = 0
    for event in prof.key_averages():
        groups[group_of(event.key)] += event.self_cpu_time_total / 1000 / passes
        calls += event.count
    return dict(groups), calls // passes, sum(groups.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--passes", type=int, default=3, help="profiled forward+backward passes")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(describe_machine())
    pairs = speech_pairs(args.batch, 32000, seed=0)
    clean = torch.stack([torch.from_numpy(pair[0]) for pair in pairs])
    noisy = torch.stack([torch.from_numpy(pair[1]) for pair in pairs])
    clean_spec = stft(clean)
    torch.manual_seed(0)
    models = {"baseline": load_baseline_module().ReferenceBSRNN(num_channel=64, num_layer=5),
              "ours": BSRNN(num_channel=64, num_layer=5)}
    results = {name: profile_model(model, noisy, clean_spec, args.passes) for name, model in models.items()}

    print(f"\ngenerator forward+backward, batch {args.batch} x 2 s, self CPU ms per pass "
          f"(mean of {args.passes} profiled passes; profiling adds overhead per operator call)")
    print(f"  {'':<10}{'lstm':>9}{'matmul':>9}{'other':>9}{'total':>9}{'lstm %':>8}{'op calls':>10}")
    for name, (groups, calls, total) in results.items():
        print(f"  {name:<10}{groups.get('lstm', 0):>9.0f}{groups.get('matmul', 0):>9.0f}"
              f"{groups.get('other', 0):>9.0f}{total:>9.0f}{100 * groups.get('lstm', 0) / total:>7.1f}%{calls:>10}")
    base_total = results["baseline"][2]
    ours_lstm = results["ours"][0].get("lstm", 0.0)
    print(f"\nfloor: with everything but the LSTMs free, ours / baseline >= "
          f"{ours_lstm:.0f} / {base_total:.0f} = {ours_lstm / base_total:.3f}")
    print(f"measured (profiled): ours / baseline = {results['ours'][2] / base_total:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
