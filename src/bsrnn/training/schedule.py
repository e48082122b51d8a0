"""The learning-rate schedule of both optimizers, and the one rule for it on resume.

The schedule is the reference recipe's: ``StepLR`` with ``step_size = decay_epoch`` and
``gamma = lr_decay``, stepped at the end of every epoch, starting from ``init_lr``.

On resume, each schedule field follows the rule every config field follows (``reconcile``):
the checkpoint's value unless the user gave one explicitly. What that means for the rate the
optimizers use from the resume on:

- ``decay_epoch`` and ``lr_decay``: the resolved config's values (the checkpoint's, or the
  explicit ones), applied to the restored schedulers; the epoch count is the checkpoint's, so
  the next decay comes at the next multiple of ``decay_epoch``.
- ``init_lr`` not given: the checkpoint's current rate, exactly (a resumed run is the run).
- ``init_lr`` given (fine-tuning): both optimizers and both schedulers restart from it, and
  decay continues from there at the same epoch boundaries.

Applied in one place (``apply_resume_rule``) through the schedulers' own ``state_dict`` and
``load_state_dict``, never by patching their attributes.
"""

from __future__ import annotations

import torch

from bsrnn.config import Config

SCHEDULE_FIELDS = ("init_lr", "decay_epoch", "lr_decay")


def step_decay(optimizer: torch.optim.Optimizer, config: Config) -> torch.optim.lr_scheduler.StepLR:
    """A fresh run's schedule."""
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.decay_epoch, gamma=config.lr_decay)


def apply_resume_rule(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.StepLR,
                      config: Config, init_lr_given: bool) -> None:
    """Make a restored optimizer and scheduler follow the resume rule (module docstring)."""
    state = scheduler.state_dict()
    state["step_size"], state["gamma"] = config.decay_epoch, config.lr_decay
    if init_lr_given:
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] = config.init_lr
        state["base_lrs"] = [config.init_lr] * len(optimizer.param_groups)
        state["_last_lr"] = [config.init_lr] * len(optimizer.param_groups)
    scheduler.load_state_dict(state)
