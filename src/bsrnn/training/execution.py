"""How the networks run: mixed precision and ``torch.compile``, without touching what is saved.

The trainer registers the plain modules with the checkpoint engine and calls them only through
the callables made here. So ``--amp bf16`` and ``--compile`` change how a forward pass is
computed and never the checkpoint: the state dict keeps its names (no ``_orig_mod.`` prefix
from ``torch.compile``), a run can be resumed with or without either flag, and the files open
in code that knows nothing about them.

bfloat16 has float32's exponent range, so unlike float16 it needs no loss scaling (no
``GradScaler`` state to save). Autocast covers the forward passes only; losses, the STFT, the
backward of float32 parameters and the optimizer steps stay float32.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from bsrnn.errors import UserError

AMP_DTYPES: dict[str, torch.dtype | None] = {"off": None, "bf16": torch.bfloat16}


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


def forward_of(module: nn.Module, device: torch.device, amp: str, compile: bool,
               backend: str = "inductor") -> Callable[..., torch.Tensor]:
    """The callable that runs ``module``'s forward pass as ``amp`` and ``compile`` ask.

    ``compile`` wraps the module with ``torch.compile`` (default mode, ``backend``): the first
    calls, and the first after switching between train and eval, pay the compilation. On CPU,
    Inductor needs a C++ compiler; torch reports it clearly when there is none. TorchDynamo does
    not trace ``nn.LSTM`` (``torch._dynamo.config.allow_rnn`` is off): each LSTM call is a graph
    break and runs eagerly (cuDNN / oneDNN), so compilation reaches only the band-split, norms
    and mask decoder around them, ~20 % of the generator's time on CPU. Not measured on a GPU.
    """
    function: Callable[..., torch.Tensor] = module
    if compile:
        function = torch.compile(module, backend=backend)
    dtype = AMP_DTYPES[amp]
    if dtype is torch.bfloat16 and not bf16_runs_here(device.type):
        raise UserError(
            f"--amp {amp}: expected a processor with bfloat16 instructions (AVX512-BF16 or AMX) for the "
            f"LSTMs, found one without (oneDNN has no bfloat16 LSTM for it). Fix: train without --amp "
            "(float32), or on a GPU or a CPU that has them."
        )
    if dtype is not None:
        function = Autocast(function, device.type, dtype)
    return function


def describe_execution(device: torch.device, amp: str, compile: bool) -> str | None:
    """One log line about the non-default execution choices, or None when there are none."""
    parts = []
    if amp != "off":
        parts.append(f"{amp} autocast of both networks' forward passes on {device.type} "
                     "(numerically a different function from float32)")
    if compile:
        parts.append("torch.compile of the generator (the first steps compile)")
    return "Running with " + " and ".join(parts) if parts else None
