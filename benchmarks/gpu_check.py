"""GPU check: training steps/s of the reference recipe and ours, eager/compiled, fp32/bf16, PESQ wait.

Why: the CPU benchmarks cannot say how the generator, PESQ and checkpointing behave on a GPU,
where the LSTMs run in cuDNN and PESQ (on CPU worker processes) may become the bottleneck.
In one run, within a time budget (``--budget-s``, default 240 s, so that ``gpu_check.sh``
ends in under 5 minutes on one GPU), this prints for batch 6 x 2 s:

- median full training step (``bsrnn.training.steps.train_step``: generator, losses, GAN
  term, PESQ through ``PesqPool``, both Adam updates) and steps/s, for baseline and ours, in
  fp32 and with ``--amp bf16``, eager and with ``--compile``, applied as the trainer applies
  them (``bsrnn.training.execution.forward_of``); variants that do not fit in the budget are listed as skipped;
- the reference recipe as the reference runs it (per-band baseline, fp32, eager, PESQ scored
  synchronously in the step: ``PesqPool(workers=0)``) against ours (``BSRNN``, PESQ in the
  pool), and ours with the one-step-delayed discriminator (``--delayed-discriminator``);
- the share of each step spent waiting for PESQ (``StepResult.pesq_wait_s`` / step time) and
  the step time without that wait (what the GPU work alone would allow), with and without the
  delayed discriminator: on a GPU the generator step may be shorter than the step's PESQ work,
  and the wait is what the delayed option removes;
- the checkpoint stall: how long ``CheckpointManager.save`` (async) blocks the training loop
  for the full training state (both networks and both Adam states), and how long the
  background commit takes.

    benchmarks/gpu_check.sh                                     # on the GPU machine
    .venv/bin/python benchmarks/gpu_check.py --device cpu --quick   # CPU smoke test, ~2 min
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench_common import describe_machine, load_average, load_baseline_module, speech_pairs
from bsrnn.checkpoint import CheckpointManager
from bsrnn.errors import UserError
from bsrnn.losses import DEFAULT_LOSS_WEIGHTS
from bsrnn.metrics.pesq_pool import PesqPool
from bsrnn.models import BSRNN, Discriminator, generator_state_dict_from_reference
from bsrnn.training.distributed import DistributedContext
from bsrnn.training.execution import forward_of
from bsrnn.training.steps import DelayedDiscriminator, Networks, train_step

GRAD_CLIP = 5.0
LEARNING_RATE = 1e-3


PESQ_MODES = ("pool", "sync", "delayed")
"""How a step gets its PESQ: the pool, collected before D's update (the trainer's default);
scored in the step (0 workers: the reference); the pool with the one-step-delayed discriminator."""


@dataclass(frozen=True)
class Variant:
    model: str  # "baseline" or "ours"
    amp: bool
    compiled: bool
    pesq: str = "pool"  # one of PESQ_MODES

    @property
    def label(self) -> str:
        return (f"{self.model:<8} {'bf16 autocast' if self.amp else 'fp32':<13} "
                f"{'compiled' if self.compiled else 'eager':<8} PESQ {self.pesq:<7}")


REFERENCE_RECIPE = Variant("baseline", amp=False, compiled=False, pesq="sync")
"""The reference's training step: its per-band network, fp32, eager, PESQ computed in the step."""


@dataclass
class Outcome:
    step_s: float
    pesq_share: float
    compute_s: float
    first_step_s: float  # includes compilation for compiled variants


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_generator(model: str, num_channel: int, num_layer: int, baseline_state: dict) -> nn.Module:
    """Baseline or ours with the same weights (so both train the same function)."""
    if model == "baseline":
        generator = load_baseline_module().ReferenceBSRNN(num_channel=num_channel, num_layer=num_layer)
        generator.load_state_dict(baseline_state)
        return generator
    generator = BSRNN(num_channel=num_channel, num_layer=num_layer)
    generator.load_state_dict(generator_state_dict_from_reference(baseline_state))
    return generator


