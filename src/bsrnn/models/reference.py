"""Convert state dicts between the reference recipe's parameter names and ours.

Old per-epoch files (``gene_epoch_*``, ``disc_epoch_*``) and the fixtures hold the reference
network's names: one module per band (``band_split.fc{i}``, ``mask_decoder.fc2{i}``, ...) and
numbered layers (``lstm_t{l}``, ``fc_k{l}``, ...); files saved from a DistributedDataParallel
wrapper carry a ``module.`` prefix. Our generator packs the per-band tensors (see
``bsrnn.models.bsrnn``), so loading needs this mapping; the architecture is never written in
those files, so it is inferred from tensor shapes. The discriminator keeps the reference
names, so its conversion only strips the prefix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from bsrnn.models.bands import BAND_WIDTHS, MASK_VALUES_PER_BIN, NUM_BANDS
from bsrnn.models.bsrnn import BSRNN
from bsrnn.models.discriminator import Discriminator

StateDict = Mapping[str, torch.Tensor]

DDP_PREFIX = "module."
_MASK_OUTPUTS_PER_BIN = 2 * MASK_VALUES_PER_BIN  # 12: GLU value + gate halves

# Per-layer renames: reference prefix pattern -> (our ModuleList name, sub-module name).
_LAYER_RENAMES: dict[str, tuple[str, str]] = {
    "norm_t": ("time_layers", "norm"),
    "lstm_t": ("time_layers", "lstm"),
    "fc_t": ("time_layers", "fc"),
    "norm_k": ("band_layers", "norm"),
    "lstm_k": ("band_layers", "lstm"),
    "fc_k": ("band_layers", "fc"),
}
_REFERENCE_LAYER_KEY = re.compile(r"^(norm_t|lstm_t|fc_t|norm_k|lstm_k|fc_k)(\d+)\.(.+)$")
_OUR_LAYER_KEY = re.compile(r"^(time_layers|band_layers)\.(\d+)\.(norm|lstm|fc)\.(.+)$")

_REFERENCE_MARKER = "band_split.fc1.weight"
_OUR_MARKER = "band_split.fc_weight"
_DISCRIMINATOR_MARKER = "layers.0.weight_orig"


def strip_module_prefix(state_dict: StateDict) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` prefix DistributedDataParallel adds to every key, if present."""
    return {
        (key[len(DDP_PREFIX) :] if key.startswith(DDP_PREFIX) else key): value
        for key, value in state_dict.items()
    }


def _describe_keys(state_dict: StateDict, limit: int = 5) -> str:
    keys = list(state_dict)
    shown = ", ".join(repr(k) for k in keys[:limit])
    more = f", ... ({len(keys)} keys)" if len(keys) > limit else f" ({len(keys)} keys)"
    return f"[{shown}{more}]" if keys else "an empty state dict"


def _generator_naming(state_dict: StateDict) -> str:
    """'reference' or 'ours'; ValueError (naming what was found) for anything else."""
    if _REFERENCE_MARKER in state_dict:
        return "reference"
    if _OUR_MARKER in state_dict:
        return "ours"
    hint = (
        " It looks like a discriminator state dict."
        if _DISCRIMINATOR_MARKER in state_dict
        else ""
    )
    raise ValueError(
        f"expected a BSRNN generator state dict with {_REFERENCE_MARKER!r} (reference names) or "
        f"{_OUR_MARKER!r} (bsrnn names); found {_describe_keys(state_dict)}.{hint}"
    )


def _count_layers(state_dict: StateDict, pattern: str) -> int:
    regex = re.compile(pattern)
    indices = {int(m.group(1)) for key in state_dict if (m := regex.match(key))}
    if indices and indices != set(range(min(indices), min(indices) + len(indices))):
        raise ValueError(f"layer numbers for {pattern!r} are not contiguous: {sorted(indices)}")
    return len(indices)


