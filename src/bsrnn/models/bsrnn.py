"""BSRNN generator: a band-split RNN that predicts a complex 3-tap mask in the STFT domain.

Computes the same function as the reference recipe's network, but batches its 31 per-band
operations: the band split's GroupNorm + Linear and the mask decoder's output Linear run once
per group of equal-width bands (five groups), the mask decoder's GroupNorm and first Linear
once for all 31 bands, and each RNN layer is one LSTM call over all bands (time layers) or
all frames (band layers). The reference's per-band parameters are stored packed
(concatenated or stacked in band order), so the parameter count equals the reference's and
``bsrnn.models.reference`` maps between the two naming schemes.

Reference behaviour kept on purpose (it is what trained checkpoints expect):

- every GroupNorm has a single group, so its statistics span the whole utterance (time
  included): the band-split norm over ``[2w, T]`` per band, the RNN-layer norms over
  ``[N, T, K]``, the mask-decoder norm over ``[N, T]`` per band;
- all ``num_layer`` time layers run first, then all ``num_layer`` band layers (not interleaved);
- the mask for frame ``t`` filters frames ``t-1, t, t+1``; the edge frames use two taps. We
  express that as zero padding, which also gives a defined answer for a single frame (the
  reference fails on ``T = 1``).

The causal variant (``causal=True``, config field ``causal``; not in the reference) changes only
what would let a frame's output depend on later frames: every one-group GroupNorm becomes a
cumulative layer norm over the same features (``bsrnn.models.cumulative_norm``, which says why
that one and not a per-frame norm), with the same parameters, so a causal checkpoint has the
same tensor names and shapes. The time LSTMs are unidirectional in both variants; the band
LSTMs stay bidirectional, since they run across the bands of one frame, not across time. The
three-tap mask keeps its look-ahead of one frame (128 samples), which with the 512-sample
analysis window makes the algorithmic latency of a stream 640 samples, 40 ms
(``bsrnn.models.streaming``, ``bsrnn.streaming``). Every causal module takes a ``carry``: a dict in which it keeps
what the next block of frames needs (LSTM states, running moments), so that a stream computes,
block by block, what ``forward`` computes on the whole signal.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bsrnn.models.bands import (
    BAND_WIDTHS,
    MASK_TAPS,
    MASK_VALUES_PER_BIN,
    NUM_BANDS,
    NUM_BINS,
    WIDTH_GROUPS,
    split_by_band_group,
    split_by_bin_group,
)
from bsrnn.models.cumulative_norm import cumulative_layer_norm

Carry = dict[str, Any]
"""What a causal module keeps between blocks of frames of one stream (``BSRNN.new_carry``)."""

GROUP_NORM_EPS = 1e-5  # nn.GroupNorm's default, as used by the reference
# LSTM rows (sequences) per call and intra-op thread on CPU; see ResidualRNNLayer. 0: no split.
TIME_ROWS_PER_THREAD = 31  # one example's 31 bands
BAND_ROWS_PER_THREAD = 128  # frames


def layer_norm_over_last(x: torch.Tensor, dims: int) -> torch.Tensor:
    """``F.layer_norm`` over the last ``dims`` axes, no affine: a one-group GroupNorm's statistics.

    While ``torch.onnx.export`` traces, the same formula in plain operations: the normalised shape
    holds the frame count, which an ONNX graph with dynamic frames cannot take as a constant.
    """
    if torch.onnx.is_in_onnx_export():
        axes = tuple(range(-dims, 0))
        mean = x.mean(axes, keepdim=True)
        centred = x - mean
        return centred * torch.rsqrt(centred.square().mean(axes, keepdim=True) + GROUP_NORM_EPS)
    return F.layer_norm(x, x.shape[-dims:], eps=GROUP_NORM_EPS)


class ChannelLastGroupNorm(nn.Module):
    """``nn.GroupNorm(1, C)`` for channel-last tensors ``[B, ..., C]``.

    One group means the statistics cover every element of a sample, which is layer norm over
    all non-batch axes; the affine parameters are per channel (the last axis). Keeping the
    channel last avoids transposes around the LSTMs.
    """

    def __init__(self, num_channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normalized = layer_norm_over_last(x, x.dim() - 1)
        return torch.addcmul(self.bias, normalized, self.weight)


class ChannelLastCumulativeNorm(nn.Module):
    """The causal counterpart of ``ChannelLastGroupNorm``: frame ``t`` is normalised by the
    moments of every non-batch, non-time element of frames ``0..t``; the same per-channel affine
    parameters (so the same state-dict entries)."""

    def __init__(self, num_channels: int, time_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.time_dim = time_dim

    def forward(self, x: torch.Tensor, carry: Carry | None = None) -> torch.Tensor:
        features = tuple(dim for dim in range(1, x.dim()) if dim != self.time_dim)
        normalized, moments = cumulative_layer_norm(x, self.time_dim, features, GROUP_NORM_EPS,
                                                    None if carry is None else carry.get("moments"))
        if carry is not None:
            carry["moments"] = moments
        return torch.addcmul(self.bias, normalized, self.weight)


class ResidualRNNLayer(nn.Module):
    """Norm -> LSTM along one axis -> Linear back to N channels, plus the input (residual).

    The LSTM is shared across the other axis, so that axis is folded into the LSTM batch:
    input ``[B, S, L, N]`` runs ``B * S`` sequences of length ``L``.

    On CPU the sequences go through LSTM + Linear in groups of at most ``cpu_rows_per_thread``
    x (intra-op threads) rows. The sequences are independent, so this changes nothing but
    speed: oneDNN's LSTM keeps every step's gates for the whole batch, and past a few hundred
    rows that working set leaves the cache. Measured on one AMD EPYC (AVX-512) core (torch 2.13, LSTM +
    Linear forward + backward per layer, CPU time, medians in random order on a shared host):
    band LSTM 1506 rows (batch 6) 1424 -> 1152 ms in groups of 128, inference on 4001 rows
    (32 s) 1169 -> 795 ms; time LSTM 186 rows (batch 6) 721 -> 641 ms in groups of 31; no
    change at batch 2 (502 and 62 rows). GPUs get the whole batch in one call.
    """

    def __init__(self, num_channel: int, bidirectional: bool, cpu_rows_per_thread: int,
                 causal_time_dim: int | None = None) -> None:
        super().__init__()
        hidden = 2 * num_channel
        # causal_time_dim: the input's time axis, for the causal model's cumulative norm.
        self.norm: nn.Module = (ChannelLastGroupNorm(num_channel) if causal_time_dim is None
                                else ChannelLastCumulativeNorm(num_channel, causal_time_dim))
        self.lstm = nn.LSTM(num_channel, hidden, batch_first=True, bidirectional=bidirectional)
        self.fc = nn.Linear(hidden * (2 if bidirectional else 1), num_channel)
        self.cpu_rows_per_thread = cpu_rows_per_thread

    def _rows_per_call(self, z: torch.Tensor, rows: int) -> int:
        if z.device.type != "cpu" or self.cpu_rows_per_thread <= 0:
            return rows
        return self.cpu_rows_per_thread * torch.get_num_threads()

    def forward(self, z: torch.Tensor, carry: Carry | None = None) -> torch.Tensor:
        """``carry`` (causal model, streaming): the norm's moments, and for a time layer the LSTM
        state, from the previous block of frames in; this block's out."""
        batch, others, length, channels = z.shape
        rows = batch * others
        out = (self.norm(z) if carry is None else self.norm(z, carry)).reshape(rows, length, channels)
        group = self._rows_per_call(z, rows)
        if carry is not None and not self.lstm.bidirectional:
            return z + self._carried_lstm(out, group, carry).view(batch, others, length, channels)
        if group >= rows:
            out = self.fc(self.lstm(out)[0])
        else:
            out = torch.cat([self.fc(self.lstm(part)[0]) for part in out.split(group)])
        return z + out.view(batch, others, length, channels)

    def _carried_lstm(self, out: torch.Tensor, group: int, carry: Carry) -> torch.Tensor:
        """LSTM + Linear from the carried ``(h, c)`` (zeros at the start), keeping the new one."""
        state = carry.get("lstm")
        if group >= out.shape[0]:  # one call: the state passes whole (what a traced graph must see, any row count)
            result, carry["lstm"] = self.lstm(out, state)
            return self.fc(result)
        starts = range(0, out.shape[0], group)
        results, hidden, cell = [], [], []
        for start in starts:
            part = out[start : start + group]
            part_state = None if state is None else (state[0][:, start : start + group],
                                                     state[1][:, start : start + group])
            result, (h, c) = self.lstm(part, part_state)
            results.append(self.fc(result))
            hidden.append(h)
            cell.append(c)
        carry["lstm"] = (torch.cat(hidden, dim=1), torch.cat(cell, dim=1))
        return torch.cat(results)