def build(generator: nn.Module, device: torch.device) -> Networks:
    discriminator = Discriminator(ndf=16).to(device)
    generator = generator.to(device)
    return Networks(generator, discriminator,
                    torch.optim.Adam(generator.parameters(), lr=LEARNING_RATE),
                    torch.optim.Adam(discriminator.parameters(), lr=LEARNING_RATE))


def run_variant(variant: Variant, nets: Networks, clean: torch.Tensor, noisy: torch.Tensor,
                pool: PesqPool, steps: int, warmup: int, backend: str, device: torch.device) -> Outcome:
    """Warm up (compiling if asked), then time ``steps`` full training steps.

    AMP and compilation are applied exactly as ``bsrnn train --amp bf16 --compile`` applies
    them (``bsrnn.training.execution.forward_of``: both networks' forward passes). A delayed
    variant's first step (no discriminator update) is among the warm-up steps, and its last
    pending PESQ is collected before the next variant starts.
    """
    if warmup < 1 and variant.pesq == "delayed":
        raise ValueError("a delayed-discriminator variant needs --warmup >= 1: its first step has no update")
    delayed = DelayedDiscriminator() if variant.pesq == "delayed" else None
    amp = "bf16" if variant.amp else "off"
    nets = Networks(nets.generator, nets.discriminator, nets.optimizer_g, nets.optimizer_d,
                    run_generator=forward_of(nets.generator, device, amp, variant.compiled, backend),
                    run_discriminator=forward_of(nets.discriminator, device, amp, compile=False))
    context = DistributedContext()
    times, shares, computes = [], [], []
    first = 0.0
    for index in range(warmup + steps):
        synchronize(device)
        started = time.perf_counter()
        result = train_step(nets, clean, noisy, use_gan=True, loss_weights=list(DEFAULT_LOSS_WEIGHTS),
                            grad_clip=GRAD_CLIP, pesq_pool=pool, context=context, delayed=delayed)
        synchronize(device)
        elapsed = time.perf_counter() - started
        if index == 0:
            first = elapsed
        if index >= warmup:
            times.append(elapsed)
            shares.append(result.pesq_wait_s / elapsed)
            computes.append(elapsed - result.pesq_wait_s)
    if delayed is not None:
        delayed.wait()
    return Outcome(statistics.median(times), statistics.median(shares), statistics.median(computes), first)


def checkpoint_stall(nets: Networks, clean: torch.Tensor, noisy: torch.Tensor, pool: PesqPool,
                     saves: int, device: torch.device) -> dict[str, float]:
    """Async saves of the full training state: what they cost the training loop.

    Per save: ``save()`` blocking time (tensors copied to host staging buffers), the commit
    time until the file is durable and verified (save + immediate wait), and the duration of
    a training step that runs while a save is being written (against one that does not).
    """
    def step() -> float:
        synchronize(device)
        started = time.perf_counter()
        train_step(nets, clean, noisy, use_gan=True, loss_weights=list(DEFAULT_LOSS_WEIGHTS),
                   grad_clip=GRAD_CLIP, pesq_pool=pool, context=DistributedContext())
        synchronize(device)
        return time.perf_counter() - started

    stalls, commits, overlapped, alone = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="bsrnn-gpu-check-") as scratch:
        manager = CheckpointManager(Path(scratch) / "run", async_save=True)
        try:
            manager.register("model_state_dict", nets.generator)
            manager.register("discriminator_state_dict", nets.discriminator)
            manager.register("optimizer_state_dict", nets.optimizer_g)
            manager.register("optimizer_disc_state_dict", nets.optimizer_d)
            step()  # optimizer state exists from here on
            for index in range(saves):
                started = time.perf_counter()
                manager.save(metric=float(index), values={"epoch": index})
                stalls.append(time.perf_counter() - started)
                manager.wait_until_finished()
                commits.append(time.perf_counter() - started)
                alone.append(step())
                manager.save(values={"epoch": index})
                overlapped.append(step())
                manager.wait_until_finished()
            size = manager.last_path.stat().st_size / 1e6
        finally:
            manager.close()
    return {"stall": statistics.median(stalls), "commit": statistics.median(commits), "mb": size,
            "step_alone": statistics.median(alone), "step_during_save": statistics.median(overlapped)}


