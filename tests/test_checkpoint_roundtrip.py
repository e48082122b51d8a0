"""Everything registered with the manager comes back bit-identical: the next step matches."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from bsrnn.checkpoint import CheckpointManager, RNGStreams, SaveResult, UnsafeStateError, load_checkpoint


class Trainable:
    """A tiny model with two optimizers' worth of state, a scheduler and a grad scaler."""

    def __init__(self, optimizer: str, scheduler: str) -> None:
        torch.manual_seed(0)
        self.model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
        optimizer_class = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[optimizer]
        self.optimizer = optimizer_class(self.model.parameters(), lr=1e-2)
        if scheduler == "step":
            self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=2, gamma=0.5)
        else:
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda epoch: 0.9**epoch)
        self.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
        self.crop_rng = np.random.default_rng(7)
        self.rng = RNGStreams({"crop": self.crop_rng})

    def register(self, manager: CheckpointManager) -> None:
        manager.register("model_state_dict", self.model)
        manager.register("optimizer_state_dict", self.optimizer)
        manager.register("scheduler_G_state_dict", self.scheduler)
        manager.register("scaler", self.scaler)
        manager.register("rng", self.rng)

    def step(self) -> torch.Tensor:
        """One step that draws from every RNG stream, so restored streams are tested too."""
        noise = random.random() + np.random.rand() + float(self.crop_rng.random())
        x = torch.randn(16, 4) + noise
        loss = self.model(x).pow(2).mean()
        self.optimizer.zero_grad()
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return loss.detach()


@pytest.mark.parametrize("optimizer,scheduler", [("adam", "step"), ("adamw", "lambda")])
def test_restored_state_produces_bit_identical_next_steps(tmp_path: Path, optimizer: str, scheduler: str) -> None:
    original = Trainable(optimizer, scheduler)
    for _ in range(3):
        original.step()
    with CheckpointManager(tmp_path) as manager:
        original.register(manager)
        manager.save(metric=1.0, values={"epoch": 0})
    expected = [original.step() for _ in range(3)]
    expected_weights = {k: v.clone() for k, v in original.model.state_dict().items()}

    random.seed(123)
    np.random.seed(123)
    torch.manual_seed(123)
    restored = Trainable(optimizer, scheduler)  # fresh objects, different RNG positions
    restored.crop_rng.random(5)
    with CheckpointManager(tmp_path) as manager:
        restored.register(manager)
        manager.restore(manager.find("last"))
    actual = [restored.step() for _ in range(3)]

    for a, b in zip(actual, expected):
        assert torch.equal(a, b)
    for name, tensor in restored.model.state_dict().items():
        assert torch.equal(tensor, expected_weights[name]), name
    assert restored.scheduler.get_last_lr() == original.scheduler.get_last_lr()
    assert restored.scaler.get_scale() == original.scaler.get_scale()


def test_async_save_writes_the_state_at_the_time_of_the_call(tmp_path: Path) -> None:
    model = torch.nn.Linear(64, 64)
    manager = CheckpointManager(tmp_path, async_save=True)
    manager.register("model_state_dict", model)
    saved_weight = model.weight.detach().clone()
    manager.save(metric=0.5, values={"epoch": 0})
    with torch.no_grad():
        model.weight.add_(1.0)  # training goes on while the writer works
    manager.close()
    payload = load_checkpoint(tmp_path, "last").payload
    assert torch.equal(payload["model_state_dict"]["weight"], saved_weight)


def test_async_save_reuses_its_staging_buffers(tmp_path: Path) -> None:
    model = torch.nn.Linear(32, 32)
    with CheckpointManager(tmp_path, async_save=True) as manager:
        manager.register("model_state_dict", model)
        manager.save(values={"epoch": 0})
        manager.wait_until_finished()
        buffers_before = {path: buffer.data_ptr() for path, buffer in manager._staging._buffers.items()}
        manager.save(values={"epoch": 1})
        buffers_after = {path: buffer.data_ptr() for path, buffer in manager._staging._buffers.items()}
    assert buffers_before and buffers_before == buffers_after


def test_async_writer_failure_is_raised_at_the_next_call(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, async_save=True)
    manager.register("model_state_dict", torch.nn.Linear(4, 4))

    def failing_commit(payload: dict, is_best: bool) -> None:  # what a full disk does mid-write
        raise OSError(28, "No space left on device")

    manager._commit = failing_commit  # type: ignore[method-assign]
    manager.save(metric=0.5, values={"epoch": 0})  # returns at once; the writer fails later
    with pytest.raises(OSError, match="No space left"):
        manager.save(values={"epoch": 1})
    assert manager.best_value is None  # the failed best is not remembered as best
    manager.close()


