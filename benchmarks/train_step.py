"""Training-step benchmark: the per-band baseline generator against ``bsrnn.models.BSRNN``.

Why: ``BSRNN`` batches the reference network's 31 per-band GroupNorm/Linear pairs; this
script measures what that buys in a real training step, next to the parts it cannot change
(the LSTMs, the discriminator, PESQ). Both generators are timed in the same process,
round-robin, after warm-up, and the medians and ratios ours/baseline are printed:

- generator forward + backward (STFT, generator, RI + magnitude loss, backward; no update);
- discriminator step (three-term loss with fixed PESQ targets, backward, clip, Adam step);
- the full ``bsrnn.training.steps.train_step`` with real Adam optimizers, the GAN term and
  PESQ on every step, with ``PesqPool(workers=2)`` (PESQ runs while the generator updates),
  and for our generator also with ``PesqPool(workers=0)`` (scored synchronously when the
  discriminator needs it: the reference's behaviour); the share of each step spent waiting
  for PESQ (``StepResult.pesq_wait_s`` / step time);
- a what-if row: our generator's forward + backward under CPU bfloat16 autocast (a different
  function numerically; skip with ``--no-bf16``).

Before timing, both generators are checked against the reference fixture
(``reference_default.pt``): max |output - fixture| <= 1e-6 x peak, as in tests/test_models.py.

``--fast-generator`` measures something else, alone: whether PESQ stays off the critical path
when the generator is fast. On this CPU the default generator's step is 15-20 times its PESQ
work, so the pool hides PESQ completely; on a GPU the ratio turns around. A small generator
(N 8, L 1) at batch 6 x 2 s emulates that ratio here: its forward+backward is shorter than the
CPU time PESQ needs for the step's 2 x 6 utterances (both printed, with the discriminator's
step). It times the full ``train_step`` with PESQ scored synchronously (0 workers, the
reference's behaviour), in a pool of 1 and of 2 workers, and with the one-step-delayed
discriminator (``--delayed-discriminator``) on 1 and 2 workers, and reports the PESQ-wait
share (``StepResult.pesq_wait_s`` / step time) of each. Variants run in rotating blocks of
consecutive steps (a delayed step overlaps PESQ with the *next* step of the same run, which
round-robin single steps would hand to another variant); each block starts with an untimed
step, and the delayed run's pending PESQ is collected, untimed, at its end.

    .venv/bin/python benchmarks/train_step.py                        # batches 2 and 6, 10 steps
    .venv/bin/python benchmarks/train_step.py --batches 2 --steps 3 --warmup 1   # a few minutes
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/train_step.py --fast-generator --threads 1 --steps 20
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np
import torch
from torch import nn

from bench_common import (
    Timings,
    describe_machine,
    fixtures_dir,
    load_average,
    load_baseline_module,
    round_robin,
    speech_pairs,
)
from bsrnn.audio import stft
from bsrnn.losses import DEFAULT_LOSS_WEIGHTS, compressed_magnitude, discriminator_loss, generator_loss
from bsrnn.metrics.pesq_pool import PesqPool
from bsrnn.models import BSRNN, Discriminator, generator_state_dict_from_reference
from bsrnn.training.distributed import DistributedContext
from bsrnn.training.steps import DelayedDiscriminator, Networks, train_step

FIDELITY = 1e-6  # max |output - fixture| <= FIDELITY * max |fixture|, as in tests/test_models.py
TARGET_GENERATOR_RATIO = 0.75  # generator forward+backward, ours / baseline
GRAD_CLIP = 5.0  # Config.grad_clip's default
LEARNING_RATE = 1e-3  # Config.init_lr's default
FAST_GENERATOR = (8, 1)  # N, L: the smallest sensible generator, a step near its PESQ work on this CPU
FAST_BLOCK = 5  # consecutive timed steps of one variant before the next variant's block
FAST_VARIANTS = (  # label, PESQ workers, delayed discriminator
    ("synchronous PESQ (0 workers)", 0, False),
    ("PESQ pool, 1 worker", 1, False),
    ("PESQ pool, 2 workers", 2, False),
    ("delayed discriminator, 1 worker", 1, True),
    ("delayed discriminator, 2 workers", 2, True),
)


def check_fidelity(baseline_class: type[nn.Module]) -> bool:
    """Both generators reproduce the reference fixture (same weights, eval mode); False if not.

    Timing two networks only means something if they compute the same function.
    """
    folder = fixtures_dir()
    if folder is None or not (folder / "reference_default.pt").is_file():
        print("fidelity: SKIPPED (reference_default.pt not found; set BSRNN_FIXTURES)")
        return True
    fixture = torch.load(folder / "reference_default.pt", weights_only=True)
    generator = fixture["generator_64_5"]
    spec = torch.view_as_complex(fixture["input_spec"])
    expected = generator["output_spec"]
    bound = FIDELITY * expected.abs().max().item()
    baseline = baseline_class(num_channel=64, num_layer=5)
    baseline.load_state_dict(generator["state_dict"])
    ours = BSRNN(num_channel=64, num_layer=5)
    ours.load_state_dict(generator_state_dict_from_reference(generator["state_dict"]))
    passed = True
    for name, model in (("baseline", baseline), ("ours", ours)):
        with torch.no_grad():
            output = torch.view_as_real(model.eval()(spec))
        error = (output - expected).abs().max().item()
        passed &= error <= bound
        print(f"fidelity {name:<8}: max |output - fixture| = {error:.3g} (bound {bound:.3g}) "
              f"{'ok' if error <= bound else 'FAILED'}")
    return passed


def build_networks(generator: nn.Module, seed: int) -> Networks:
    """The trainer's networks and optimizers (``Trainer.build_networks``), for ``generator``."""
    torch.manual_seed(seed)
    discriminator = Discriminator(ndf=16)
    return Networks(generator, discriminator,
                    torch.optim.Adam(generator.parameters(), lr=LEARNING_RATE),
                    torch.optim.Adam(discriminator.parameters(), lr=LEARNING_RATE))


