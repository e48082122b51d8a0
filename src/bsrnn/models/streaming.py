"""A causal BSRNN as a stream of spectrogram frames: frames in, enhanced frames out, one frame late.

``SpectrumStream.push`` takes the next frames of a signal, any number at a time, and returns the
enhanced frames that are final; ``flush`` returns the rest. Concatenated, they are what
``BSRNN.forward`` gives for all the frames at once (up to float rounding: the LSTMs and the
running moments add in another order when the frames come in other blocks).

Why one frame late: the network's mask for frame ``t`` depends on frames ``0..t`` only (the
causal model), but the three-tap mask filters input frames ``t-1, t, t+1``, so enhanced frame
``t`` is final when input frame ``t+1`` has arrived, or at ``flush``, where the frame after the
last counts as zero (as in ``apply_three_tap_mask``). The waveform stream around it
(``bsrnn.streaming``) adds the analysis window to this one-frame look-ahead.

Only a model in eval mode is meant to stream; the stream runs under ``torch.no_grad``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch

from bsrnn.models.bsrnn import BSRNN, apply_three_tap_mask


class SpectrumStream:
    """Streams frames ``[B, 257, n]`` (complex) through a causal ``model``, keeping its carry.

    ``context``: what each network call runs under (e.g. a bfloat16 autocast); the mask is
    applied in complex64 outside it, as ``Autocast`` leaves complex outputs.
    """

    def __init__(self, model: BSRNN, context: Callable[[], AbstractContextManager[object]] = nullcontext) -> None:
        self.model = model
        self.carry = model.new_carry()  # refuses a non-causal model
        self.context = context
        self.previous: torch.Tensor | None = None  # input frame t-1 of the pending frame t
        self.pending: torch.Tensor | None = None  # input frame t, whose t+1 has not come
        self.pending_mask: torch.Tensor | None = None

    @torch.no_grad()
    def push(self, frames: torch.Tensor) -> torch.Tensor:
        """Enhanced frames that are final once ``frames`` (the signal's next ones) are known."""
        if frames.shape[-1] == 0:
            return frames
        with self.context():
            masks = self.model.mask(frames, self.carry)
        masks = masks.to(torch.complex64)
        if self.pending is None:  # the first frames of the signal: nothing before them
            spec, mask, first = frames, masks, 0
        else:
            assert self.pending_mask is not None
            before = torch.zeros_like(self.pending) if self.previous is None else self.previous
            spec = torch.cat([before, self.pending, frames], dim=-1)
            mask = torch.cat([torch.zeros_like(self.pending_mask), self.pending_mask, masks], dim=-2)
            first = 1
        enhanced = apply_three_tap_mask(spec, mask)[..., first:-1]
        self.previous = spec[..., -2:-1] if spec.shape[-1] >= 2 else None
        self.pending, self.pending_mask = spec[..., -1:], mask[..., -1:, :]
        return enhanced

    @torch.no_grad()
    def flush(self) -> torch.Tensor | None:
        """The last enhanced frame (the frame after it counts as zero); None if no frame came."""
        if self.pending is None:
            return None
        assert self.pending_mask is not None
        before = torch.zeros_like(self.pending) if self.previous is None else self.previous
        spec = torch.cat([before, self.pending], dim=-1)
        mask = torch.cat([torch.zeros_like(self.pending_mask), self.pending_mask], dim=-2)
        self.pending = self.pending_mask = self.previous = None
        return apply_three_tap_mask(spec, mask)[..., 1:]
