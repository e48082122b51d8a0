"""The one-step-delayed discriminator (``--delayed-discriminator``): what it learns from, its
first step, the held batch in checkpoints (exact resume), and the default path left alone."""

from __future__ import annotations

import copy
import io
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bsrnn import keys
from bsrnn.audio import istft, stft
from bsrnn.config import Config
from bsrnn.losses import REFERENCE_OBJECTIVE, compressed_magnitude, discriminator_loss
from bsrnn.metrics.pesq_pool import PesqPool
from bsrnn.training.distributed import DistributedContext
from bsrnn.training.steps import DelayedDiscriminator, Networks, StepResult, train_step
from bsrnn.training.builders import build_networks
from e2e import STEPS_PER_EPOCH, TINY, assert_same_training_state, bsrnn, checkpoint, events, preempted_run

CPU = torch.device("cpu")
GRAD_CLIP = 5.0
COMPRESS = REFERENCE_OBJECTIVE.compress_factor


def speech_like(seed: int, items: int = 2, samples: int = 8000) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean, noisy) crops that PESQ scores (voiced, modulated tones), different per seed."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / 16000
    clean = np.stack([0.3 * np.sin(2 * np.pi * (120 + 60 * i + 30 * seed) * t) * (1 + np.sin(2 * np.pi * 3 * t))
                      for i in range(items)]).astype(np.float32)
    noisy = (clean + 0.05 * rng.standard_normal(clean.shape)).astype(np.float32)
    return torch.from_numpy(clean), torch.from_numpy(noisy)


BATCHES = [speech_like(seed) for seed in range(3)]


class Recorder:
    """Wraps the discriminator's forward and keeps the inputs of every call."""

    def __init__(self, forward: Callable[..., torch.Tensor]) -> None:
        self.forward = forward
        self.calls: list[tuple[torch.Tensor, ...]] = []

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(item.detach().clone() for item in inputs))
        return self.forward(*inputs)


def networks() -> Networks:
    nets = build_networks(Config(num_channel=4, num_layer=1, ndf=4, cut_len=8000), CPU)
    nets.run_discriminator = Recorder(nets.discriminator)
    return nets


def step(nets: Networks, batch: tuple[torch.Tensor, torch.Tensor], pool: PesqPool,
         delayed: DelayedDiscriminator | None, use_gan: bool = False) -> StepResult:
    torch.manual_seed(11)  # the discriminator's dropout draws from the global stream
    return train_step(nets, *batch, use_gan=use_gan, loss_weights=[0.5, 0.5, 1.0], grad_clip=GRAD_CLIP,
                      pesq_pool=pool, context=DistributedContext(), delayed=delayed)


def weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in module.state_dict().items()}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


# --------------------------------------------------------------------------- step semantics
def test_the_first_delayed_step_trains_the_generator_and_leaves_the_discriminator_alone() -> None:
    nets = networks()
    before = weights(nets.discriminator)
    generator_before = weights(nets.generator)
    delayed = DelayedDiscriminator()
    with PesqPool(workers=0) as pool:
        result = step(nets, BATCHES[0], pool, delayed)
    assert not result.nonfinite and math.isfinite(result.values["loss"])
    assert nets.run_discriminator.calls == []  # no GAN term here, and no discriminator update
    assert_same(weights(nets.discriminator), before)
    assert any(not torch.equal(value, generator_before[name]) for name, value in weights(nets.generator).items())
    assert math.isnan(result.values["disc_loss"]) and math.isnan(result.values["pesq"])
    assert result.values["pesq_valid"] == 0 and result.pesq_wait_s == 0.0
    assert delayed.held is not None


def test_the_delayed_discriminator_at_step_t_learns_step_t_minus_1s_batch_as_computed_by_hand() -> None:
    """Step 1's discriminator update is the reference update on batch 0, with the generator's
    estimate from before its step-0 update and that estimate's PESQ; batch 1 is not seen."""
    nets = networks()
    generator_0 = copy.deepcopy(nets.generator)  # the generator that enhanced batch 0
    discriminator_0 = copy.deepcopy(nets.discriminator)
    delayed = DelayedDiscriminator()
    with PesqPool(workers=1) as pool:
        step(nets, BATCHES[0], pool, delayed)
        result = step(nets, BATCHES[1], pool, delayed)
        # By hand: batch 0 through the step-0 generator, its PESQ, one discriminator update.
        clean, noisy = BATCHES[0]
        est_spec = generator_0(stft(noisy)).detach()  # with autograd on, as in the step: the same kernels
        clean_mag, est_mag = compressed_magnitude(stft(clean), COMPRESS), compressed_magnitude(est_spec, COMPRESS)
        noisy_mag = compressed_magnitude(stft(noisy), COMPRESS)
        est_audio = istft(est_spec, length=clean.shape[-1])
        enhanced = pool.score(list(clean.numpy()), list(est_audio.numpy()))
        noisy_scores = pool.score(list(est_audio.numpy()), list(noisy.numpy()))
    assert enhanced.valid.all(), "the test crops must be scored"
    calls = nets.run_discriminator.calls
    assert len(calls) == 3  # D(clean, est), D(clean, clean), D(est, noisy): batch 0's
    assert torch.equal(calls[0][0], clean_mag) and torch.equal(calls[0][1], est_mag)
    assert torch.equal(calls[2][1], noisy_mag)
    assert not torch.equal(calls[0][0], compressed_magnitude(stft(BATCHES[1][0]), COMPRESS))
    assert result.values["pesq"] == pytest.approx(float(enhanced.scores.mean()), abs=0)

    optimizer = torch.optim.Adam(discriminator_0.parameters(), lr=Config().init_lr)
    torch.manual_seed(11)
    loss = discriminator_loss(discriminator_0, clean_mag, est_mag, noisy_mag, torch.from_numpy(enhanced.scores),
                              torch.from_numpy(noisy_scores.scores))
    loss.total.backward()
    torch.nn.utils.clip_grad_norm_(discriminator_0.parameters(), max_norm=GRAD_CLIP)
    optimizer.step()
    assert result.values["disc_loss"] == loss.total.item()
    assert_same(weights(nets.discriminator), weights(discriminator_0))


