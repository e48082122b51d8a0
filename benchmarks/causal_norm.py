"""Which normalisation for the causal BSRNN: cumulative layer norm, or per-frame layer norm?

Why: the causal model (``BSRNN(causal=True)``) cannot use the reference's one-group GroupNorms,
whose statistics span the whole utterance. Two causal replacements keep the same parameters:

- ``cumulative``: frame ``t`` normalised by the moments of frames ``0..t`` (what the package
  ships, ``bsrnn.models.cumulative_norm``); a stream carries running sums.
- ``frame``: frame ``t`` normalised by its own moments only (no state at all); swapped in here
  by replacing ``bsrnn.models.bsrnn.cumulative_layer_norm`` for this process.

and ``reference`` (the non-causal model) is trained beside them as the ceiling. Each variant is
trained with the real trainer (``bsrnn.train``) on the demo set, same seed, same data order,
same steps, then its last checkpoint is scored on the demo test split (whole utterances) with
the package's metrics, as ``bsrnn evaluate`` does. One seed per variant: differences within a
few hundredths of PESQ are noise at this budget.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/causal_norm.py /tmp/causal_norm --steps 480

Measured 2026-12-06 (AMD EPYC, 2 shared cores; N 16, L 2, batch 8, 0.5 s crops, 480 steps, seed
3; validation on whole utterances; BENCHMARKS.md has the table): test PESQ / STOI of the last
checkpoint 1.549 / 0.794 reference, 1.491 / 0.746 cumulative, 1.258 / 0.593 per-frame.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

VARIANTS = ("reference", "cumulative", "frame")


def frame_layer_norm(x: torch.Tensor, time_dim: int, feature_dims: tuple[int, ...], eps: float,
                     carried: object = None) -> tuple[torch.Tensor, None]:
    """The per-frame candidate: each frame's own mean and variance over ``feature_dims``."""
    mean = x.mean(feature_dims, keepdim=True)
    variance = x.var(feature_dims, keepdim=True, unbiased=False)
    return (x - mean) * torch.rsqrt(variance + eps), None


def train_variant(variant: str, run_dir: Path, steps: int, seed: int) -> None:
    from bsrnn import Config, train
    import bsrnn.models.bsrnn as network

    if variant == "frame":
        network.cumulative_layer_norm = frame_layer_norm  # type: ignore[assignment]
    steps_per_epoch = 48 // 8
    config = Config(demo=True, num_channel=16, num_layer=2, batch_size=8, cut_len=8000, log_interval=60,
                    pesq_workers=1, seed=seed, epochs=math.ceil(steps / steps_per_epoch),
                    causal=variant != "reference", save_model_dir=str(run_dir))
    result = train(config)
    if result.exit_code != 0:
        raise SystemExit(f"{variant}: training exited {result.exit_code}")


def test_scores(run_dir: Path) -> dict[str, float]:
    from bsrnn.data import demo_corpus, load_pair
    from bsrnn.enhancement import enhance_waveform, load_generator
    from bsrnn.metrics import score_files

    generator = load_generator(run_dir, "last")
    jobs = []
    for pair in demo_corpus(seed=0).test:
        clean, noisy = load_pair(pair)
        jobs.append((pair.name, clean, enhance_waveform(generator.enhancer, noisy)))
    scores = score_files(jobs, workers=1, progress=False)
    return {name: float(np.nanmean([score.metrics()[name] for score in scores])) for name in ("pesq", "stoi")}


def validation(run_dir: Path) -> dict[str, float]:
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
              if '"event": "epoch"' in line]
    return {"val_pesq_last": epochs[-1]["val_pesq"], "val_pesq_best": max(e["val_pesq"] for e in epochs),
            "val_recon_last": epochs[-1]["val_recon"], "steps": epochs[-1]["global_step"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder for one run directory per variant")
    parser.add_argument("--steps", type=int, default=480)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--variant", choices=VARIANTS, help="train and score this one only (one per process: "
                        "the frame variant patches the network module)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.variant is None:  # each variant in its own process
        import subprocess

        for variant in VARIANTS:
            subprocess.run([sys.executable, __file__, str(args.out), "--steps", str(args.steps), "--seed",
                            str(args.seed), "--variant", variant], check=True)
        for variant in VARIANTS:
            print(variant, (args.out / f"{variant}.json").read_text())
        return 0
    run_dir = args.out / args.variant
    train_variant(args.variant, run_dir, args.steps, args.seed)
    result = {**validation(run_dir), **test_scores(run_dir)}
    (args.out / f"{args.variant}.json").write_text(json.dumps(result))
    print(args.variant, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