def _last_axis_cumulative_norm(x: torch.Tensor, carry: Carry | None, key: str) -> torch.Tensor:
    """Cumulative layer norm of ``[..., T, features]`` over the last axis (no affine), the
    moments kept in ``carry[key]`` when streaming."""
    normalized, moments = cumulative_layer_norm(x, x.dim() - 2, (x.dim() - 1,), GROUP_NORM_EPS,
                                                None if carry is None else carry.get(key))
    if carry is not None:
        carry[key] = moments
    return normalized


class BandSplit(nn.Module):
    """Per band: GroupNorm(1, 2w) over (features, time), then Linear(2w -> N).

    Parameters are packed in frequency order: ``norm_weight``/``norm_bias`` ``[2F]`` (features
    ordered bin-major, real then imaginary), ``fc_weight`` ``[N, 2F]`` (the per-band weights
    side by side) and ``fc_bias`` ``[K, N]``. Bands of equal width run as one batched matmul.
    """

    def __init__(self, num_channel: int, causal: bool = False) -> None:
        super().__init__()
        self.causal = causal
        self.norm_weight = nn.Parameter(torch.ones(2 * NUM_BINS))
        self.norm_bias = nn.Parameter(torch.zeros(2 * NUM_BINS))
        self.fc_weight = nn.Parameter(torch.empty(num_channel, 2 * NUM_BINS))
        self.fc_bias = nn.Parameter(torch.zeros(NUM_BANDS, num_channel))

    def forward(self, spec_real: torch.Tensor, carry: Carry | None = None) -> torch.Tensor:
        """``[B, F, T, 2]`` -> ``[B, K, T, N]``."""
        batch, _, frames, _ = spec_real.shape
        channels = self.fc_weight.shape[0]
        outputs = []
        for index, group, bands, norm_weight, norm_bias, weight, bias in zip(
            range(len(WIDTH_GROUPS)),
            WIDTH_GROUPS,
            split_by_bin_group(spec_real, dim=1, per_bin=1),
            split_by_bin_group(self.norm_weight, dim=0, per_bin=2),
            split_by_bin_group(self.norm_bias, dim=0, per_bin=2),
            split_by_bin_group(self.fc_weight, dim=1, per_bin=2),
            split_by_band_group(self.fc_bias, dim=0),
        ):
            count, features = group.num_bands, 2 * group.width
            # [B, c*w, T, 2] -> [c, B, T, w*2]: one band per leading index, features bin-major.
            bands = bands.reshape(batch, count, group.width, frames, 2).permute(1, 0, 3, 2, 4)
            bands = bands.reshape(count, batch, frames, features)
            if self.causal:  # statistics over the band's features of frames 0..t
                normalized = _last_axis_cumulative_norm(bands, carry, f"group{index}")
            else:  # GroupNorm(1, 2w) statistics span (time, features) of one band of one example.
                normalized = layer_norm_over_last(bands, 2)  # (frames, features)
            normalized = torch.addcmul(
                norm_bias.view(count, 1, 1, features),
                normalized,
                norm_weight.view(count, 1, 1, features),
            ).view(count, batch * frames, features)
            weight = weight.reshape(channels, count, features).permute(1, 2, 0)  # [c, 2w, N]
            outputs.append(torch.bmm(normalized, weight) + bias.unsqueeze(1))  # [c, B*T, N]
        out = torch.cat(outputs, dim=0).view(NUM_BANDS, batch, frames, channels)
        return out.transpose(0, 1).contiguous()


