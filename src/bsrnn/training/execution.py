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

from collections.abc import Callable

import torch
from torch import nn

from bsrnn.errors import UserError
from bsrnn.models.precision import Autocast, bf16_runs_here

__all__ = ["AMP_DTYPES", "Autocast", "bf16_runs_here", "describe_execution", "forward_of"]

AMP_DTYPES: dict[str, torch.dtype | None] = {"off": None, "bf16": torch.bfloat16}


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
