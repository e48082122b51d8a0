"""Every random stream a training run draws from, as one stateful object.

Saved as tensors and plain values so that ``weights_only=True`` opens it; notably the legacy
``np.random.get_state()`` tuple (rejected by the weights-only unpickler as a numpy array) is
converted to a dict of plain ints. Restoring puts every stream back exactly, so the next random
number after a resume is the one the uninterrupted run would have drawn.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import torch

try:  # NumPy is optional for the engine (torch and the standard library are its only needs).
    import numpy as np
except ImportError:  # pragma: no cover - exercised only where numpy is absent
    np = None  # type: ignore[assignment]


class RNGStreams:
    """Captures and restores Python ``random``, NumPy (legacy global and named Generators),
    torch CPU and every CUDA device's generator.

    ``numpy_generators`` are ``np.random.Generator`` objects the caller owns (e.g. from
    ``np.random.default_rng``); they are restored in place.
    """

    def __init__(self, numpy_generators: Mapping[str, Any] | None = None) -> None:
        self.numpy_generators = dict(numpy_generators or {})

    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss_next = random.getstate()
        state: dict[str, Any] = {
            "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
            "numpy_legacy": None,
            "numpy_generators": {
                name: _plain(generator.bit_generator.state) for name, generator in self.numpy_generators.items()
            },
            "torch_cpu": torch.get_rng_state(),
            "torch_cuda": [],
        }
        if np is not None:
            legacy = np.random.get_state(legacy=False)
            state["numpy_legacy"] = {
                "bit_generator": legacy["bit_generator"],
                "key": torch.from_numpy(legacy["state"]["key"].astype(np.int64)),
                "pos": int(legacy["state"]["pos"]),
                "has_gauss": int(legacy["has_gauss"]),
                "gauss": float(legacy["gauss"]),
            }
        if torch.cuda.is_available():
            state["torch_cuda"] = [state.cpu() for state in torch.cuda.get_rng_state_all()]
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        python = state["python"]
        random.setstate((python["version"], tuple(python["state"]), python["gauss_next"]))
        legacy = state.get("numpy_legacy")
        if legacy is not None and np is not None:
            np.random.set_state(
                {
                    "bit_generator": legacy["bit_generator"],
                    "state": {"key": legacy["key"].numpy().astype(np.uint32), "pos": legacy["pos"]},
                    "has_gauss": legacy["has_gauss"],
                    "gauss": legacy["gauss"],
                }
            )
        for name, generator in self.numpy_generators.items():
            if name in state["numpy_generators"]:
                generator.bit_generator.state = state["numpy_generators"][name]
        torch.set_rng_state(state["torch_cpu"])
        cuda_states = state.get("torch_cuda") or []
        if cuda_states and torch.cuda.is_available():
            count = min(len(cuda_states), torch.cuda.device_count())
            for device in range(count):
                torch.cuda.set_rng_state(cuda_states[device], device)


def _plain(value: Any) -> Any:
    """Bit-generator states hold numpy ints/arrays in places; make them Python values."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    return value