class MaskDecoder(nn.Module):
    """Per band: GroupNorm(1, N), Linear(N -> 4N), Tanh, Linear(4N -> 12w), GLU.

    Parameters: ``norm_weight``/``norm_bias`` ``[K, N]``, ``fc1_weight`` ``[K, 4N, N]``,
    ``fc1_bias`` ``[K, 4N]`` (stacked per band) and ``fc2_weight`` ``[12F, 4N]``, ``fc2_bias``
    ``[12F]`` (per-band outputs concatenated in band order; each band's 12w outputs are the
    GLU value half then the gate half, each ordered ``[bin, tap, real/imag]``).
    """

    def __init__(self, num_channel: int, causal: bool = False) -> None:
        super().__init__()
        self.causal = causal
        hidden = 4 * num_channel
        packed_outputs = 2 * MASK_VALUES_PER_BIN * NUM_BINS
        self.norm_weight = nn.Parameter(torch.ones(NUM_BANDS, num_channel))
        self.norm_bias = nn.Parameter(torch.zeros(NUM_BANDS, num_channel))
        self.fc1_weight = nn.Parameter(torch.empty(NUM_BANDS, hidden, num_channel))
        self.fc1_bias = nn.Parameter(torch.zeros(NUM_BANDS, hidden))
        self.fc2_weight = nn.Parameter(torch.empty(packed_outputs, hidden))
        self.fc2_bias = nn.Parameter(torch.zeros(packed_outputs))

    def forward(self, z: torch.Tensor, carry: Carry | None = None) -> torch.Tensor:
        """``[B, T, K, N]`` -> real mask ``[B, F, T, 3, 2]`` (tap, real/imag)."""
        batch, frames, _, channels = z.shape
        per_band = z.permute(2, 0, 1, 3).contiguous()  # [K, B, T, N]
        if self.causal:  # statistics over the band's channels of frames 0..t
            per_band = _last_axis_cumulative_norm(per_band, carry, "norm")
        else:  # GroupNorm(1, N) statistics span (time, channels) of one band of one example.
            per_band = layer_norm_over_last(per_band, 2)  # (frames, channels)
        per_band = torch.addcmul(
            self.norm_bias[:, None, None, :], per_band, self.norm_weight[:, None, None, :]
        ).view(NUM_BANDS, batch * frames, channels)
        # Bias folded into the matmul and tanh in place: the largest activation of the network
        # ([K, B*T, 4N], 119 MB for 30 s of audio) then exists once, not three times. Safe for
        # autograd: baddbmm's backward needs its inputs, not its output.
        hidden = torch.baddbmm(self.fc1_bias.unsqueeze(1), per_band, self.fc1_weight.transpose(1, 2))
        hidden = hidden.tanh_()  # [K, B*T, 4N]

        per_bin_outputs = 2 * MASK_VALUES_PER_BIN
        masks = []
        for group, band_hidden, weight, bias in zip(
            WIDTH_GROUPS,
            split_by_band_group(hidden, dim=0),
            split_by_bin_group(self.fc2_weight, dim=0, per_bin=per_bin_outputs),
            split_by_bin_group(self.fc2_bias, dim=0, per_bin=per_bin_outputs),
        ):
            count, outputs = group.num_bands, per_bin_outputs * group.width
            weight = weight.view(count, outputs, -1).transpose(1, 2)  # [c, 4N, 12w]
            bias = bias.view(count, 1, outputs)
            mask = F.glu(torch.bmm(band_hidden, weight) + bias, dim=-1)  # [c, B*T, 6w]
            # [c, B*T, w*6] -> [B, c*w, T, 6]: bins in frequency order.
            mask = mask.view(count, batch, frames, group.width, MASK_VALUES_PER_BIN)
            mask = mask.permute(1, 0, 3, 2, 4)
            masks.append(mask.reshape(batch, count * group.width, frames, MASK_VALUES_PER_BIN))
        return torch.cat(masks, dim=1).view(batch, NUM_BINS, frames, MASK_TAPS, 2)


