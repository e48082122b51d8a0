"""Training on perceptually contrast-stretched targets (``pcs_target``, on in the improved recipe):
the target keeps the clean's energy and raises its contrast; the reconstruction terms aim at it;
the discriminator and PESQ keep seeing the real clean signal; off, nothing changes."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from bsrnn.audio import stft
from bsrnn.config import Config
from bsrnn.losses import Objective, compressed_magnitude, generator_loss
from bsrnn.metrics.pesq_pool import PesqPool
from bsrnn.pcs import perceptual_contrast_stretch, stretched_target
from bsrnn.training.builders import build_networks, objective_of
from bsrnn.training.steps import validate

CPU = torch.device("cpu")


def voiced(items: int = 2, samples: int = 8000, seed: int = 0) -> torch.Tensor:
    """Speech-like crops (a voice-pitch tone and a 1 kHz partial, modulated, over a little noise) at a speech level, one per item."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / 16000
    rows = [(0.2 * np.sin(2 * np.pi * (140 + 50 * i) * t) + 0.1 * np.sin(2 * np.pi * 1000 * t)) * (1 + np.sin(2 * np.pi * 3 * t))
            + 0.01 * rng.standard_normal(samples) for i in range(items)]
    return torch.from_numpy(np.stack(rows).astype(np.float32))


def test_a_stretched_target_keeps_each_items_energy_and_raises_its_contrast() -> None:
    clean = voiced() * torch.tensor([[1.0], [0.1]])  # two levels: the stretch depends on the level
    spectrum = stft(clean)
    target = stretched_target(spectrum)
    energy = spectrum.abs().square().sum(dim=(1, 2))
    assert torch.allclose(target.abs().square().sum(dim=(1, 2)), energy, rtol=1e-4)
    assert torch.allclose(torch.angle(target), torch.angle(spectrum), atol=1e-4)  # phase kept
    # More contrast where the exponent is constant (400-4400 Hz): a loud partial (1 kHz) gains on
    # the weak noise around it, more at the louder level, where the power law bites.
    gains = []
    for item in range(2):
        band = slice(16, 128)  # bins 500-3969 Hz
        before, after = spectrum[item, band].abs(), target[item, band].abs()
        gains.append(float((after.max() / after.median()) / (before.max() / before.median())))
    assert gains[0] > 1.5 and gains[1] > 1.05 and gains[0] > gains[1]
    # Without the energy step, the stretch alone makes the signal louder.
    assert (perceptual_contrast_stretch(spectrum).abs().square().sum(dim=(1, 2)) > 1.5 * energy).all()


def test_a_silent_item_stays_silent_and_a_real_tensor_is_refused() -> None:
    clean = voiced()
    clean[1] = 0.0
    target = stretched_target(stft(clean))
    assert torch.isfinite(torch.view_as_real(target)).all()
    assert target[1].abs().max() == 0.0
    with pytest.raises(ValueError, match=r"expected a complex spectrum \[batch, 257, frames\]"):
        stretched_target(stft(clean).abs())


def test_the_gan_term_scores_against_the_discriminator_clean_input_when_one_is_given() -> None:
    calls: list[torch.Tensor] = []

    def discriminator(condition: torch.Tensor, estimate: torch.Tensor) -> torch.Tensor:
        calls.append(condition)
        return (condition - estimate).mean(dim=(1, 2, 3))[:, None]

    clean_spec, est_spec = stft(voiced(seed=1)), stft(voiced(seed=2) * 0.5)
    target = stretched_target(clean_spec)
    real_clean = compressed_magnitude(clean_spec)
    generator_loss(est_spec, target, discriminator, [0.5, 0.5, 1.0], discriminator_clean_mag=real_clean)
    generator_loss(est_spec, target, discriminator, [0.5, 0.5, 1.0])
    assert calls[0] is real_clean
    assert torch.equal(calls[1], compressed_magnitude(target))  # not given: the target's own


class Recorder:
    """Wraps the discriminator's forward and keeps the clean input of every call."""

    def __init__(self, forward: Callable[..., torch.Tensor]) -> None:
        self.forward = forward
        self.clean_inputs: list[torch.Tensor] = []

    def __call__(self, clean: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        self.clean_inputs.append(clean.detach().clone())
        return self.forward(clean, other)


@pytest.mark.parametrize("pcs_target", [False, True])
def test_the_reconstruction_aims_at_the_stretched_clean_and_the_discriminator_sees_the_real_one(
        pcs_target: bool) -> None:
    """A "generator" that outputs the stretched clean exactly (it is given the clean as its
    noisy input): its reconstruction loss is ~0 with stretched targets and clearly not without;
    either way the discriminator's clean input is the real clean signal's magnitude. (The
    consistency term is left out: a stretched spectrum is not the STFT of any signal.)"""
    config = Config.from_recipe("improved", num_channel=4, num_layer=1, ndf=4, cut_len=8000, pcs_target=pcs_target,
                                consistency_loss_weight=0.0)
    objective = objective_of(config)
    assert objective.pcs_target is pcs_target and objective.needs_waveform
    nets = build_networks(config, CPU)
    nets.run_generator = stretched_target
    recorder = Recorder(nets.discriminator)
    nets.run_discriminator = recorder
    clean = voiced(seed=3)
    with PesqPool(workers=0) as pool:
        sums = validate(nets, [(clean, clean.clone())], use_gan=False, loss_weights=config.loss_weights,
                        pesq_pool=pool, device=CPU, objective=objective)
    reconstruction = sums["recon"] / sums["items"]
    if pcs_target:
        assert reconstruction < 1e-6
    else:
        assert reconstruction > 1e-3
    real_clean = compressed_magnitude(stft(clean), objective.compress_factor)
    assert recorder.clean_inputs and all(torch.equal(seen, real_clean) for seen in recorder.clean_inputs)
    # PESQ is scored against the real clean too: the stretched estimate is near-transparent but not the clean.
    assert 3.0 < sums["pesq_sum"] / sums["pesq_count"] < 4.64


def test_the_reference_trains_on_the_clean_targets_and_improved_on_stretched_ones() -> None:
    assert Objective().pcs_target is False
    assert objective_of(Config()).pcs_target is False
    assert objective_of(Config.from_recipe("improved")).pcs_target is True
    assert objective_of(Config.from_recipe("improved", pcs_target=False)).pcs_target is False
