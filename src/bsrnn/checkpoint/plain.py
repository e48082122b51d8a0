"""Make a state tree safe for ``torch.load(weights_only=True)`` before it is written.

The weights-only unpickler accepts tensors, containers and Python scalars; anything else
(numpy scalars, dataclasses, enums, functions) makes the file unloadable for the user's plain
``torch.load`` or forces them into ``weights_only=False``. We convert what has one obvious plain
form (numpy scalars and arrays, tuples stay tuples) and refuse the rest up front, naming the key
path, instead of writing a file that fails on load days later.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from bsrnn.checkpoint.errors import UnsafeStateError

_SCALARS = (bool, int, float, str, bytes, type(None))


def to_weights_only_safe(value: Any, where: str = "checkpoint") -> Any:
    """Return ``value`` with numpy values made plain; raise ``UnsafeStateError`` on the rest."""
    if isinstance(value, torch.Tensor):
        return value
    if type(value) in _SCALARS:
        return value
    if isinstance(value, (str, int, float)) and not hasattr(value, "__dataclass_fields__"):
        # str/int/float subclasses (TorchVersion, IntEnum, numpy.float64) pickle as their class.
        base = str if isinstance(value, str) else bool if isinstance(value, bool) else int if isinstance(value, int) else float
        return base(value)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise UnsafeStateError(f"{where}: key {key!r} is a {type(key).__name__}; use str or int keys")
            out[key] = to_weights_only_safe(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, list):
        return [to_weights_only_safe(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, tuple):
        return tuple(to_weights_only_safe(item, f"{where}[{i}]") for i, item in enumerate(value))
    if isinstance(value, (torch.Size, torch.dtype, torch.device)):
        return value
    module = type(value).__module__
    if module == "numpy":
        if hasattr(value, "shape") and getattr(value, "ndim", 0) > 0:
            return torch.from_numpy(value.copy())
        return value.item()
    raise UnsafeStateError(
        f"{where} is a {module}.{type(value).__qualname__}, which plain "
        "torch.load(weights_only=True) cannot open. Store tensors, numbers, strings, lists or "
        "dicts (convert dataclasses with dataclasses.asdict)."
    )


def is_finite_number(value: Any) -> bool:
    """True for a real, finite int/float (or a one-element tensor holding one)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return False
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value)


def nonfinite_tensor_keys(state: Any, prefix: str = "") -> list[str]:
    """Key paths of floating-point tensors in ``state`` that hold NaN or inf."""
    if isinstance(state, torch.Tensor):
        if state.is_floating_point() or state.is_complex():
            return [] if bool(torch.isfinite(state).all()) else [prefix or "value"]
        return []
    if isinstance(state, Mapping):
        return [key for name, value in state.items()
                for key in nonfinite_tensor_keys(value, f"{prefix}.{name}" if prefix else str(name))]
    if isinstance(state, (list, tuple)):
        return [key for index, value in enumerate(state)
                for key in nonfinite_tensor_keys(value, f"{prefix}[{index}]")]
    return []