def test_the_default_step_still_trains_the_discriminator_on_its_own_batch_at_once() -> None:
    nets = networks()
    before = weights(nets.discriminator)
    with PesqPool(workers=0) as pool:
        result = step(nets, BATCHES[0], pool, delayed=None)
    calls = nets.run_discriminator.calls
    assert len(calls) == 3 and torch.equal(calls[0][0], compressed_magnitude(stft(BATCHES[0][0]), COMPRESS))
    assert math.isfinite(result.values["disc_loss"]) and result.values["pesq_valid"] == 2
    assert any(not torch.equal(value, before[name]) for name, value in weights(nets.discriminator).items())


def test_the_generator_gan_term_uses_the_current_discriminator_on_the_current_batch() -> None:
    nets = networks()
    delayed = DelayedDiscriminator()
    with PesqPool(workers=0) as pool:
        step(nets, BATCHES[0], pool, delayed, use_gan=True)
    # Step 0 with the GAN term: D's only call is the generator's D(clean, est) on batch 0.
    (call,) = nets.run_discriminator.calls
    assert torch.equal(call[0], compressed_magnitude(stft(BATCHES[0][0]), COMPRESS))


def test_the_held_batch_round_trips_through_a_checkpoint_and_the_next_step_is_identical() -> None:
    nets = networks()
    delayed = DelayedDiscriminator()
    with PesqPool(workers=1) as pool:
        step(nets, BATCHES[0], pool, delayed)
        step(nets, BATCHES[1], pool, delayed)
        buffer = io.BytesIO()
        torch.save({"nets": (nets.generator.state_dict(), nets.discriminator.state_dict(),
                             nets.optimizer_g.state_dict(), nets.optimizer_d.state_dict()),
                    "held": delayed.state_dict()}, buffer)
        buffer.seek(0)
        saved = torch.load(buffer, weights_only=True)  # as a checkpoint is read back
        resumed, restored = networks(), DelayedDiscriminator()
        for obj, state in zip((resumed.generator, resumed.discriminator, resumed.optimizer_g, resumed.optimizer_d),
                              saved["nets"], strict=True):
            obj.load_state_dict(state)
        restored.load_state_dict(saved["held"])
        assert restored.held is not None and isinstance(saved["held"]["enhanced_scores"], torch.Tensor)
        expected = step(nets, BATCHES[2], pool, delayed)
        got = step(resumed, BATCHES[2], pool, restored)
    assert got.values == expected.values
    assert_same(weights(resumed.discriminator), weights(nets.discriminator))
    assert_same(weights(resumed.generator), weights(nets.generator))


def test_a_malformed_held_batch_is_refused_naming_what_is_missing() -> None:
    with pytest.raises(ValueError, match="lacks the tensor.*est_mag"):
        DelayedDiscriminator().load_state_dict({"held": True, "clean_mag": torch.zeros(2, 1, 257, 3)})
    empty = DelayedDiscriminator()
    empty.load_state_dict({"held": False})
    assert empty.held is None and empty.state_dict() == {"held": False}


# ------------------------------------------------------------------------- through the CLI
DELAYED = [*TINY, "--delayed-discriminator"]


def losses(run_dir: Path) -> dict[int, tuple[Any, Any]]:
    """(loss, disc_loss) by global step, NaN as None (NaN != NaN would hide equal logs)."""
    return {e["global_step"]: tuple(None if isinstance(v, float) and math.isnan(v) else v
                                    for v in (e["loss"], e["disc_loss"])) for e in events(run_dir, "step")}


@pytest.mark.slow
def test_a_delayed_run_preempted_mid_epoch_resumes_bit_identical(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    result = bsrnn("train", *DELAYED, "--epochs", "2", "--run-dir", str(reference))
    assert result.returncode == 0, result.stderr
    logged = losses(reference)
    assert logged[1][1] is None and all(disc is not None for step, (_, disc) in logged.items() if step > 1)
    held = checkpoint(reference)[keys.DELAYED_DISCRIMINATOR]
    assert held["held"] and held["clean_mag"].shape[0] == 8

    run_dir = tmp_path / "run"
    preempted_run(run_dir, 2, *DELAYED, "--epochs", "2")
    saved = checkpoint(run_dir)
    assert 0 < saved["step_in_epoch"] < STEPS_PER_EPOCH and saved[keys.DELAYED_DISCRIMINATOR]["held"]
    resumed = bsrnn("train", *DELAYED, "--epochs", "2", "--run-dir", str(run_dir), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert losses(run_dir) == logged
    for name in ("checkpoint_last.pt", "checkpoint_best.pt"):
        assert_same_training_state(checkpoint(run_dir, name), checkpoint(reference, name))
    final, expected = checkpoint(run_dir)[keys.DELAYED_DISCRIMINATOR], held
    assert final.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.equal(final[name], value) if isinstance(value, torch.Tensor) else final[name] == value, name


@pytest.mark.slow
def test_a_default_run_saves_no_held_batch(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = bsrnn("train", *TINY, "--epochs", "1", "--run-dir", str(run_dir), "--max-steps", "1")
    assert result.returncode == 0, result.stderr
    saved = checkpoint(run_dir)
    assert keys.DELAYED_DISCRIMINATOR not in saved and keys.DELAYED_DISCRIMINATOR not in saved["registered"]
    assert saved["config"]["delayed_discriminator"] is False
