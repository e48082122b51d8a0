"""The learning-rate rule on resume: each schedule field is the checkpoint's unless given."""

from __future__ import annotations

import math

import pytest
import torch

from bsrnn.config import Config
from bsrnn.training.resume import reconcile
from bsrnn.training.schedule import apply_resume_rule, learning_rate_schedule


def _trained(config: Config, epochs: int) -> tuple[dict, dict]:
    """Optimizer and scheduler states after ``epochs`` epochs of a fresh run."""
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.init_lr)
    scheduler = learning_rate_schedule(optimizer, config)
    for _ in range(epochs):
        optimizer.step()
        scheduler.step()
    return optimizer.state_dict(), scheduler.state_dict()


def _resumed(saved: tuple[dict, dict], run: Config, explicit: dict, epochs_after: int) -> list[float]:
    """Learning rates of each epoch after resuming ``run``'s state with ``explicit`` fields."""
    config = reconcile(run.replace(**explicit), set(explicit), run.to_dict(), "checkpoint")
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.init_lr)
    scheduler = learning_rate_schedule(optimizer, config)
    optimizer.load_state_dict(saved[0])
    scheduler.load_state_dict(saved[1])
    apply_resume_rule(optimizer, scheduler, config, restart="init_lr" in explicit)
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


COSINE = Config(init_lr=1e-3, lr_schedule="cosine", epochs=4)


def _half_cosine(epoch: int, epochs: int, init_lr: float = 1e-3) -> float:
    return init_lr * 0.5 * (1 + math.cos(math.pi * epoch / epochs))


def test_the_cosine_schedule_falls_from_init_lr_to_zero_at_the_target_epochs() -> None:
    rates = _resumed(_trained(COSINE, 0), COSINE, {}, 5)
    assert rates == pytest.approx([_half_cosine(epoch, 4) for epoch in range(5)], abs=1e-15)
    assert rates[0] == 1e-3 and rates[4] == pytest.approx(0.0, abs=1e-15)


def test_a_cosine_resume_continues_the_curve_exactly() -> None:
    straight = _resumed(_trained(COSINE, 0), COSINE, {}, 4)
    assert _resumed(_trained(COSINE, 2), COSINE, {}, 2) == straight[2:]


def test_raising_epochs_on_a_cosine_run_stretches_the_curve_from_the_next_epoch() -> None:
    rates = _resumed(_trained(COSINE, 2), COSINE, {"epochs": 8}, 3)
    assert rates == pytest.approx([_half_cosine(2, 4), _half_cosine(3, 8), _half_cosine(4, 8)], rel=1e-12)


def test_an_explicit_init_lr_scales_the_cosine_curve_from_the_runs_epoch() -> None:
    rates = _resumed(_trained(COSINE, 2), COSINE, {"init_lr": 1e-4}, 2)
    assert rates == pytest.approx([_half_cosine(2, 4, 1e-4), _half_cosine(3, 4, 1e-4)], rel=1e-12)


def test_switching_the_schedule_on_resume_keeps_this_epochs_rate_and_the_epoch_count() -> None:
    to_cosine = _resumed(_trained(RUN, 3), RUN, {"lr_schedule": "cosine", "epochs": 4}, 2)
    assert to_cosine == pytest.approx([5e-4, _half_cosine(4, 4)], abs=1e-15)
    to_step = _resumed(_trained(COSINE, 2), COSINE, {"lr_schedule": "step", "decay_epoch": 2,
                                                     "lr_decay": 0.5}, 3)
    assert to_step == pytest.approx([_half_cosine(2, 4), _half_cosine(2, 4), _half_cosine(2, 4) / 2], rel=1e-12)
