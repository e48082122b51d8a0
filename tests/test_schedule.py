"""The learning-rate rule on resume: each schedule field is the checkpoint's unless given."""

from __future__ import annotations

import pytest
import torch

from bsrnn.config import Config
from bsrnn.training.resume import reconcile
from bsrnn.training.schedule import apply_resume_rule, step_decay


def _trained(config: Config, epochs: int) -> tuple[dict, dict]:
    """Optimizer and scheduler states after ``epochs`` epochs of a fresh run."""
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.init_lr)
    scheduler = step_decay(optimizer, config)
    for _ in range(epochs):
        optimizer.step()
        scheduler.step()
    return optimizer.state_dict(), scheduler.state_dict()


def _resumed(saved: tuple[dict, dict], run: Config, explicit: dict, epochs_after: int) -> list[float]:
    """Learning rates of each epoch after resuming ``run``'s state with ``explicit`` fields."""
    config = reconcile(run.replace(**explicit), set(explicit), run.to_dict(), "checkpoint")
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.init_lr)
    scheduler = step_decay(optimizer, config)
    optimizer.load_state_dict(saved[0])
    scheduler.load_state_dict(saved[1])
    apply_resume_rule(optimizer, scheduler, config, init_lr_given="init_lr" in explicit)
    rates = []
    for _ in range(epochs_after):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


RUN = Config(init_lr=1e-3, decay_epoch=2, lr_decay=0.5)


def test_a_resume_without_schedule_flags_continues_the_run_exactly() -> None:
    straight = _trained(RUN, 3)
    assert _resumed(straight, RUN, {}, 4) == pytest.approx([5e-4, 2.5e-4, 2.5e-4, 1.25e-4], rel=0, abs=0)


def test_an_explicit_init_lr_restarts_from_it_and_decays_at_the_same_boundaries() -> None:
    assert _resumed(_trained(RUN, 3), RUN, {"init_lr": 1e-4}, 4) == [1e-4, 5e-5, 5e-5, 2.5e-5]


def test_an_init_lr_equal_to_the_default_is_still_the_checkpoints_unless_given() -> None:
    run = RUN.replace(init_lr=2e-3)
    assert _resumed(_trained(run, 1), run, {}, 1) == [2e-3]
    assert _resumed(_trained(run, 1), run, {"init_lr": 1e-3}, 1) == [1e-3]


def test_an_explicit_decay_epoch_moves_the_next_boundaries_and_is_the_checkpoints_otherwise() -> None:
    assert _resumed(_trained(RUN, 3), RUN, {"decay_epoch": 3}, 4) == [5e-4, 5e-4, 5e-4, 2.5e-4]
    assert _resumed(_trained(RUN, 3), RUN, {}, 2) == [5e-4, 2.5e-4]


def test_an_explicit_lr_decay_changes_the_next_decays_only() -> None:
    assert _resumed(_trained(RUN, 3), RUN, {"lr_decay": 0.1}, 4) == pytest.approx([5e-4, 5e-5, 5e-5, 5e-6])
    assert _resumed(_trained(RUN, 3), RUN, {}, 4)[-1] == 1.25e-4
