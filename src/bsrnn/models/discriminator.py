"""MetricGAN discriminator: predicts a (normalised) quality score for a pair of spectrograms.

Same function and the same parameter names as the reference recipe's discriminator (a
``layers`` Sequential whose indices appear in the state dict, spectral norm via the classic
``torch.nn.utils.spectral_norm`` hook with ``weight_orig``/``weight_u``/``weight_v``), so old
discriminator state dicts load without any renaming.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import spectral_norm

SIGMOID_SCALE = 1.2  # beta of the reference's LearnableSigmoid: scores live in (0, 1.2)
DROPOUT = 0.3


class LearnableSigmoid(nn.Module):
    """``beta * sigmoid(slope * x)`` with a learnable per-feature ``slope`` starting at 1."""

    def __init__(self, num_features: int, beta: float = SIGMOID_SCALE) -> None:
        super().__init__()
        self.beta = beta
        self.slope = nn.Parameter(torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.beta * torch.sigmoid(self.slope * x)


def _downsample_block(in_channels: int, out_channels: int) -> list[nn.Module]:
    """Spectral-normalised stride-2 4x4 conv (no bias), InstanceNorm (affine), PReLU."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1, bias=False)
    return [
        spectral_norm(conv),
        nn.InstanceNorm2d(out_channels, affine=True),
        nn.PReLU(out_channels),
    ]


class Discriminator(nn.Module):
    """Score ``(x, y)``, each ``[B, 1, 257, T]`` compressed magnitudes, as ``[B, 1]``.

    Four downsampling conv blocks (2 -> ndf -> 2ndf -> 4ndf -> 8ndf channels), global max
    pooling, then a spectral-normalised two-layer head ending in a learnable sigmoid.
    """

    def __init__(self, ndf: int = 16) -> None:
        super().__init__()
        if ndf < 1:
            raise ValueError(f"Discriminator needs ndf >= 1; got ndf={ndf}")
        self.ndf = int(ndf)
        widths = [2, self.ndf, 2 * self.ndf, 4 * self.ndf, 8 * self.ndf]
        blocks: list[nn.Module] = []
        for in_channels, out_channels in zip(widths[:-1], widths[1:]):
            blocks += _downsample_block(in_channels, out_channels)
        # Module order (and so the state-dict indices 0..18) follows the reference exactly.
        self.layers = nn.Sequential(
            *blocks,
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
            spectral_norm(nn.Linear(8 * self.ndf, 4 * self.ndf)),
            nn.Dropout(DROPOUT),
            nn.PReLU(4 * self.ndf),
            spectral_norm(nn.Linear(4 * self.ndf, 1)),
            LearnableSigmoid(1),
        )

    def config(self) -> dict[str, int]:
        """Constructor arguments, so the architecture can be stored beside the weights."""
        return {"ndf": self.ndf}

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 1 or x.shape != y.shape:
            raise ValueError(
                "Discriminator expects two magnitude tensors of the same shape "
                f"[batch, 1, freq, frames]; got {tuple(x.shape)} and {tuple(y.shape)}"
            )
        return self.layers(torch.cat([x, y], dim=1))
