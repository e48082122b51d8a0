"""bsrnn: Band-Split RNN speech enhancement trained against a MetricGAN discriminator.

The package is layered; each layer imports only from those above it in this list:

- ``bsrnn.checkpoint``: the checkpoint engine (torch and the standard library only).
- ``bsrnn.models``, ``bsrnn.audio``, ``bsrnn.losses``, ``bsrnn.data``, ``bsrnn.metrics``:
  the speech core.
- ``bsrnn.config``, ``bsrnn.training``: the trainer, which registers its state with the engine.
- ``bsrnn.enhancement``, ``bsrnn.inference`` (``Enhancer``): trained generators enhancing audio.
- ``bsrnn.cli``: the ``bsrnn`` command, a thin face over the above.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Config", "Enhancer", "train", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy: `import bsrnn` stays cheap and the engine can be used without the trainer.
    if name == "Config":
        from bsrnn.config import Config

        return Config
    if name == "train":
        from bsrnn.training import train

        return train
    if name == "Enhancer":
        from bsrnn.inference import Enhancer

        return Enhancer
    raise AttributeError(f"module 'bsrnn' has no attribute {name!r}")
