"""The learning-rate schedule of both optimizers, and the one rule for it on resume.

Two schedules, chosen by ``lr_schedule`` and stepped at the end of every epoch:

- ``"step"`` (the reference recipe's): ``StepLR`` with ``step_size = decay_epoch`` and
  ``gamma = lr_decay``, starting from ``init_lr``.
- ``"cosine"``: ``init_lr * (1 + cos(pi * epoch / epochs)) / 2``, a half cosine from
  ``init_lr`` to zero at the run's target ``epochs``. A short run anneals to its end instead of
  stopping at a rate still near ``init_lr``; ``decay_epoch`` and ``lr_decay`` are not used. The
  run's length is ``epochs``, never ``--max-steps``, which only stops one invocation: give a
  budgeted run the ``epochs`` its budget covers.

On resume, each schedule field follows the rule every config field follows (``reconcile``):
the checkpoint's value unless the user gave one explicitly. What that means for the rate the
optimizers use from the resume on:

- ``decay_epoch`` and ``lr_decay``: the resolved config's values (the checkpoint's, or the
  explicit ones), applied to the restored schedulers; the epoch count is the checkpoint's, so
  the next decay comes at the next multiple of ``decay_epoch``.
- ``epochs`` raised on a cosine run (training more): the curve stretches to the new target and
  the rate follows it from the next epoch on, so it rises again: a warm restart, logged.
- ``init_lr`` not given: the checkpoint's current rate, exactly (a resumed run is the run).
- ``init_lr`` given (fine-tuning): both optimizers and both schedulers restart from it, and
  decay continues from there at the same epoch boundaries (cosine: the curve scaled to it,
  from the run's epoch on).
- ``lr_schedule`` changed (another recipe, ``--allow-recipe-change``): the current epoch keeps
  the checkpoint's rate; the new schedule takes over at the next epoch boundary, at the epoch
  count the run has reached.

Applied in one place (``apply_resume_rule``) through the schedulers' own ``state_dict`` and
``load_state_dict``, never by patching their attributes. Each schedule loads the other's saved
state by keeping the keys it has itself (the epoch count, the base rates, the last rates).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from bsrnn.config import Config

LRScheduler = torch.optim.lr_scheduler.LRScheduler


def half_cosine(epochs: int) -> Callable[[int], float]:
    """The cosine schedule's factor of ``init_lr`` at each epoch: 1 at epoch 0, 0 at ``epochs``."""
    return lambda epoch: 0.5 * (1.0 + math.cos(math.pi * min(epoch, epochs) / epochs))


class StepDecay(torch.optim.lr_scheduler.StepLR):
    """``StepLR`` that also loads a cosine run's state (its epoch count and rates)."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict({key: value for key, value in state_dict.items() if key in self.__dict__})


class CosineDecay(torch.optim.lr_scheduler.LambdaLR):
    """The half-cosine schedule; loads a step-decay run's state (its epoch count and rates)."""

    def __init__(self, optimizer: torch.optim.Optimizer, epochs: int) -> None:
        super().__init__(optimizer, half_cosine(epochs))

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        own = {key: value for key, value in state_dict.items() if key in self.__dict__}
        super().load_state_dict({**own, "lr_lambdas": [None] * len(self.lr_lambdas)})


def learning_rate_schedule(optimizer: torch.optim.Optimizer, config: Config) -> LRScheduler:
    """A fresh run's schedule, as ``config.lr_schedule`` names it."""
    if config.lr_schedule == "cosine":
        return CosineDecay(optimizer, config.epochs)
    return StepDecay(optimizer, step_size=config.decay_epoch, gamma=config.lr_decay)


def describe_schedule(config: Config, steps_per_epoch: int) -> str:
    """One log line: the schedule and, for cosine, where it ends in steps (a ``--max-steps``
    budget far short of it would stop while the rate is still high)."""
    if config.lr_schedule == "cosine":
        return (f"Learning rate: half cosine from {config.init_lr:g} to 0 at epoch {config.epochs} "
                f"(step {config.epochs * steps_per_epoch} at {steps_per_epoch} steps per epoch)")
    return f"Learning rate: {config.init_lr:g}, x{config.lr_decay:g} every {config.decay_epoch} epoch(s)"


def apply_resume_rule(optimizer: torch.optim.Optimizer, scheduler: LRScheduler,
                      config: Config, restart: bool) -> None:
    """Make a restored optimizer and scheduler follow the resume rule (module docstring); ``restart``:
    an explicit ``--init-lr`` on the resume (``RunPlan.restart_learning_rate``)."""
    state = scheduler.state_dict()
    if isinstance(scheduler, StepDecay):
        state["step_size"], state["gamma"] = config.decay_epoch, config.lr_decay
    if restart:
        factor = half_cosine(config.epochs)(state["last_epoch"]) if isinstance(scheduler, CosineDecay) else 1.0
        for group in optimizer.param_groups:
            group["initial_lr"] = config.init_lr
            group["lr"] = config.init_lr * factor
        state["base_lrs"] = [config.init_lr] * len(optimizer.param_groups)
        state["_last_lr"] = [config.init_lr * factor] * len(optimizer.param_groups)
    scheduler.load_state_dict(state)
