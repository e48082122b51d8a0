"""The speech networks: the BSRNN generator and the MetricGAN discriminator.

Both compute the same functions as the reference recipe's networks; ``reference`` converts
weights between its parameter names and ours and infers architectures from old files.
"""

from __future__ import annotations

from bsrnn.models.bsrnn import BSRNN
from bsrnn.models.discriminator import Discriminator
from bsrnn.models.reference import (
    discriminator_from_state_dict,
    discriminator_state_dict_from_reference,
    generator_from_state_dict,
    generator_state_dict_from_reference,
    generator_state_dict_to_reference,
    infer_discriminator_ndf,
    infer_generator_arch,
    strip_module_prefix,
)

__all__ = [
    "BSRNN",
    "Discriminator",
    "discriminator_from_state_dict",
    "discriminator_state_dict_from_reference",
    "generator_from_state_dict",
    "generator_state_dict_from_reference",
    "generator_state_dict_to_reference",
    "infer_discriminator_ndf",
    "infer_generator_arch",
    "strip_module_prefix",
]
