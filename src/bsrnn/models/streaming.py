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

The network is a ``MaskStep``: a callable that takes the next frames and returns their mask,
keeping the state a stream carries (LSTM states, running moments) inside itself. The stream's
logic (which frames are final, the three-tap mask, the edges) is this module's alone, whatever
runs the network: ``TorchMaskStep`` (a ``BSRNN`` and its ``new_carry``; what a ``BSRNN`` passed to
``SpectrumStream`` becomes) or ONNX Runtime (``bsrnn.onnx_model.OnnxMaskStep``), which needs the
state as explicit tensors: ``stream_state_layout`` names them, ``carry_from_state`` and
``state_from_carry`` convert between those tensors and a ``BSRNN`` carry.

Only a model in eval mode is meant to stream; the stream runs under ``torch.no_grad``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn

from bsrnn.models.bands import NUM_BANDS, WIDTH_GROUPS
from bsrnn.models.bsrnn import BSRNN, Carry, apply_three_tap_mask
from bsrnn.models.cumulative_norm import RunningMoments

MaskStep = Callable[[torch.Tensor], torch.Tensor]
"""One network call of a stream: the signal's next frames, complex ``[B, 257, n]``, in; their
complex mask ``[B, 257, n, 3]`` out. It carries the state from call to call itself, so each stream
needs a fresh one."""

FRAMES_SEEN = "frames_seen"
"""The state tensor counting the frames every cumulative norm has seen (float64 ``[1]``)."""


class TorchMaskStep:
    """A causal ``BSRNN`` (or its int8 copy) as a ``MaskStep``: ``model.mask`` with a carry.

    ``context``: what each network call runs under (e.g. a bfloat16 autocast).
    """

    def __init__(self, model: BSRNN, context: Callable[[], AbstractContextManager[object]] = nullcontext) -> None:
        self.model = model
        self.carry = model.new_carry()  # refuses a non-causal model
        self.context = context

    @torch.no_grad()
    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        with self.context():
            return self.model.mask(frames, self.carry)


class SpectrumStream:
    """Streams frames ``[B, 257, n]`` (complex) through a causal network, keeping its state.

    ``network``: a causal ``BSRNN`` (run as ``TorchMaskStep(network, context)``), or any other
    ``MaskStep`` (fresh for this stream; ``context`` is then unused). ``context``: what each
    network call runs under (e.g. a bfloat16 autocast); the mask is applied in complex64 outside
    it, as ``Autocast`` leaves complex outputs.
    """

    def __init__(self, network: BSRNN | MaskStep,
                 context: Callable[[], AbstractContextManager[object]] = nullcontext) -> None:
        self.step: MaskStep = TorchMaskStep(network, context) if isinstance(network, nn.Module) else network
        self.previous: torch.Tensor | None = None  # input frame t-1 of the pending frame t
        self.pending: torch.Tensor | None = None  # input frame t, whose t+1 has not come
        self.pending_mask: torch.Tensor | None = None

    @torch.no_grad()
    def push(self, frames: torch.Tensor) -> torch.Tensor:
        """Enhanced frames that are final once ``frames`` (the signal's next ones) are known."""
        if frames.shape[-1] == 0:
            return frames
        masks = self.step(frames).to(torch.complex64)
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


def stream_state_layout(num_channel: int, num_layer: int, batch: int = 1) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """The state a causal ``BSRNN(num_channel, num_layer)`` carries between blocks of frames, as
    named tensors (name: shape, dtype) for ``batch`` signals; all zeros at a signal's start.

    Per cumulative norm (band split: one per band-width group; each time and band layer; the mask
    decoder) the float64 running sums ``*_sum`` and ``*_sum_squares`` (``RunningMoments``), per
    time layer the LSTM's ``*_lstm_h`` and ``*_lstm_c`` (``[1, batch * 31, 2N]``), and
    ``frames_seen``, the frames every norm has seen so far. The order is the ONNX step's.
    """
    layout: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}

    def moments(prefix: str, shape: tuple[int, ...]) -> None:
        layout[f"{prefix}_sum"] = layout[f"{prefix}_sum_squares"] = (shape, torch.float64)

    for index, group in enumerate(WIDTH_GROUPS):
        moments(f"band_split{index}", (group.num_bands, batch, 1, 1))
    for index in range(num_layer):
        moments(f"time{index}_norm", (batch, 1, 1, 1))
        layout[f"time{index}_lstm_h"] = layout[f"time{index}_lstm_c"] = ((1, batch * NUM_BANDS, 2 * num_channel),
                                                                          torch.float32)
    for index in range(num_layer):
        moments(f"band{index}_norm", (batch, 1, 1, 1))
    moments("mask_decoder_norm", (NUM_BANDS, batch, 1, 1))
    layout[FRAMES_SEEN] = ((1,), torch.float64)
    return layout


