"""The band layout of BSRNN: which STFT bins form each of the 31 sub-bands.

The reference network splits the 257 bins of a 512-point STFT (16 kHz) into bands that are
narrow at low frequencies and wide at high ones. The bands come in only five widths, each a
run of consecutive bands, so the per-band Linears can be batched one width group at a time:
one batched matmul per group, with no padding (padding every band to the widest one doubles
the mask decoder's output layer and made it slower than a plain per-band loop on CPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import groupby

import torch

#: Band widths in STFT bins, low to high frequency: 2, then 3 x 10, 8 x 12, 16 x 7, 17.
BAND_WIDTHS: tuple[int, ...] = (2,) + (3,) * 10 + (8,) * 12 + (16,) * 7 + (17,)
NUM_BINS: int = sum(BAND_WIDTHS)  # 257 = n_fft // 2 + 1 for n_fft = 512
NUM_BANDS: int = len(BAND_WIDTHS)  # 31

#: Mask outputs per bin: 3 taps (previous, current, next frame) x (real, imaginary).
MASK_TAPS: int = 3
MASK_VALUES_PER_BIN: int = MASK_TAPS * 2


@dataclass(frozen=True)
class WidthGroup:
    """A run of consecutive bands that all have the same width (in bins)."""

    first_band: int
    num_bands: int
    width: int
    first_bin: int



def width_groups(widths: tuple[int, ...] = BAND_WIDTHS) -> tuple[WidthGroup, ...]:
    """Split ``widths`` into maximal runs of equal width, in band order."""
    groups: list[WidthGroup] = []
    first_band = first_bin = 0
    for width, run in groupby(widths):
        count = len(list(run))
        groups.append(WidthGroup(first_band, count, width, first_bin))
        first_band += count
        first_bin += count * width
    return tuple(groups)


WIDTH_GROUPS: tuple[WidthGroup, ...] = width_groups()


def split_by_band_group(tensor: torch.Tensor, dim: int) -> tuple[torch.Tensor, ...]:
    """Split a per-band axis (length K) into one chunk per width group.

    ``split`` rather than indexing: its backward concatenates the chunk gradients once,
    where each indexed slice would fill and add a full-size zero gradient.
    """
    return tensor.split([group.num_bands for group in WIDTH_GROUPS], dim=dim)


def split_by_bin_group(tensor: torch.Tensor, dim: int, per_bin: int) -> tuple[torch.Tensor, ...]:
    """Split a packed frequency-ordered axis (``per_bin`` entries per bin) by width group."""
    sizes = [per_bin * group.num_bands * group.width for group in WIDTH_GROUPS]
    return tensor.split(sizes, dim=dim)