def infer_generator_arch(state_dict: StateDict) -> dict[str, int]:
    """``{"num_channel": N, "num_layer": L}`` from tensor shapes, for either naming scheme.

    Old files do not record the architecture; this reads it from the band-split Linear (N)
    and the number of time-LSTM layers (L), and checks the band-layer count agrees.
    """
    sd = strip_module_prefix(state_dict)
    if _generator_naming(sd) == "reference":
        num_channel = int(sd[_REFERENCE_MARKER].shape[0])
        time_layers = _count_layers(sd, r"^lstm_t(\d+)\.weight_ih_l0$")
        band_layers = _count_layers(sd, r"^lstm_k(\d+)\.weight_ih_l0$")
    else:
        num_channel = int(sd[_OUR_MARKER].shape[0])
        time_layers = _count_layers(sd, r"^time_layers\.(\d+)\.lstm\.weight_ih_l0$")
        band_layers = _count_layers(sd, r"^band_layers\.(\d+)\.lstm\.weight_ih_l0$")
    if time_layers < 1 or time_layers != band_layers:
        raise ValueError(
            "expected a BSRNN generator state dict with the same number (>= 1) of time and band "
            f"LSTM layers; found {time_layers} time and {band_layers} band layers"
        )
    return {"num_channel": num_channel, "num_layer": time_layers}


def infer_discriminator_ndf(state_dict: StateDict) -> int:
    """The discriminator width ``ndf`` from its first conv (``[ndf, 2, 4, 4]``)."""
    sd = strip_module_prefix(state_dict)
    weight = sd.get(_DISCRIMINATOR_MARKER)
    if weight is None or weight.dim() != 4 or weight.shape[1] != 2:
        found = f"shape {tuple(weight.shape)}" if weight is not None else _describe_keys(sd)
        hint = (
            " It looks like a generator state dict."
            if _REFERENCE_MARKER in sd or _OUR_MARKER in sd
            else ""
        )
        raise ValueError(
            f"expected a discriminator state dict with {_DISCRIMINATOR_MARKER!r} of shape "
            f"[ndf, 2, 4, 4]; found {found}.{hint}"
        )
    return int(weight.shape[0])


def _band_slices(per_bin: int) -> list[slice]:
    """Slices of a packed axis holding ``per_bin`` entries per bin, one per band."""
    slices, start = [], 0
    for width in BAND_WIDTHS:
        slices.append(slice(start, start + per_bin * width))
        start += per_bin * width
    return slices


def _require(state_dict: StateDict, keys: list[str]) -> None:
    missing = [key for key in keys if key not in state_dict]
    if missing:
        raise ValueError(
            f"BSRNN state dict is incomplete: missing {len(missing)} keys, e.g. {missing[:5]}"
        )


def generator_state_dict_from_reference(state_dict: StateDict) -> dict[str, torch.Tensor]:
    """Reference-named generator weights (optionally ``module.``-prefixed) -> our names."""
    sd = strip_module_prefix(state_dict)
    if _generator_naming(sd) != "reference":
        raise ValueError(
            "expected reference parameter names (band_split.fc1.weight, ...); "
            "this state dict already uses bsrnn names"
        )
    bands = range(1, NUM_BANDS + 1)
    per_band_modules = [
        ("band_split", kind) for kind in ("norm", "fc")
    ] + [("mask_decoder", kind) for kind in ("norm", "fc1", "fc2")]
    _require(
        sd,
        [
            f"{module}.{kind}{i}.{param}"
            for module, kind in per_band_modules
            for i in bands
            for param in ("weight", "bias")
        ],
    )

    def gather(template: str) -> list[torch.Tensor]:
        return [sd[template.format(i)] for i in bands]

    out: dict[str, torch.Tensor] = {
        "band_split.norm_weight": torch.cat(gather("band_split.norm{}.weight")),
        "band_split.norm_bias": torch.cat(gather("band_split.norm{}.bias")),
        "band_split.fc_weight": torch.cat(gather("band_split.fc{}.weight"), dim=1),
        "band_split.fc_bias": torch.stack(gather("band_split.fc{}.bias")),
        "mask_decoder.norm_weight": torch.stack(gather("mask_decoder.norm{}.weight")),
        "mask_decoder.norm_bias": torch.stack(gather("mask_decoder.norm{}.bias")),
        "mask_decoder.fc1_weight": torch.stack(gather("mask_decoder.fc1{}.weight")),
        "mask_decoder.fc1_bias": torch.stack(gather("mask_decoder.fc1{}.bias")),
        "mask_decoder.fc2_weight": torch.cat(gather("mask_decoder.fc2{}.weight")),
        "mask_decoder.fc2_bias": torch.cat(gather("mask_decoder.fc2{}.bias")),
    }
    unexpected = []
    for key, value in sd.items():
        if key.startswith(("band_split.", "mask_decoder.")):
            continue
        match = _REFERENCE_LAYER_KEY.match(key)
        if match is None:
            unexpected.append(key)
            continue
        kind, number, rest = match.groups()
        layer_list, submodule = _LAYER_RENAMES[kind]
        out[f"{layer_list}.{int(number) - 1}.{submodule}.{rest}"] = value
    if unexpected:
        raise ValueError(f"unexpected keys in a reference BSRNN state dict: {unexpected[:5]}")
    return out


