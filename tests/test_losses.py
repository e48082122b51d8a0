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
