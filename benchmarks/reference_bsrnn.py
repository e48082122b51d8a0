"""A straightforward per-band BSRNN, parameter-for-parameter like the reference recipe.

It keeps the reference's module names (so reference state dicts load directly) and loops
over the 31 bands in the band split and the mask decoder, one small GroupNorm/Linear each.
It exists as the speed baseline for ``bsrnn.models.BSRNN`` (which batches those loops) and
as an independent second implementation of the same function for the fidelity tests.
"""

from __future__ import annotations

import torch
from torch import nn

BAND_WIDTHS: tuple[int, ...] = (2,) + (3,) * 10 + (8,) * 12 + (16,) * 7 + (17,)


class PerBandSplit(nn.Module):
    """For each band: GroupNorm(1, 2w) over [2w, T], Linear(2w -> N)."""

    def __init__(self, num_channel: int) -> None:
        super().__init__()
        for i, width in enumerate(BAND_WIDTHS, start=1):
            setattr(self, f"norm{i}", nn.GroupNorm(1, 2 * width))
            setattr(self, f"fc{i}", nn.Linear(2 * width, num_channel))

    def forward(self, spec_real: torch.Tensor) -> torch.Tensor:
        """``[B, F, T, 2]`` -> ``[B, N, T, K]``."""
        frames_first = spec_real.transpose(1, 2)  # [B, T, F, 2]
        batch, frames = frames_first.shape[:2]
        outputs, first_bin = [], 0
        for i, width in enumerate(BAND_WIDTHS, start=1):
            band = frames_first[:, :, first_bin : first_bin + width].reshape(batch, frames, -1)
            normed = getattr(self, f"norm{i}")(band.transpose(1, 2)).transpose(1, 2)
            outputs.append(getattr(self, f"fc{i}")(normed))  # [B, T, N]
            first_bin += width
        return torch.stack(outputs, dim=-1).transpose(1, 2)


class PerBandMaskDecoder(nn.Module):
    """For each band: GroupNorm(1, N), Linear(N, 4N), Tanh, Linear(4N, 12w), GLU."""

    def __init__(self, num_channel: int) -> None:
        super().__init__()
        for i, width in enumerate(BAND_WIDTHS, start=1):
            setattr(self, f"norm{i}", nn.GroupNorm(1, num_channel))
            setattr(self, f"fc1{i}", nn.Linear(num_channel, 4 * num_channel))
            setattr(self, f"fc2{i}", nn.Linear(4 * num_channel, 12 * width))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``[B, N, T, K]`` -> real mask ``[B, F, T, 3, 2]``."""
        masks = []
        for i, width in enumerate(BAND_WIDTHS, start=1):
            out = getattr(self, f"norm{i}")(z[..., i - 1]).transpose(1, 2)  # [B, T, N]
            out = torch.tanh(getattr(self, f"fc1{i}")(out))
            out = nn.functional.glu(getattr(self, f"fc2{i}")(out), dim=-1)
            masks.append(out.reshape(out.shape[0], out.shape[1], width, 3, 2))
        return torch.cat(masks, dim=2).transpose(1, 2)


class ReferenceBSRNN(nn.Module):
    """Per-band loop BSRNN with the reference's parameter names."""

    def __init__(self, num_channel: int = 64, num_layer: int = 5) -> None:
        super().__init__()
        self.num_layer = num_layer
        self.band_split = PerBandSplit(num_channel)
        for layer in range(1, num_layer + 1):
            setattr(self, f"norm_t{layer}", nn.GroupNorm(1, num_channel))
            setattr(self, f"lstm_t{layer}", nn.LSTM(num_channel, 2 * num_channel, batch_first=True))
            setattr(self, f"fc_t{layer}", nn.Linear(2 * num_channel, num_channel))
        for layer in range(1, num_layer + 1):
            setattr(self, f"norm_k{layer}", nn.GroupNorm(1, num_channel))
            setattr(
                self,
                f"lstm_k{layer}",
                nn.LSTM(num_channel, 2 * num_channel, batch_first=True, bidirectional=True),
            )
            setattr(self, f"fc_k{layer}", nn.Linear(4 * num_channel, num_channel))
        self.mask_decoder = PerBandMaskDecoder(num_channel)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        spec_real = torch.view_as_real(spec)
        z = self.band_split(spec_real)  # [B, N, T, K]
        batch, channels, frames, bands = z.shape
        for layer in range(1, self.num_layer + 1):
            out = getattr(self, f"norm_t{layer}")(z)
            out = out.permute(0, 3, 2, 1).reshape(batch * bands, frames, channels)
            out = getattr(self, f"fc_t{layer}")(getattr(self, f"lstm_t{layer}")(out)[0])
            z = z + out.reshape(batch, bands, frames, channels).permute(0, 3, 2, 1)
        for layer in range(1, self.num_layer + 1):
            out = getattr(self, f"norm_k{layer}")(z)
            out = out.permute(0, 2, 3, 1).reshape(batch * frames, bands, channels)
            out = getattr(self, f"fc_k{layer}")(getattr(self, f"lstm_k{layer}")(out)[0])
            z = z + out.reshape(batch, frames, bands, channels).permute(0, 3, 1, 2)
        mask = torch.view_as_complex(self.mask_decoder(z).contiguous())  # [B, F, T, 3]
        padded = nn.functional.pad(spec, (1, 1))
        return (
            mask[..., 0] * padded[..., :-2]
            + mask[..., 1] * padded[..., 1:-1]
            + mask[..., 2] * padded[..., 2:]
        )