def apply_three_tap_mask(spec: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Filter each bin across frames: ``out[t] = m0 x[t-1] + m1 x[t] + m2 x[t+1]``.

    Frames outside the signal count as zero, which is the reference's two-tap rule at the
    first and last frame. ``spec`` complex ``[B, F, T]``, ``mask`` complex ``[B, F, T, 3]``.
    """
    padded = F.pad(spec, (1, 1))
    return (
        mask[..., 0] * padded[..., :-2]
        + mask[..., 1] * padded[..., 1:-1]
        + mask[..., 2] * padded[..., 2:]
    )


class BSRNN(nn.Module):
    """Band-split RNN speech enhancer: complex STFT ``[B, 257, T]`` -> enhanced STFT, same shape.

    ``num_channel`` is the feature width N per band; ``num_layer`` the number of time layers
    and, separately, of band layers; ``causal``: frame ``t``'s mask depends on frames ``0..t``
    only (see the module docstring), so the model can run as a stream.
    """

    def __init__(self, num_channel: int = 64, num_layer: int = 5, causal: bool = False) -> None:
        super().__init__()
        if num_channel < 1 or num_layer < 1:
            raise ValueError(
                f"BSRNN needs num_channel >= 1 and num_layer >= 1; "
                f"got num_channel={num_channel}, num_layer={num_layer}"
            )
        self.num_channel = int(num_channel)
        self.num_layer = int(num_layer)
        self.causal = bool(causal)
        # The time axis of each RNN layer's input, for the causal model's norms: [B, K, T, N]
        # for the time layers, [B, T, K, N] for the band layers.
        time_axis, band_axis = (2, 1) if self.causal else (None, None)
        self.band_split = BandSplit(self.num_channel, self.causal)
        self.time_layers = nn.ModuleList(
            ResidualRNNLayer(self.num_channel, bidirectional=False, cpu_rows_per_thread=TIME_ROWS_PER_THREAD,
                             causal_time_dim=time_axis)
            for _ in range(self.num_layer)
        )
        self.band_layers = nn.ModuleList(
            ResidualRNNLayer(self.num_channel, bidirectional=True, cpu_rows_per_thread=BAND_ROWS_PER_THREAD,
                             causal_time_dim=band_axis)
            for _ in range(self.num_layer)
        )
        self.mask_decoder = MaskDecoder(self.num_channel, self.causal)
        self.reset_parameters()

    def config(self) -> dict[str, Any]:
        """Constructor arguments, so the architecture can be stored beside the weights."""
        return {"num_channel": self.num_channel, "num_layer": self.num_layer, "causal": self.causal}

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialise as the reference does, band by band for the packed per-band Linears.

        LSTM input weights Xavier-uniform, recurrent weights orthogonal (each whole
        ``[4H, H]`` matrix), biases zero; every Linear Xavier-uniform with zero bias, where a
        per-band Linear's fan-in/fan-out are its own band's; norms start at identity.
        """
        for layer in [*self.time_layers, *self.band_layers]:
            for name, param in layer.lstm.named_parameters():
                if name.startswith("weight_ih"):
                    nn.init.xavier_uniform_(param)
                elif name.startswith("weight_hh"):
                    nn.init.orthogonal_(param)
                else:
                    param.zero_()
            nn.init.xavier_uniform_(layer.fc.weight)
            layer.fc.bias.zero_()
            layer.norm.weight.fill_(1.0)
            layer.norm.bias.zero_()

        split, decoder = self.band_split, self.mask_decoder
        split.norm_weight.fill_(1.0)
        split.norm_bias.zero_()
        split.fc_bias.zero_()
        decoder.norm_weight.fill_(1.0)
        decoder.norm_bias.zero_()
        decoder.fc1_bias.zero_()
        decoder.fc2_bias.zero_()
        first_bin = 0
        for band, width in enumerate(BAND_WIDTHS):
            nn.init.xavier_uniform_(split.fc_weight[:, 2 * first_bin : 2 * (first_bin + width)])
            nn.init.xavier_uniform_(decoder.fc1_weight[band])
            rows = 2 * MASK_VALUES_PER_BIN
            nn.init.xavier_uniform_(
                decoder.fc2_weight[rows * first_bin : rows * (first_bin + width)]
            )
            first_bin += width

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        """Enhance a complex spectrogram ``[B, 257, T]`` (512-point STFT) of any ``T >= 1``."""
        return apply_three_tap_mask(spec, self.mask(spec))

    def new_carry(self) -> Carry:
        """An empty carry for ``mask``: what a stream keeps between blocks of frames (causal only)."""
        if not self.causal:
            raise ValueError("only a causal BSRNN (causal=True) can run block by block: this one normalises "
                             "with statistics of the whole input")
        return {"band_split": {}, "time_layers": [{} for _ in self.time_layers],
                "band_layers": [{} for _ in self.band_layers], "mask_decoder": {}}

    def mask(self, spec: torch.Tensor, carry: Carry | None = None) -> torch.Tensor:
        """The complex three-tap mask ``[B, 257, T, 3]`` for a spectrogram ``[B, 257, T]``.

        ``carry`` (causal model; from ``new_carry``): the state left by the previous block of the
        same signal, updated in place, so that masks computed block by block equal the masks of
        the whole signal. None: the signal starts here.
        """
        if not spec.is_complex() or spec.dim() != 3 or spec.shape[1] != NUM_BINS:
            raise ValueError(
                f"BSRNN expects a complex spectrogram [batch, {NUM_BINS}, frames]; "
                f"got dtype {spec.dtype} and shape {tuple(spec.shape)}"
            )
        return torch.view_as_complex(self.real_mask(torch.view_as_real(spec), carry))

    def real_mask(self, spec_real: torch.Tensor, carry: Carry | None = None) -> torch.Tensor:
        """``mask`` in real arithmetic: ``[B, 257, T, 2]`` (real, imaginary) -> ``[B, 257, T, 3, 2]``.

        What ``mask`` computes, without complex tensors (which ONNX cannot hold; ``bsrnn.onnx_model``).
        """
        if carry is None:
            z = self.band_split(spec_real)  # [B, K, T, N]
            for layer in self.time_layers:
                z = layer(z)  # LSTM over T, batch B * K
            z = z.transpose(1, 2).contiguous()  # [B, T, K, N]
            for layer in self.band_layers:
                z = layer(z)  # LSTM over K, batch B * T
            return self.mask_decoder(z)  # [B, F, T, 3, 2]
        if not self.causal:
            raise ValueError("a carry needs a causal BSRNN (causal=True)")
        z = self.band_split(spec_real, carry["band_split"])
        for layer, layer_carry in zip(self.time_layers, carry["time_layers"]):
            z = layer(z, layer_carry)
        z = z.transpose(1, 2).contiguous()
        for layer, layer_carry in zip(self.band_layers, carry["band_layers"]):
            z = layer(z, layer_carry)
        return self.mask_decoder(z, carry["mask_decoder"])