def make_batch(batch: int, samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean, noisy) float32 [batch, samples] of speech-like audio, so PESQ scores every item."""
    pairs = speech_pairs(batch, samples, seed=seed)
    clean = torch.from_numpy(np.stack([pair[0] for pair in pairs]))
    noisy = torch.from_numpy(np.stack([pair[1] for pair in pairs]))
    return clean, noisy


class StepBench:
    """The timed operations for one generator on one batch."""

    def __init__(self, nets: Networks, clean: torch.Tensor, noisy: torch.Tensor, use_gan: bool,
                 pools: dict[str, PesqPool], timings: Timings, label: str) -> None:
        self.nets, self.clean, self.noisy, self.use_gan = nets, clean, noisy, use_gan
        self.pools, self.timings, self.label = pools, timings, label
        self.context = DistributedContext()
        self.clean_spec, noisy_spec = stft(clean), stft(noisy)
        with torch.no_grad():
            estimate = nets.generator(noisy_spec)
        self.clean_mag = compressed_magnitude(self.clean_spec)
        self.noisy_mag = compressed_magnitude(noisy_spec)
        self.est_mag = compressed_magnitude(estimate)
        self.fixed_pesq = torch.full((clean.shape[0],), 2.5)
        self.pesq_wait: dict[str, list[float]] = {name: [] for name in pools}
        self.record = True

    def _time(self, name: str, seconds: float) -> None:
        if self.record:
            self.timings.add(f"{self.label}/{name}", seconds)

    def generator_forward_backward(self, bf16: bool = False) -> None:
        """STFT, generator, RI + magnitude loss, backward: what the generator's speed decides.

        ``bf16`` runs the generator under CPU autocast (bfloat16 matmuls and LSTMs): a
        different function numerically, timed only to show what mixed precision would buy.
        """
        generator = self.nets.generator
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            estimate = generator(stft(self.noisy))
        loss = generator_loss(estimate, self.clean_spec, None, DEFAULT_LOSS_WEIGHTS)
        loss.total.backward()
        self._time("generator_bf16" if bf16 else "generator", time.perf_counter() - started)
        generator.zero_grad(set_to_none=True)

    def discriminator_step(self) -> None:
        """Three-term discriminator loss with fixed PESQ targets, backward, clip, Adam step."""
        nets = self.nets
        started = time.perf_counter()
        nets.optimizer_d.zero_grad(set_to_none=True)
        loss = discriminator_loss(nets.discriminator, self.clean_mag, self.est_mag, self.noisy_mag,
                                  self.fixed_pesq, self.fixed_pesq)
        loss.total.backward()
        torch.nn.utils.clip_grad_norm_(nets.discriminator.parameters(), max_norm=GRAD_CLIP)
        nets.optimizer_d.step()
        nets.optimizer_d.zero_grad(set_to_none=True)
        self._time("discriminator", time.perf_counter() - started)

    def full_step(self, pool_name: str) -> None:
        """``bsrnn.training.steps.train_step`` as the trainer calls it."""
        started = time.perf_counter()
        result = train_step(self.nets, self.clean, self.noisy, use_gan=self.use_gan,
                            loss_weights=list(DEFAULT_LOSS_WEIGHTS), grad_clip=GRAD_CLIP,
                            pesq_pool=self.pools[pool_name], context=self.context)
        elapsed = time.perf_counter() - started
        if result.nonfinite or not result.values["pesq_valid"]:
            print(f"  warning: {self.label} step had a non-finite loss or no valid PESQ: "
                  f"{result.values}", file=sys.stderr)
        self._time(f"step_{pool_name}", elapsed)
        if self.record:
            self.pesq_wait[pool_name].append(result.pesq_wait_s / elapsed)


def report(timings: Timings, benches: dict[str, StepBench], batch: int, seconds: float) -> float:
    """Print one batch size's table; return the generator ratio ours/baseline."""
    print(f"\nbatch {batch} x {seconds:g} s  (medians of {timings.count('baseline/generator')} "
          f"steps; '(of mins)' = ratio of the fastest runs; spread = min..max ms)")
    print(f"  {'':<38}{'baseline ms':>12}{'ours ms':>10}{'ours/base':>11}{'(of mins)':>10}   "
          f"spread base | ours")
    ratio = math.nan
    for title, key in (("generator forward+backward", "generator"),
                       ("discriminator step", "discriminator"),
                       ("train step, PESQ pool (2 workers)", "step_pool")):
        base, ours = timings.median(f"baseline/{key}"), timings.median(f"ours/{key}")
        if key == "generator":
            ratio = ours / base
        of_mins = timings.minimum(f"ours/{key}") / timings.minimum(f"baseline/{key}")
        print(f"  {title:<38}{1000 * base:>12.0f}{1000 * ours:>10.0f}{ours / base:>11.3f}{of_mins:>10.3f}   "
              f"{timings.spread(f'baseline/{key}')} | {timings.spread(f'ours/{key}')}")
    sync = timings.median("ours/step_sync")
    print(f"  {'train step, synchronous PESQ':<38}{'':>12}{1000 * sync:>10.0f}{'':>21}   "
          f"{timings.spread('ours/step_sync')}")
    if timings.count("ours/generator_bf16"):
        bf16 = timings.median("ours/generator_bf16")
        base = timings.median("baseline/generator")
        print(f"  {'generator fwd+bwd, CPU autocast bf16 *':<38}{'':>12}{1000 * bf16:>10.0f}"
              f"{bf16 / base:>11.3f}{'':>10}   {timings.spread('ours/generator_bf16')}")
    pool_share = float(np.median(benches["ours"].pesq_wait["pool"]))
    base_share = float(np.median(benches["baseline"].pesq_wait["pool"]))
    sync_share = float(np.median(benches["ours"].pesq_wait["sync"]))
    print(f"  PESQ wait / step time: pool {pool_share:.1%} (baseline generator {base_share:.1%}), "
          f"synchronous {sync_share:.1%}")
    return ratio


