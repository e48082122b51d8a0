"""Running a network in reduced precision: what both training (``--amp``) and inference
(``--precision``) need, below both of them.

bfloat16 has float32's exponent range, so unlike float16 it needs no loss scaling. On a CPU it
needs processor support for the LSTMs, which ``bf16_runs_here`` probes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn


class Autocast:
    """Calls ``function`` under autocast to ``dtype`` on ``device_type``; returns float32.

    A real output that autocast left in bfloat16 (a discriminator score) is cast back, so the
    losses see the dtype they were written for; complex outputs are float32-based already.
    """

    def __init__(self, function: Callable[..., torch.Tensor], device_type: str, dtype: torch.dtype) -> None:
        self.function = function
        self.device_type = device_type
        self.dtype = dtype

    def __call__(self, *args: Any) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=self.dtype):
            output = self.function(*args)
        if not output.is_complex() and output.dtype != torch.float32:
            output = output.float()
        return output


@functools.cache
def bf16_runs_here(device_type: str) -> bool:
    """Whether this machine runs the generator's LSTMs under bfloat16 autocast.

    On a CPU, oneDNN has a bfloat16 LSTM only where the processor has bfloat16 instructions
    (AVX512-BF16 or AMX); elsewhere the first forward pass fails deep inside torch with "could
    not create a primitive descriptor for the LSTM". A 2x2 LSTM tells, in milliseconds.
    """
    if device_type != "cpu":
        return True  # CUDA autocast runs LSTMs in bfloat16 on every GPU torch supports
    probe = nn.LSTM(2, 2, batch_first=True)
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            probe(torch.zeros(1, 2, 2))
    except RuntimeError:
        return False
    return True