def carry_from_state(state: dict[str, torch.Tensor], num_layer: int) -> Carry:
    """A ``BSRNN`` carry holding the named state tensors (``stream_state_layout``)."""
    frames = state[FRAMES_SEEN]

    def moments(prefix: str) -> RunningMoments:
        return RunningMoments(state[f"{prefix}_sum"], state[f"{prefix}_sum_squares"], frames)

    return {
        "band_split": {f"group{index}": moments(f"band_split{index}") for index in range(len(WIDTH_GROUPS))},
        "time_layers": [{"moments": moments(f"time{index}_norm"),
                         "lstm": (state[f"time{index}_lstm_h"], state[f"time{index}_lstm_c"])}
                        for index in range(num_layer)],
        "band_layers": [{"moments": moments(f"band{index}_norm")} for index in range(num_layer)],
        "mask_decoder": {"norm": moments("mask_decoder_norm")},
    }


def state_from_carry(carry: Carry, frames_seen: torch.Tensor) -> dict[str, torch.Tensor]:
    """The named state tensors of a carry that ``BSRNN.mask`` has filled, in
    ``stream_state_layout``'s order; ``frames_seen``: the frames seen, this block's included (the
    carry's own counts are Python integers where the stream started, which a traced graph would
    freeze)."""
    state: dict[str, torch.Tensor] = {}

    def moments(prefix: str, carried: RunningMoments) -> None:
        state[f"{prefix}_sum"], state[f"{prefix}_sum_squares"] = carried.total, carried.total_squares

    for index in range(len(WIDTH_GROUPS)):
        moments(f"band_split{index}", carry["band_split"][f"group{index}"])
    for index, layer in enumerate(carry["time_layers"]):
        moments(f"time{index}_norm", layer["moments"])
        state[f"time{index}_lstm_h"], state[f"time{index}_lstm_c"] = layer["lstm"]
    for index, layer in enumerate(carry["band_layers"]):
        moments(f"band{index}_norm", layer["moments"])
    moments("mask_decoder_norm", carry["mask_decoder"]["norm"])
    state[FRAMES_SEEN] = frames_seen
    return state


class StatefulMask(nn.Module):
    """``BSRNN.real_mask`` with the carry as explicit tensors, what the ONNX streaming step is:
    ``forward(frames, *state)`` -> ``(mask, *next_state)``, ``frames`` ``[B, 257, n, 2]`` (real,
    imaginary), ``mask`` ``[B, 257, n, 3, 2]``, the state in ``stream_state_layout``'s order.

    ``model`` must run each time LSTM in one call (``cpu_rows_per_thread = 0``, as the ONNX
    export's copy does), so that the LSTM state is one tensor whatever the row count.
    """

    def __init__(self, model: BSRNN) -> None:
        super().__init__()
        self.model = model
        self.names = list(stream_state_layout(model.num_channel, model.num_layer))

    def forward(self, frames: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        named = dict(zip(self.names, state, strict=True))
        carry = carry_from_state(named, self.model.num_layer)
        mask = self.model.real_mask(frames, carry)
        count = torch.ones_like(frames[0, 0, :, 0], dtype=torch.float64).sum(0, keepdim=True)  # n, traceable
        return (mask, *state_from_carry(carry, named[FRAMES_SEEN] + count).values())