class FastRun:
    """One variant of the fast-generator comparison: its own networks, pool and step times."""

    def __init__(self, nets: Networks, pool: PesqPool, delayed: DelayedDiscriminator | None,
                 clean: torch.Tensor, noisy: torch.Tensor, use_gan: bool) -> None:
        self.nets, self.pool, self.delayed = nets, pool, delayed
        self.clean, self.noisy, self.use_gan = clean, noisy, use_gan
        self.context = DistributedContext()
        self.steps: list[float] = []
        self.waits: list[float] = []

    def step(self, record: bool) -> None:
        started = time.perf_counter()
        result = train_step(self.nets, self.clean, self.noisy, use_gan=self.use_gan,
                            loss_weights=list(DEFAULT_LOSS_WEIGHTS), grad_clip=GRAD_CLIP, pesq_pool=self.pool,
                            context=self.context, delayed=self.delayed)
        elapsed = time.perf_counter() - started
        if result.nonfinite:
            print(f"  warning: a step had a non-finite loss: {result.values}", file=sys.stderr)
        if record:
            self.steps.append(elapsed)
            self.waits.append(result.pesq_wait_s)

    def settle(self) -> None:
        """Collect the delayed run's pending PESQ, so that it does not run during another block."""
        if self.delayed is not None:
            self.delayed.wait()