@pytest.mark.parametrize("async_save", [False, True])
def test_on_commit_runs_once_the_file_is_durable_and_never_for_a_failed_save(tmp_path: Path, async_save: bool) -> None:
    seen: list[tuple[int, int, bool]] = []

    def on_commit(result: SaveResult) -> None:  # what the trainer prints "✓ Saved" from
        seen.append((load_checkpoint(result.last).payload["epoch"], result.sequence, result.is_best))

    manager = CheckpointManager(tmp_path, async_save=async_save)
    manager.register("model_state_dict", torch.nn.Linear(4, 4))
    manager.save(metric=0.5, values={"epoch": 0}, on_commit=on_commit)
    manager.save(values={"epoch": 1}, on_commit=on_commit)
    manager.wait_until_finished()
    assert seen == [(0, 1, True), (1, 2, False)]

    def failing_commit(payload: dict, is_best: bool) -> None:
        raise OSError(28, "No space left on device")

    manager._commit = failing_commit  # type: ignore[method-assign]
    with pytest.raises(OSError, match="No space left"):
        manager.save(values={"epoch": 2}, on_commit=on_commit)
        manager.wait_until_finished()
    assert len(seen) == 2  # nothing reported for the save that failed
    manager.close()


@pytest.mark.parametrize("async_save", [False, True])
def test_a_failing_on_commit_is_logged_and_never_fails_or_blocks_a_save(
    tmp_path: Path, async_save: bool, caplog: pytest.LogCaptureFixture
) -> None:
    manager = CheckpointManager(tmp_path, async_save=async_save)
    manager.register("model_state_dict", torch.nn.Linear(4, 4))

    def broken(result: SaveResult) -> None:
        raise ValueError("the callback's own bug")

    manager.save(values={"epoch": 0}, on_commit=broken)
    manager.save(values={"epoch": 1}, on_commit=broken)  # not blocked by the first one
    manager.wait_until_finished()
    assert load_checkpoint(tmp_path).payload["epoch"] == 1
    assert "callback after saving" in caplog.text and "the callback's own bug" in caplog.text
    manager.close()


def test_values_that_weights_only_cannot_open_are_refused_before_writing(tmp_path: Path) -> None:
    from dataclasses import dataclass

    @dataclass
    class Settings:
        lr: float = 1e-3

    with CheckpointManager(tmp_path) as manager:
        with pytest.raises(UnsafeStateError, match=r"values\['config'\]"):
            manager.save(values={"config": Settings()})
        manager.save(values={"epoch": np.int64(3), "val_loss": np.float32(0.5), "curve": np.arange(3)})
    payload = load_checkpoint(tmp_path).payload
    assert type(payload["epoch"]) is int and payload["epoch"] == 3
    assert type(payload["val_loss"]) is float
    assert torch.equal(payload["curve"], torch.arange(3))


def test_plain_weights_only_torch_load_in_a_fresh_interpreter_finds_the_spec_keys(tmp_path: Path) -> None:
    generator, discriminator = torch.nn.Linear(2, 2), torch.nn.Linear(2, 1)
    optimizer_g = torch.optim.Adam(generator.parameters())
    optimizer_d = torch.optim.Adam(discriminator.parameters())
    generator(torch.ones(1, 2)).sum().backward()
    optimizer_g.step()
    with CheckpointManager(tmp_path) as manager:
        manager.register("model_state_dict", generator)
        manager.register("discriminator_state_dict", discriminator)
        manager.register("optimizer_state_dict", optimizer_g)
        manager.register("optimizer_disc_state_dict", optimizer_d)
        manager.register("scheduler_G_state_dict", torch.optim.lr_scheduler.StepLR(optimizer_g, 10, 0.98))
        manager.register("scheduler_D_state_dict", torch.optim.lr_scheduler.StepLR(optimizer_d, 10, 0.98))
        manager.register("rng", RNGStreams({"crop": np.random.default_rng(1)}))
        manager.save(metric=0.45, values={"epoch": 0, "val_loss": 0.45, "config": {"num_channel": 64}})
    script = textwrap.dedent(
        f"""
        import sys, torch
        assert "bsrnn" not in sys.modules
        for name in ("checkpoint_last.pt", "checkpoint_best.pt"):
            ckpt = torch.load({str(tmp_path)!r} + "/" + name, weights_only=True)
            keys = ["epoch", "model_state_dict", "discriminator_state_dict", "optimizer_state_dict",
                    "optimizer_disc_state_dict", "scheduler_G_state_dict", "scheduler_D_state_dict",
                    "val_loss", "best_val_loss"]
            missing = [k for k in keys if k not in ckpt]
            assert not missing, missing
            print(name, ckpt["epoch"], ckpt["val_loss"], ckpt["best_val_loss"])
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "checkpoint_best.pt 0 0.45 0.45" in result.stdout
