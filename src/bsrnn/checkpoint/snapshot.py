"""Copying a state tree to host memory so training can go on while a writer saves it.

An asynchronous save must not see parameters that the next optimizer step changes, so every
tensor is copied before ``save`` returns. The copies go into staging buffers that are kept and
reused by the next save (same key path, shape and dtype), so a run allocates its checkpoint's
worth of host memory once rather than at every save. Buffers are pinned when CUDA is present,
which makes device-to-host copies asynchronous; one synchronisation ends the snapshot.
"""

from __future__ import annotations

from typing import Any

import torch


class StagingBuffers:
    """Host tensors keyed by their path in the state tree, reused between snapshots."""

    def __init__(self) -> None:
        self._buffers: dict[tuple[Any, ...], torch.Tensor] = {}
        self._pin = torch.cuda.is_available()

    @property
    def nbytes(self) -> int:
        return sum(buffer.untyped_storage().nbytes() for buffer in self._buffers.values())

    def snapshot(self, tree: Any) -> Any:
        """A structural copy of ``tree`` whose tensors live in the staging buffers."""
        copied = self._copy(tree, ())
        if self._pin:
            torch.cuda.synchronize()
        return copied

    def _copy(self, value: Any, path: tuple[Any, ...]) -> Any:
        if isinstance(value, torch.Tensor):
            return self._stage(value, path)
        if isinstance(value, dict):
            return {key: self._copy(item, path + (key,)) for key, item in value.items()}
        if isinstance(value, list):
            return [self._copy(item, path + (index,)) for index, item in enumerate(value)]
        if isinstance(value, tuple):
            return tuple(self._copy(item, path + (index,)) for index, item in enumerate(value))
        return value  # immutable scalars and strings

    def _stage(self, tensor: torch.Tensor, path: tuple[Any, ...]) -> torch.Tensor:
        tensor = tensor.detach()
        buffer = self._buffers.get(path)
        if buffer is None or buffer.shape != tensor.shape or buffer.dtype != tensor.dtype:
            buffer = torch.empty(tensor.shape, dtype=tensor.dtype, device="cpu", pin_memory=self._pin)
            self._buffers[path] = buffer
        buffer.copy_(tensor, non_blocking=self._pin)
        return buffer