def fast_generator(args: argparse.Namespace) -> int:
    """The PESQ-wait share with a generator faster than PESQ (module docstring); 0 if it ran."""
    print(describe_machine())
    batch, samples = args.fast_batch, int(args.seconds * 16000)
    clean, noisy = make_batch(batch, samples, args.seed)
    torch.manual_seed(args.seed)
    shape = {"num_channel": args.fast_size[0], "num_layer": args.fast_size[1]}
    initial = BSRNN(**shape).state_dict()

    def generator() -> BSRNN:
        model = BSRNN(**shape)
        model.load_state_dict(initial)
        return model

    print(f"fast generator N {shape['num_channel']} L {shape['num_layer']}, batch {batch} x "
          f"{args.seconds:g} s, GAN term: {'yes' if args.gan else 'no'}, {torch.get_num_threads()} intra-op "
          f"thread(s); blocks of 1 untimed + {FAST_BLOCK} timed steps per variant, rotating")
    pools = {workers: PesqPool(workers=workers) for workers in sorted({v[1] for v in FAST_VARIANTS})}
    timings = Timings()
    try:
        runs: dict[str, FastRun] = {
            label: FastRun(build_networks(generator(), args.seed), pools[workers],
                           DelayedDiscriminator() if delayed else None, clean, noisy, args.gan)
            for label, workers, delayed in FAST_VARIANTS
        }
        # The step's parts, timed in the same rotation: is the generator's step shorter than PESQ?
        parts = StepBench(build_networks(generator(), args.seed), clean, noisy, args.gan, {}, timings, "fast")
        for run in runs.values():
            for _ in range(args.warmup):
                run.step(record=False)
            run.settle()
        counts = [FAST_BLOCK] * (args.steps // FAST_BLOCK) + [args.steps % FAST_BLOCK] * bool(args.steps % FAST_BLOCK)
        labels = [*runs, "parts"]
        for index, count in enumerate(counts):
            shift = index % len(labels)
            for label in labels[shift:] + labels[:shift]:
                if label == "parts":
                    for _ in range(count):
                        parts.generator_forward_backward()
                        parts.discriminator_step()
                    continue
                runs[label].step(record=False)
                for _ in range(count):
                    runs[label].step(record=True)
                runs[label].settle()
    finally:
        for pool in pools.values():
            pool.close()
    sync = runs[FAST_VARIANTS[0][0]]
    pesq_work = float(np.median(sync.waits))  # 0 workers: result() scores the batch in-process
    generator_ms, discriminator_ms = (1000 * timings.median(f"fast/{name}") for name in ("generator", "discriminator"))
    ratio = generator_ms / (1000 * pesq_work)
    print(f"\nPESQ work per step ({2 * batch} utterances scored in-process): {1000 * pesq_work:.0f} ms; generator "
          f"forward+backward {generator_ms:.0f} ms = {ratio:.2f} x the PESQ work "
          f"({'a generator faster than PESQ, as on a GPU' if ratio < 1 else 'NOT faster than PESQ'}); "
          f"discriminator step {discriminator_ms:.0f} ms")
    print(f"medians of {len(sync.steps)} steps; spread = min..max ms")
    print(f"  {'':<34}{'step ms':>9}{'steps/s':>9}{'PESQ wait / step':>18}{'wait ms':>9}   spread")
    for label, run in runs.items():
        step_s = float(np.median(run.steps))
        share = float(np.median([wait / elapsed for wait, elapsed in zip(run.waits, run.steps)]))
        print(f"  {label:<34}{1000 * step_s:>9.0f}{1 / step_s:>9.2f}{share:>18.1%}"
              f"{1000 * float(np.median(run.waits)):>9.0f}   {1000 * min(run.steps):.0f}..{1000 * max(run.steps):.0f}")
    print(f"\nload average at the end: {load_average()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per measurement (median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--batches", default="2,6", help="comma-separated batch sizes (default 2,6)")
    parser.add_argument("--seconds", type=float, default=2.0, help="crop length (default 2 s, as cut_len)")
    parser.add_argument("--no-gan", dest="gan", action="store_false",
                        help="train steps without the generator's GAN term (the first half of training)")
    parser.add_argument("--no-bf16", dest="bf16", action="store_false",
                        help="skip the what-if row: our generator under CPU bf16 autocast")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fast-generator", action="store_true",
                        help="only the PESQ-wait comparison with a generator faster than PESQ (N 8 L 1): "
                             "synchronous, pools of 1 and 2 workers, delayed discriminator")
    parser.add_argument("--fast-batch", type=int, default=6, help="batch size of --fast-generator (default 6)")
    parser.add_argument("--fast-size", type=int, nargs=2, default=list(FAST_GENERATOR), metavar=("N", "L"),
                        help=f"num_channel and num_layer of --fast-generator (default {FAST_GENERATOR[0]} "
                             f"{FAST_GENERATOR[1]})")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    if args.fast_batch < 1 or min(args.fast_size) < 1:
        parser.error("--fast-batch and --fast-size must be >= 1")
    torch.set_num_threads(args.threads)
    if args.fast_generator:
        return fast_generator(args)
    batches = [int(value) for value in args.batches.split(",") if value.strip()]
    print(describe_machine())
    baseline_class = load_baseline_module().ReferenceBSRNN
    if not check_fidelity(baseline_class):
        print("The generators do not compute the fixture's function: timings would be meaningless.")
        return 1
    samples = int(args.seconds * 16000)
    print(f"train steps with GAN term: {'yes' if args.gan else 'no'}; PESQ on every step; "
          f"ratios are ours / baseline (< 1: ours faster)")
    generator_ratios: dict[int, float] = {}
    with PesqPool(workers=2) as pool, PesqPool(workers=0) as sync:
        pools = {"pool": pool, "sync": sync}
        for batch in batches:
            clean, noisy = make_batch(batch, samples, args.seed)
            torch.manual_seed(args.seed)
            baseline = baseline_class(num_channel=64, num_layer=5)
            ours = BSRNN(num_channel=64, num_layer=5)
            ours.load_state_dict(generator_state_dict_from_reference(baseline.state_dict()))
            timings = Timings()
            benches = {label: StepBench(build_networks(generator, args.seed), clean, noisy, args.gan,
                                        pools, timings, label)
                       for label, generator in (("baseline", baseline), ("ours", ours))}
            tasks = {}
            for label, bench in benches.items():
                tasks[f"{label}/generator"] = bench.generator_forward_backward
                tasks[f"{label}/discriminator"] = bench.discriminator_step
                tasks[f"{label}/step_pool"] = lambda bench=bench: bench.full_step("pool")
            # Synchronous PESQ and bf16 only for ours: the PESQ share does not depend on which
            # generator runs, and bf16 is a what-if, not part of the comparison.
            tasks["ours/step_sync"] = lambda: benches["ours"].full_step("sync")
            if args.bf16:
                tasks["ours/generator_bf16"] = lambda: benches["ours"].generator_forward_backward(True)
            for bench in benches.values():
                bench.record = False
            round_robin(args.warmup, tasks)
            for bench in benches.values():
                bench.record = True
            round_robin(args.steps, tasks)
            generator_ratios[batch] = report(timings, benches, batch, args.seconds)
    print(f"\nload average at the end: {load_average()}")
    if args.bf16:
        print("* bf16 autocast computes a different function (bfloat16 matmuls/LSTMs); ratio vs the "
              "fp32 baseline, shown only as what mixed precision would buy on this CPU")
    for batch, ratio in generator_ratios.items():
        verdict = "met" if ratio <= TARGET_GENERATOR_RATIO else "NOT met"
        print(f"target generator forward+backward <= {TARGET_GENERATOR_RATIO} x baseline, batch {batch}: "
              f"{ratio:.3f} ({verdict})")
    return 0 if all(math.isfinite(ratio) for ratio in generator_ratios.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