def report_reference_and_delayed(outcomes: dict[Variant, Outcome | str], workers: int) -> None:
    """The reference recipe's steps/s against ours; the PESQ-wait share with and without the
    delayed discriminator (eager, fp32 and bf16)."""
    def steps_per_s(variant: Variant) -> str:
        outcome = outcomes.get(variant)
        return f"{1 / outcome.step_s:6.2f}" if isinstance(outcome, Outcome) else "   n/a"

    reference = outcomes.get(REFERENCE_RECIPE)
    print(f"\nsteps/s: reference recipe (per-band baseline, fp32 eager, PESQ in the step) "
          f"{steps_per_s(REFERENCE_RECIPE)}")
    for amp in (False, True):
        precision = "bf16" if amp else "fp32"
        for pesq in ("pool", "delayed"):
            variant = Variant("ours", amp, compiled=False, pesq=pesq)
            outcome = outcomes.get(variant)
            speedup = (f"  {reference.step_s / outcome.step_s:5.2f}x the reference recipe"
                       if isinstance(outcome, Outcome) and isinstance(reference, Outcome) else "")
            print(f"  ours {precision} eager, PESQ {pesq:<7} ({workers} workers) {steps_per_s(variant)}{speedup}")
    print("PESQ wait / step time, ours eager, without -> with --delayed-discriminator:")
    for amp in (False, True):
        pool, delayed = (outcomes.get(Variant("ours", amp, compiled=False, pesq=pesq)) for pesq in ("pool", "delayed"))
        if isinstance(pool, Outcome) and isinstance(delayed, Outcome):
            print(f"  {'bf16' if amp else 'fp32'}: {pool.pesq_share:6.1%} -> {delayed.pesq_share:6.1%}  (step "
                  f"{1000 * pool.step_s:.1f} -> {1000 * delayed.step_s:.1f} ms)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: N 16 L 2, batch 2 x 0.5 s, 2 steps, compile with aot_eager")
    parser.add_argument("--batch", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant (default 10)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    parser.add_argument("--pesq-workers", type=int, default=2, help="PesqPool workers (the trainer's default 2)")
    parser.add_argument("--compile-backend", default=None, help="torch.compile backend (default inductor)")
    parser.add_argument("--budget-s", type=float, default=240.0,
                        help="stop starting new variants after this many seconds (default 240)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    num_channel, num_layer = 64, 5
    backend = args.compile_backend or "inductor"
    if args.quick:
        num_channel, num_layer = 16, 2
        args.batch, args.seconds, args.steps, args.warmup = 2, 0.5, 2, 1
        backend = args.compile_backend or "aot_eager"
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: CUDA is not available here (use --device cpu --quick for a smoke test)")
        return 2
    started = time.perf_counter()
    print(describe_machine())
    if device.type == "cuda":
        print(f"device: {torch.cuda.get_device_name(device)}, bf16 supported: {torch.cuda.is_bf16_supported()}")
        torch.backends.cudnn.benchmark = True
    print(f"model N {num_channel} L {num_layer}, batch {args.batch} x {args.seconds:g} s, "
          f"{args.steps} timed steps after {args.warmup}, PESQ workers {args.pesq_workers}, "
          f"compile backend {backend}, budget {args.budget_s:g} s")

    pairs = speech_pairs(args.batch, int(args.seconds * 16000), seed=0)
    clean = torch.from_numpy(np.stack([pair[0] for pair in pairs])).to(device)
    noisy = torch.from_numpy(np.stack([pair[1] for pair in pairs])).to(device)
    torch.manual_seed(0)
    baseline_state = load_baseline_module().ReferenceBSRNN(num_channel=num_channel, num_layer=num_layer).state_dict()

    # Eager first (cheap, and the comparison that matters), the reference recipe first of all;
    # compiled variants last, as compiling may take most of the budget.
    variants = [REFERENCE_RECIPE]
    for compiled in (False, True):
        for amp in (False, True):
            variants += [Variant("ours", amp, compiled), Variant("baseline", amp, compiled)]
            if not compiled:
                variants.append(Variant("ours", amp, compiled, pesq="delayed"))
    outcomes: dict[Variant, Outcome | str] = {}
    with PesqPool(workers=args.pesq_workers) as pool, PesqPool(workers=0) as in_step:
        for variant in variants:
            if time.perf_counter() - started > args.budget_s:
                outcomes[variant] = "skipped (time budget)"
                print(f"  {variant.label} {outcomes[variant]}", flush=True)
                continue
            torch.manual_seed(0)
            nets = build(make_generator(variant.model, num_channel, num_layer, baseline_state), device)
            try:
                pesq_pool = in_step if variant.pesq == "sync" else pool
                outcomes[variant] = run_variant(variant, nets, clean, noisy, pesq_pool, args.steps, args.warmup,
                                                backend, device)
            except (RuntimeError, TypeError, ValueError, UserError) as error:  # a compiler failure, no bf16: go on
                outcomes[variant] = f"failed: {type(error).__name__}: {str(error).splitlines()[0][:120]}"
            outcome = outcomes[variant]
            if isinstance(outcome, Outcome):
                print(f"  {variant.label} step {1000 * outcome.step_s:8.1f} ms  {1 / outcome.step_s:6.2f} steps/s  "
                      f"PESQ wait {outcome.pesq_share:6.1%}  without the wait {1000 * outcome.compute_s:8.1f} ms  "
                      f"(first step {outcome.first_step_s:.1f} s)", flush=True)
            else:
                print(f"  {variant.label} {outcome}", flush=True)

        report_reference_and_delayed(outcomes, args.pesq_workers)
        print("\nsteps/s, ours / baseline (same precision and compilation, PESQ pool):")
        for variant in variants:
            if variant.model != "ours" or variant.pesq != "pool":
                continue
            base = outcomes.get(Variant("baseline", variant.amp, variant.compiled))
            ours = outcomes[variant]
            if isinstance(ours, Outcome) and isinstance(base, Outcome):
                print(f"  {'bf16' if variant.amp else 'fp32'} {'compiled' if variant.compiled else 'eager':<8}  "
                      f"ours {1 / ours.step_s:6.2f}  baseline {1 / base.step_s:6.2f}  "
                      f"speed-up {base.step_s / ours.step_s:5.2f}x  (without PESQ wait "
                      f"{base.compute_s / ours.compute_s:5.2f}x)")

        torch.manual_seed(0)
        nets = build(make_generator("ours", num_channel, num_layer, baseline_state), device)
        ckpt = checkpoint_stall(nets, clean, noisy, pool, saves=2 if args.quick else 3, device=device)
        print(f"\ncheckpoint, async save of {ckpt['mb']:.0f} MB (both networks and Adam states), ours fp32 eager:")
        print(f"  save() blocks the loop {1000 * ckpt['stall']:.1f} ms = "
              f"{ckpt['stall'] / ckpt['step_alone']:.1%} of a step; durable + verified after "
              f"{1000 * ckpt['commit']:.0f} ms")
        print(f"  a step while the save is written: {1000 * ckpt['step_during_save']:.0f} ms, "
              f"without: {1000 * ckpt['step_alone']:.0f} ms")
    print(f"\ntotal {time.perf_counter() - started:.0f} s; load average {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
