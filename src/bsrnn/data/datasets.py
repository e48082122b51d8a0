"""Training crops and full-length test utterances, as torch datasets.

Per item the reference (``dataloader.DemandDataset``) does exactly this, and so do we:
load clean and noisy at 16 kHz (mono), require equal lengths, then

- a clip longer than ``cut_len`` is cut at a uniformly random offset in
  ``[0, length - cut_len]`` (both ends included), the same offset for clean and noisy;
- a shorter clip is tiled: ``cut_len // length`` whole copies, then its first
  ``cut_len % length`` samples.

No loudness normalisation happens in the reference dataset or in its ``train.py``; neither
happens here. The reference's crop offset came from the global ``random`` module; ours is a
pure function of (seed, epoch, index), so a resumed epoch sees the same crops and DataLoader
workers need no shared state. Items are addressed by the key ``(epoch, index)`` that
``EpochBatches`` yields.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from bsrnn.audio import MIN_CUT_LEN
from bsrnn.data.sources import Pair, load_pair



def crop_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random stream of one item in one epoch; independent of every other key."""
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, index]))


def crop_offset(seed: int, epoch: int, index: int, length: int, cut_len: int) -> int:
    """Start of the crop of item ``index`` in ``epoch``: uniform in [0, length - cut_len]."""
    if length < cut_len:
        raise ValueError(f"a clip of {length} samples has no crop of {cut_len}; tile it instead")
    return int(crop_rng(seed, epoch, index).integers(0, length - cut_len + 1))


def tile_to_length(audio: np.ndarray, cut_len: int) -> np.ndarray:
    """``audio`` repeated whole ``cut_len // len`` times, then its first ``cut_len % len`` samples."""
    length = audio.shape[-1]
    whole, rest = divmod(cut_len, length)
    return np.concatenate([audio] * whole + [audio[:rest]])


class TrainSet(Dataset):
    """Fixed-length (clean, noisy) float32 crops [cut_len], keyed by ``(epoch, index)``.

    ``index`` addresses ``pairs``; ``epoch`` only selects the crop. Pickles cheaply (the pairs
    hold paths, or arrays for the in-memory demo), so it is safe with worker processes.
    """

    def __init__(self, pairs: Sequence[Pair], cut_len: int, seed: int = 0) -> None:
        if cut_len < MIN_CUT_LEN:
            raise ValueError(f"cut_len must be at least {MIN_CUT_LEN} samples (MIN_CUT_LEN), got {cut_len}")
        self.pairs = list(pairs)
        self.cut_len = int(cut_len)
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = key
        clean, noisy = load_pair(self.pairs[index])
        length = clean.shape[0]
        if length < self.cut_len:
            clean = tile_to_length(clean, self.cut_len)
            noisy = tile_to_length(noisy, self.cut_len)
        else:
            start = crop_offset(self.seed, epoch, index, length, self.cut_len)
            clean = clean[start : start + self.cut_len]
            noisy = noisy[start : start + self.cut_len]
        return torch.from_numpy(np.ascontiguousarray(clean)), torch.from_numpy(np.ascontiguousarray(noisy))


class TestSet(Dataset):
    """Full-length test utterances ``(clean, noisy, name)``, float32 tensors [samples].

    Lengths differ between items, so batch them one at a time (``batch_size=1``) or with a
    padding collate. The reference validated on random 2 s crops instead (its test loader
    reused ``DemandDataset``), re-drawn every epoch; for comparable epochs use ``FixedCrops``.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, pairs: Sequence[Pair]) -> None:
        self.pairs = list(pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        pair = self.pairs[index]
        clean, noisy = load_pair(pair)
        return torch.from_numpy(clean), torch.from_numpy(noisy), pair.name


class FullUtterances(TestSet):
    """Whole validation utterances ``(clean, noisy, name)``, each at least ``min_len`` samples.

    What the test split is scored on, so the best checkpoint is chosen by the quantity that is
    reported. An utterance shorter than ``min_len`` (the discriminator's shortest input) is
    tiled to it like a short training clip. Lengths differ: one utterance per batch.
    """

    def __init__(self, pairs: Sequence[Pair], min_len: int) -> None:
        super().__init__(pairs)
        self.min_len = int(min_len)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        clean, noisy, name = super().__getitem__(index)
        if clean.shape[0] < self.min_len:
            clean = torch.from_numpy(tile_to_length(clean.numpy(), self.min_len))
            noisy = torch.from_numpy(tile_to_length(noisy.numpy(), self.min_len))
        return clean, noisy, name


class FixedCrops(Dataset):
    """Test pairs cropped (or tiled) to ``cut_len`` like training items, the same every epoch.

    This is the reference's validation input (2 s crops, batchable) with its one flaw fixed:
    the crop of item ``index`` is the training crop of key ``(0, index)`` under ``seed``, so
    validation losses of different epochs compare like with like. Items: (clean, noisy, name).
    """

    def __init__(self, pairs: Sequence[Pair], cut_len: int, seed: int = 0) -> None:
        self._crops = TrainSet(pairs, cut_len=cut_len, seed=seed)

    def __len__(self) -> int:
        return len(self._crops)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        clean, noisy = self._crops[(0, index)]
        return clean, noisy, self._crops.pairs[index].name
