"""The MetricGAN losses equal hand computations, and PESQ masks work per item."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bsrnn.losses import discriminator_loss, generator_loss, masked_mse, pesq_to_target


class StandInDiscriminator(nn.Module):
    """A per-item score (not the thing under test) that records what it was called with."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.5))
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.calls.append((x, y))
        return (self.scale * (x.mean(dim=(1, 2, 3)) - 2 * y.mean(dim=(1, 2, 3)))).unsqueeze(1)


def _specs() -> tuple[torch.Tensor, torch.Tensor]:
    est = torch.tensor([[[1 + 0j, 0 + 2j]], [[3 + 4j, 0j]]], dtype=torch.complex64)  # [2, 1, 2]
    clean = torch.tensor([[[0 + 1j, 0 + 2j]], [[0j, 1 + 0j]]], dtype=torch.complex64)
    return est, clean


def _mags(batch: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return tuple(torch.rand(batch, 1, 4, 5, generator=gen) for _ in range(3))  # type: ignore[return-value]


def test_generator_loss_without_gan_is_the_weighted_ri_and_magnitude_l1() -> None:
    est, clean = _specs()
    loss = generator_loss(est, clean, weights=(0.5, 0.5, 1.0))
    ri = (math.sqrt(2) + 0 + 5 + 1) / 4
    floor = 1e-10
    mag = (
        abs((1 + floor) ** 0.3 - (1 + floor) ** 0.3)
        + abs((2 + floor) ** 0.3 - (2 + floor) ** 0.3)
        + abs((5 + floor) ** 0.3 - floor**0.3)
        + abs(floor**0.3 - (1 + floor) ** 0.3)
    ) / 4
    assert loss.gan is None
    assert loss.ri.item() == pytest.approx(ri, rel=1e-6)
    assert loss.magnitude.item() == pytest.approx(mag, rel=1e-6)
    assert loss.total.item() == pytest.approx(0.5 * ri + 0.5 * mag, rel=1e-6)


def test_complex_l1_equals_nn_l1loss_as_the_reference_uses_it() -> None:
    est = torch.randn(2, 257, 7, dtype=torch.complex64)
    clean = torch.randn(2, 257, 7, dtype=torch.complex64)
    assert torch.allclose(generator_loss(est, clean).ri, nn.L1Loss()(est, clean))


def test_generator_gan_term_is_mse_of_the_score_of_clean_and_estimate_to_one() -> None:
    est, clean = _specs()
    disc = StandInDiscriminator()
    loss = generator_loss(est, clean, disc, weights=(0.5, 0.5, 2.0))
    (x, y), = disc.calls
    prediction = disc(x, y).flatten()
    assert loss.gan is not None
    assert loss.gan.item() == pytest.approx(((prediction - 1) ** 2).mean().item(), rel=1e-6)
    assert loss.total.item() == pytest.approx(
        0.5 * loss.ri.item() + 0.5 * loss.magnitude.item() + 2.0 * loss.gan.item(), rel=1e-6
    )
    assert set(loss.as_floats()) == {"loss", "loss_ri", "loss_mag", "loss_gan"}


def test_discriminator_loss_with_all_items_valid_is_the_reference_sum() -> None:
    clean, est, noisy = _mags()
    disc = StandInDiscriminator()
    pesq_e, pesq_n = torch.tensor([3.0, 2.0, 4.0]), torch.tensor([1.5, 1.2, 2.5])
    loss = discriminator_loss(disc, clean, est, noisy, pesq_e, pesq_n)
    with torch.no_grad():
        expected = (
            F.mse_loss(disc(clean, clean).flatten(), torch.ones(3))
            + F.mse_loss(disc(clean, est).flatten(), (pesq_e + 0.5) / 5)
            + F.mse_loss(disc(est, noisy).flatten(), (pesq_n + 0.5) / 5)
        )
    assert torch.equal(loss.total.detach(), expected)
    assert (loss.enhanced_valid, loss.noisy_valid) == (3, 3)


def test_discriminator_is_called_as_the_reference_calls_it() -> None:
    clean, est, noisy = _mags()
    disc = StandInDiscriminator()
    discriminator_loss(disc, clean, est, noisy, [3.0] * 3, [2.0] * 3)
    pairs = [(x.data_ptr(), y.data_ptr()) for x, y in disc.calls]
    assert pairs == [
        (clean.data_ptr(), est.data_ptr()),
        (clean.data_ptr(), clean.data_ptr()),
        (est.data_ptr(), noisy.data_ptr()),
    ]
    disc.calls.clear()
    discriminator_loss(disc, clean, est, noisy, [3.0] * 3, [2.0] * 3, noisy_pair="clean")
    assert (disc.calls[2][0].data_ptr(), disc.calls[2][1].data_ptr()) == (clean.data_ptr(), noisy.data_ptr())


def test_a_masked_item_does_not_contribute() -> None:
    clean, est, noisy = _mags()
    disc = StandInDiscriminator()
    valid = [True, False, True]
    first = discriminator_loss(disc, clean, est, noisy, [3.0, float("nan"), 4.0], [1.5, -1.0, 2.5], valid, valid)
    second = discriminator_loss(disc, clean, est, noisy, [3.0, 99.0, 4.0], [1.5, 42.0, 2.5], valid, valid)
    assert torch.equal(first.total, second.total)
    keep = torch.tensor([0, 2])
    subset = discriminator_loss(disc, clean[keep], est[keep], noisy[keep], [3.0, 4.0], [1.5, 2.5])
    assert first.enhanced.item() == pytest.approx(subset.enhanced.item(), rel=1e-6)
    assert first.noisy.item() == pytest.approx(subset.noisy.item(), rel=1e-6)
    assert (first.enhanced_valid, first.noisy_valid) == (2, 2)


def test_an_all_masked_term_is_zero_and_still_gives_finite_gradients() -> None:
    clean, est, noisy = _mags()
    disc = StandInDiscriminator()
    nan = float("nan")
    none_valid = torch.zeros(3, dtype=torch.bool)
    loss = discriminator_loss(disc, clean, est, noisy, [nan] * 3, [nan] * 3, [False] * 3, none_valid)
    assert loss.enhanced.item() == 0.0 and loss.noisy.item() == 0.0
    assert torch.equal(loss.total, loss.clean)
    loss.total.backward()
    assert disc.scale.grad is not None and torch.isfinite(disc.scale.grad)


def test_discriminator_loss_sends_no_gradient_to_the_estimate() -> None:
    clean, est, noisy = _mags()
    est.requires_grad_(True)
    loss = discriminator_loss(StandInDiscriminator(), clean, est, noisy, [3.0] * 3, [2.0] * 3)
    loss.total.backward()
    assert est.grad is None


def test_masked_mse_with_every_item_valid_is_f_mse_loss() -> None:
    prediction, target = torch.rand(4), torch.rand(4)
    assert torch.equal(masked_mse(prediction, target, torch.ones(4, dtype=torch.bool)), F.mse_loss(prediction, target))


def test_pesq_maps_to_the_discriminator_scale() -> None:
    assert torch.allclose(pesq_to_target(torch.tensor([-0.5, 4.5, 2.0])), torch.tensor([0.0, 1.0, 0.5]))


def test_wrong_mask_or_score_counts_are_refused() -> None:
    clean, est, noisy = _mags()
    with pytest.raises(ValueError, match="valid mask has 2 entries"):
        discriminator_loss(StandInDiscriminator(), clean, est, noisy, [3.0] * 3, [2.0] * 3, [True, True])
    with pytest.raises(ValueError, match="got 2 PESQ scores"):
        discriminator_loss(StandInDiscriminator(), clean, est, noisy, [3.0] * 2, [2.0] * 3)


# ----------------------------------------------------------------------------- recipe ingredients
from bsrnn.audio import istft, stft  # noqa: E402
from bsrnn.losses import (  # noqa: E402
    Objective,
    anti_wrapped,
    compressed_magnitude,
    compressed_spectrum,
    consistency_loss,
    phase_losses,
    phase_of,
)

EVERYTHING_ON = Objective(complex_loss="compressed_mse", magnitude_loss="mse", linear_weight=0.2, phase_weight=0.3,
                          time_weight=0.2, consistency_weight=0.1)


def _signal(batch: int = 2, samples: int = 4000, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, samples, generator=torch.Generator().manual_seed(seed)) * 0.1


def test_compressed_magnitude_is_the_power_law_with_floor_and_adds_a_channel() -> None:
    spec = torch.tensor([[[0.0 + 0.0j, 8.0 + 0.0j], [0.0 + 1.0j, 3.0 - 4.0j]]], dtype=torch.complex64)
    compressed = compressed_magnitude(spec)
    assert compressed.shape == (1, 1, 2, 2)
    expected = torch.tensor([[(1e-10) ** 0.3, 8.0**0.3], [1.0, 5.0**0.3]])
    assert torch.allclose(compressed[0, 0], expected, rtol=1e-6)
    with pytest.raises(ValueError, match=r"\[B, 257, T\]"):
        compressed_magnitude(torch.zeros(257, 10, dtype=torch.complex64))


def test_every_new_term_is_zero_when_the_estimate_is_the_clean_signal() -> None:
    clean = _signal()
    spec = stft(clean)
    audio = istft(spec, length=clean.shape[-1])
    loss = generator_loss(spec.clone(), spec, objective=EVERYTHING_ON, est_audio=audio, clean_audio=audio.clone())
    assert loss.ri.item() == 0.0 and loss.magnitude.item() == 0.0
    assert loss.linear is not None and loss.linear.item() == 0.0
    assert loss.phase is not None and loss.phase.item() == 0.0
    assert loss.time is not None and loss.time.item() == 0.0
    # The STFT of the resynthesised signal is the spectrum again, up to float rounding.
    assert loss.consistency is not None and loss.consistency.item() < 1e-8


def test_the_total_is_the_weighted_sum_and_the_reconstruction_leaves_out_the_gan_term() -> None:
    clean, noisy = _signal(seed=1), _signal(seed=2)
    est_spec, clean_spec = stft(noisy), stft(clean)
    est_audio = istft(est_spec, length=noisy.shape[-1])
    loss = generator_loss(est_spec, clean_spec, StandInDiscriminator(), (0.1, 0.9, 0.05), objective=EVERYTHING_ON,
                          est_audio=est_audio, clean_audio=clean)
    terms = (loss.ri, loss.magnitude, loss.linear, loss.phase, loss.time, loss.consistency, loss.gan)
    assert all(term is not None and term.item() > 0 for term in terms)
    reconstruction = (0.1 * loss.ri + 0.9 * loss.magnitude + 0.2 * loss.linear + 0.3 * loss.phase + 0.2 * loss.time
                      + 0.1 * loss.consistency)
    assert loss.reconstruction is not None
    assert loss.reconstruction.item() == pytest.approx(reconstruction.item(), rel=1e-6)
    assert loss.total.item() == pytest.approx(reconstruction.item() + 0.05 * loss.gan.item(), rel=1e-6)
    assert {"loss_linear", "loss_phase", "loss_time", "loss_consistency", "loss_gan"} <= set(loss.as_floats())
    # The linear term beside a compressed complex term is the reference's complex loss.
    reference_ri = generator_loss(est_spec, clean_spec).ri
    assert loss.linear.item() == reference_ri.item()


def test_the_reference_objective_computes_no_extra_term_and_its_reconstruction_is_its_total() -> None:
    est, clean = _specs()
    loss = generator_loss(est, clean)
    assert (loss.linear, loss.phase, loss.time, loss.consistency) == (None, None, None, None)
    assert loss.reconstruction is loss.total


def test_anti_wrapping_ignores_whole_turns_and_measures_the_shortest_way_round() -> None:
    difference = torch.linspace(-3.0, 3.0, 13)
    turns = torch.randint(-5, 6, (13,), generator=torch.Generator().manual_seed(0)).float()
    assert torch.allclose(anti_wrapped(difference + 2 * math.pi * turns), difference.abs(), atol=1e-5)
    assert torch.allclose(anti_wrapped(torch.tensor([3 * math.pi / 2])), torch.tensor([math.pi / 2]))
    assert float(anti_wrapped(torch.randn(1000) * 50).max()) <= math.pi + 1e-5


def test_phase_losses_are_invariant_to_2pi_shifts_of_any_bin() -> None:
    generator = torch.Generator().manual_seed(1)
    clean_phase = (torch.rand(2, 257, 20, generator=generator) * 2 - 1) * math.pi
    est_phase = (torch.rand(2, 257, 20, generator=generator) * 2 - 1) * math.pi
    shifted = est_phase + 2 * math.pi * torch.randint(-3, 4, est_phase.shape, generator=generator).float()
    for original, moved in zip(phase_losses(est_phase, clean_phase), phase_losses(shifted, clean_phase), strict=True):
        assert moved.item() == pytest.approx(original.item(), abs=1e-4)
    assert all(term.item() == 0.0 for term in phase_losses(clean_phase, clean_phase))
    assert all(term.item() > 0 for term in phase_losses(est_phase, clean_phase))


def test_group_delay_and_instantaneous_frequency_see_only_differences_along_their_axes() -> None:
    phase = torch.rand(1, 257, 10)
    # A constant offset in every bin changes the instantaneous phase only; a per-bin offset
    # that is constant over time leaves the instantaneous frequency alone.
    _, gd, iaf = phase_losses(phase + 0.5, phase)
    assert (gd.item(), iaf.item()) == pytest.approx((0.0, 0.0), abs=1e-6)
    _, gd, iaf = phase_losses(phase + torch.linspace(0, 1, 257).view(1, 257, 1), phase)
    assert gd.item() > 0 and iaf.item() == pytest.approx(0.0, abs=1e-6)


def test_every_new_term_has_finite_gradients_even_at_silent_bins() -> None:
    clean = _signal(seed=3)
    clean[:, :1000] = 0.0  # digital silence: exactly zero bins in the clean spectrum
    est_spec = stft(_signal(seed=4)).detach()
    est_spec[:, :5, :] = 0  # and in the estimate
    est_spec.requires_grad_(True)
    est_audio = istft(est_spec, length=clean.shape[-1])
    loss = generator_loss(est_spec, stft(clean), objective=EVERYTHING_ON, est_audio=est_audio, clean_audio=clean)
    loss.total.backward()
    assert est_spec.grad is not None and bool(torch.isfinite(est_spec.grad).all())
    assert bool(torch.isfinite(phase_of(torch.zeros(3, dtype=torch.complex64))).all())


def test_a_compressed_spectrum_keeps_the_phase_and_compresses_the_magnitude() -> None:
    spec = torch.tensor([3 + 4j, -0.01j, 0j], dtype=torch.complex64)
    compressed = compressed_spectrum(spec, 0.3)
    assert torch.allclose(compressed.abs()[:2], torch.tensor([5.0, 0.01]) ** 0.3, rtol=1e-3)
    assert torch.allclose(torch.angle(compressed[:2]), torch.angle(spec[:2]))
    assert compressed[2] == 0


def test_the_consistency_loss_is_positive_for_a_spectrum_no_signal_has() -> None:
    spec = torch.randn(1, 257, 30, dtype=torch.complex64, generator=torch.Generator().manual_seed(5))
    audio = istft(spec, length=128 * 29)
    assert consistency_loss(spec, audio).item() > 0.01


def test_the_normalized_metric_target_maps_pesq_1_to_0_and_4_5_to_1() -> None:
    assert torch.allclose(pesq_to_target(torch.tensor([1.0, 4.5]), "normalized"), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="metric target"):
        pesq_to_target(torch.tensor([1.0]), "raw")  # type: ignore[arg-type]


def test_without_the_noisy_term_the_discriminator_is_called_twice_and_learns_normalized_pesq() -> None:
    clean, est, noisy = _mags()
    disc = StandInDiscriminator()
    pesq_e = torch.tensor([3.0, 2.0, 4.0])
    loss = discriminator_loss(disc, clean, est, noisy, pesq_e, None, noisy_pair="off", target="normalized")
    assert len(disc.calls) == 2
    with torch.no_grad():
        expected = (F.mse_loss(disc(clean, clean).flatten(), torch.ones(3))
                    + F.mse_loss(disc(clean, est).flatten(), (pesq_e - 1) / 3.5))
    assert torch.equal(loss.total.detach(), expected)
    assert loss.noisy.item() == 0.0 and loss.noisy_valid == 0


def test_an_unknown_ingredient_choice_is_refused() -> None:
    with pytest.raises(ValueError, match="complex_loss"):
        Objective(complex_loss="l2")  # type: ignore[arg-type]


def test_magnitude_weighted_phase_losses_ignore_silent_bins_and_equal_the_mean_for_equal_weights() -> None:
    generator = torch.Generator().manual_seed(3)
    est, clean = torch.rand(2, 6, 5, generator=generator) * 6 - 3, torch.rand(2, 6, 5, generator=generator) * 6 - 3
    uniform = phase_losses(est, clean)
    equal = phase_losses(est, clean, torch.full_like(clean, 0.7))
    assert all(torch.allclose(a, b) for a, b in zip(uniform, equal, strict=True))
    # Phase errors only where the clean signal is silent cost nothing; where it is loud, they count.
    weight = torch.zeros_like(clean)
    weight[:, :3, :] = 1.0
    wrong_where_silent = clean.clone()
    wrong_where_silent[:, 3:, :] += torch.rand(2, 3, 5, generator=generator) + 0.5
    weighted = phase_losses(wrong_where_silent, clean, weight)
    assert all(term.item() == 0.0 for term in weighted)
    assert all(term.item() > 0 for term in phase_losses(wrong_where_silent, clean))
    silent = phase_losses(est, clean, torch.zeros_like(clean))
    assert all(term.item() == 0.0 and torch.isfinite(term) for term in silent)


def test_the_magnitude_weighted_phase_term_is_what_the_objective_computes() -> None:
    clean, noisy = _signal(seed=4), _signal(seed=5)
    est_spec, clean_spec = stft(noisy), stft(clean)
    objective = Objective(phase_weight=1.0, phase_weighting="magnitude")
    loss = generator_loss(est_spec, clean_spec, objective=objective)
    expected = sum(phase_losses(phase_of(est_spec), phase_of(clean_spec), clean_spec.abs()))
    assert loss.phase is not None and loss.phase.item() == pytest.approx(float(expected), rel=1e-6)
    unweighted = generator_loss(est_spec, clean_spec, objective=Objective(phase_weight=1.0))
    assert unweighted.phase is not None and unweighted.phase.item() != pytest.approx(loss.phase.item(), rel=1e-3)
    with pytest.raises(ValueError, match="phase_weighting must be one of uniform, magnitude"):
        Objective(phase_weighting="loud")  # type: ignore[arg-type]