def generator_state_dict_to_reference(state_dict: StateDict) -> dict[str, torch.Tensor]:
    """Our generator weights -> the reference names (the inverse of ``..._from_reference``)."""
    sd = strip_module_prefix(state_dict)
    if _generator_naming(sd) != "ours":
        raise ValueError(
            "expected bsrnn parameter names (band_split.fc_weight, ...); "
            "this state dict already uses reference names"
        )
    packed = [f"band_split.{n}" for n in ("norm_weight", "norm_bias", "fc_weight", "fc_bias")]
    packed += [
        f"mask_decoder.{n}"
        for n in ("norm_weight", "norm_bias", "fc1_weight", "fc1_bias", "fc2_weight", "fc2_bias")
    ]
    _require(sd, packed)
    out: dict[str, torch.Tensor] = {}
    features = _band_slices(2)
    mask_outputs = _band_slices(_MASK_OUTPUTS_PER_BIN)
    for band in range(NUM_BANDS):
        i = band + 1
        f, m = features[band], mask_outputs[band]
        out[f"band_split.norm{i}.weight"] = sd["band_split.norm_weight"][f].clone()
        out[f"band_split.norm{i}.bias"] = sd["band_split.norm_bias"][f].clone()
        out[f"band_split.fc{i}.weight"] = sd["band_split.fc_weight"][:, f].clone()
        out[f"band_split.fc{i}.bias"] = sd["band_split.fc_bias"][band].clone()
        out[f"mask_decoder.norm{i}.weight"] = sd["mask_decoder.norm_weight"][band].clone()
        out[f"mask_decoder.norm{i}.bias"] = sd["mask_decoder.norm_bias"][band].clone()
        out[f"mask_decoder.fc1{i}.weight"] = sd["mask_decoder.fc1_weight"][band].clone()
        out[f"mask_decoder.fc1{i}.bias"] = sd["mask_decoder.fc1_bias"][band].clone()
        out[f"mask_decoder.fc2{i}.weight"] = sd["mask_decoder.fc2_weight"][m].clone()
        out[f"mask_decoder.fc2{i}.bias"] = sd["mask_decoder.fc2_bias"][m].clone()
    reference_prefix = {value: key for key, value in _LAYER_RENAMES.items()}
    unexpected = []
    for key, value in sd.items():
        if key in packed:
            continue
        match = _OUR_LAYER_KEY.match(key)
        if match is None:
            unexpected.append(key)
            continue
        layer_list, number, submodule, rest = match.groups()
        out[f"{reference_prefix[(layer_list, submodule)]}{int(number) + 1}.{rest}"] = value
    if unexpected:
        raise ValueError(f"unexpected keys in a bsrnn BSRNN state dict: {unexpected[:5]}")
    return out


def discriminator_state_dict_from_reference(state_dict: StateDict) -> dict[str, torch.Tensor]:
    """Reference discriminator weights -> ours: the names are shared, only ``module.`` goes."""
    sd = strip_module_prefix(state_dict)
    infer_discriminator_ndf(sd)  # validates that this is a discriminator
    return sd


def _load_strict(model: torch.nn.Module, state_dict: StateDict) -> None:
    """``load_state_dict`` whose failures (missing keys, wrong shapes) are ValueErrors."""
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:
        raise ValueError(
            f"state dict does not fit {type(model).__name__}({model.config()}): {error}"
        ) from error


def generator_from_state_dict(state_dict: StateDict) -> BSRNN:
    """Build a BSRNN of the inferred architecture and load weights in either naming scheme."""
    sd = strip_module_prefix(state_dict)
    model = BSRNN(**infer_generator_arch(sd))
    if _generator_naming(sd) == "reference":
        sd = generator_state_dict_from_reference(sd)
    _load_strict(model, sd)
    return model


def discriminator_from_state_dict(state_dict: StateDict) -> Discriminator:
    """Build a Discriminator of the inferred width and load its (reference-named) weights."""
    sd = discriminator_state_dict_from_reference(state_dict)
    model = Discriminator(ndf=infer_discriminator_ndf(sd))
    _load_strict(model, sd)
    return model
