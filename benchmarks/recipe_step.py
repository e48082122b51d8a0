"""Time per training step of each recipe, measured in one process: what an objective costs.

Why: a better objective is only better at the same compute. The step time a run logs follows
the machine's load (two runs side by side, tests, helpers), so a ratio between two runs made at
different times means little. Here every recipe is built as the trainer builds it
(``Config.from_recipe`` plus the same overrides, ``build_networks``, ``objective_of``) and its
full ``train_step`` (generator forward and backward with every loss term, the discriminator's
step, PESQ in a pool of ``--pesq-workers`` processes as ``bsrnn train --pesq-workers``) is timed
round-robin with the others on the same real batch, after warm-up. The GAN term is on (the
costlier half of a run; ``--no-gan`` times the other half). Medians and the ratio to the first
recipe are printed, with the CPU and the load average.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/recipe_step.py --data-dir ../shared/corpus \\
        --recipes reference,improved --threads 1 --steps 20

``--set name:field=value`` changes one field of one entry of ``--recipes`` (repeatable); a name
like ``improved+A`` is the recipe before the ``+``, so candidates sit beside their recipe, e.g.
``--set improved:linear_loss_weight=0.2``, to time a candidate before it is written into a recipe.
"""

from __future__ import annotations

import argparse
import ast
import time
from pathlib import Path

import numpy as np
import torch

from bench_common import Timings, describe_machine, load_average, round_robin, speech_pairs
from bsrnn.config import Config
from bsrnn.training.builders import build_networks, objective_of, start_pesq_pool
from bsrnn.training.distributed import DistributedContext
from bsrnn.training.steps import train_step


def real_batch(data_dir: Path, batch: int, samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``batch`` training pairs of ``data_dir`` at least ``samples`` long, cropped."""
    from bsrnn.data import check_data_dir
    from bsrnn.data.sources import load_pair

    corpus = check_data_dir(data_dir, splits=("train",))
    clean_items, noisy_items = [], []
    for pair in corpus.train:
        clean, noisy = load_pair(pair)
        if len(clean) >= samples:
            clean_items.append(clean[:samples])
            noisy_items.append(noisy[:samples])
        if len(clean_items) == batch:
            break
    if len(clean_items) < batch:
        raise SystemExit(f"{data_dir}: fewer than {batch} training pairs of at least {samples} samples")
    return (torch.from_numpy(np.stack(clean_items)).float(), torch.from_numpy(np.stack(noisy_items)).float())


def parse_sets(values: list[str]) -> dict[str, dict[str, object]]:
    """``recipe:field=value`` strings as {recipe: {field: value}}; values read as Python literals."""
    sets: dict[str, dict[str, object]] = {}
    for text in values:
        recipe, _, assignment = text.partition(":")
        field, _, value = assignment.partition("=")
        if not recipe or not field or not value:
            raise SystemExit(f"--set takes recipe:field=value, got {text!r}")
        sets.setdefault(recipe, {})[field] = ast.literal_eval(value)
    return sets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipes", default="reference,improved", help="comma-separated; the first is the baseline")
    parser.add_argument("--set", action="append", default=[], metavar="RECIPE:FIELD=VALUE",
                        help="change one field of one recipe (repeatable)")
    parser.add_argument("--data-dir", type=Path, help="a corpus with train/clean|noisy (default: synthetic speech)")
    parser.add_argument("--num-channel", type=int, default=16)
    parser.add_argument("--num-layer", type=int, default=2)
    parser.add_argument("--batch", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=2.0, help="crop length (default 2 s, as cut_len)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per recipe (median)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per recipe first")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--pesq-workers", type=int, default=1, help="PESQ processes (default 1)")
    parser.add_argument("--no-gan", dest="gan", action="store_false", help="time steps before the GAN term starts")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    samples = int(args.seconds * 16000)
    if args.data_dir is not None:
        clean, noisy = real_batch(args.data_dir, args.batch, samples)
    else:
        pairs = speech_pairs(args.batch, samples)
        clean = torch.from_numpy(np.stack([p[0] for p in pairs]))
        noisy = torch.from_numpy(np.stack([p[1] for p in pairs]))
    names = [name.strip() for name in args.recipes.split(",") if name.strip()]
    sets = parse_sets(args.set)
    print(describe_machine())
    print(f"N{args.num_channel} L{args.num_layer}, batch {args.batch} x {args.seconds:g} s, "
          f"{args.threads} thread(s), {args.pesq_workers} PESQ worker(s), GAN term {'on' if args.gan else 'off'}")
    print(f"load average before: {load_average()}")

    pool = start_pesq_pool(args.pesq_workers)
    timings = Timings()  # replaced after the warm-up; the steps read it when they run
    context = DistributedContext()
    tasks = {}
    try:
        for name in names:
            config = Config.from_recipe(name.split("+")[0], num_channel=args.num_channel,
                                        num_layer=args.num_layer, **sets.get(name, {}))
            nets = build_networks(config, torch.device("cpu"))

            def step(nets=nets, config=config, objective=objective_of(config), name=name) -> None:
                started = time.perf_counter()
                train_step(nets, clean, noisy, use_gan=args.gan, loss_weights=list(config.loss_weights),
                           grad_clip=config.grad_clip, pesq_pool=pool, context=context, objective=objective)
                timings.add(name, time.perf_counter() - started)

            tasks[name] = step
        round_robin(args.warmup, tasks)
        timings = Timings()
        round_robin(args.steps, tasks)
    finally:
        pool.close()

    baseline = timings.median(names[0])
    print(f"\n{'recipe':<34}{'median ms':>10}{'ratio':>8}   spread ms")
    for name in names:
        median = timings.median(name)
        print(f"{name:<34}{1000 * median:>10.0f}{median / baseline:>8.3f}   {timings.spread(name)}")
    print(f"load average after: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
