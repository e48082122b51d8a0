"""``bsrnn`` with NaN generator losses at chosen global steps: fault injection for tests.

    python tools/nonfinite_bsrnn.py 1,3,4 train --data-dir DATA --run-dir RUN ...

Production code carries no test aids, so the fault is injected from outside: the generator
loss of the real training step is multiplied by NaN when the run's global step (0-based,
counted across resumes) is in the list. That is exactly where a real divergence shows up,
before the update, which the trainer must then skip, count, and stop on at the limit.
Validation losses (computed without gradients) are never touched.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from typing import Any

import torch

from bsrnn.cli.main import main
from bsrnn.training import steps, trainer


def install(poisoned: set[int]) -> None:
    """Patch the trainer so that the steps in ``poisoned`` see a NaN generator loss."""
    running: dict[str, Any] = {}
    original_run = trainer.Trainer.run
    original_loss = steps.generator_loss

    def run(self: trainer.Trainer, max_steps: int | None) -> trainer.TrainResult:
        running["trainer"] = self
        return original_run(self, max_steps)

    def generator_loss(*args: Any, **kwargs: Any) -> Any:
        loss = original_loss(*args, **kwargs)
        current = running.get("trainer")
        if torch.is_grad_enabled() and current is not None and current.progress.global_step in poisoned:
            return dataclasses.replace(loss, total=loss.total * math.nan)
        return loss

    trainer.Trainer.run = run  # type: ignore[method-assign]
    steps.generator_loss = generator_loss


if __name__ == "__main__":
    install({int(step) for step in sys.argv[1].split(",") if step})
    raise SystemExit(main(sys.argv[2:]))
