"""A trained generator as one self-describing file: ``bsrnn ckpt export`` writes it, ``enhance`` reads it.

A checkpoint holds the whole training state (both networks, both optimizers, RNG streams): far
more than a model to ship, and it needs bsrnn's config conventions to rebuild the network. The
bundle is a ``.safetensors`` file (weights only; loading it can run no code) whose metadata says
everything needed to use it without the run directory:

- ``format`` ``bsrnn-generator``, ``format_version`` ``1``, or ``2`` for a causal generator: its
  tensors are those of the reference network, so a reader that does not know ``causal`` would
  build the wrong network without a word; version 2 makes such a reader refuse it instead;
- ``model``: JSON, the class and its constructor arguments (``num_channel``, ``num_layer``,
  ``causal``);
- ``signal``: JSON, the front end the weights expect (sample rate, FFT size, hop, window,
  magnitude compression exponent);
- where it came from: the source checkpoint's path and digest (``source_digest``,
  ``xxh3-128:...``), its epoch and global step, and the bsrnn version that exported it.

``bsrnn enhance BUNDLE.safetensors ...`` and ``bsrnn evaluate BUNDLE.safetensors ...`` accept it
in place of a run directory or checkpoint.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bsrnn import __version__, keys
from bsrnn.audio import COMPRESSION_EXPONENT, HOP_LENGTH, N_FFT, SAMPLE_RATE
from bsrnn.checkpoint import LoadedCheckpoint
from bsrnn.errors import UserError
from bsrnn.models import BSRNN
from bsrnn.output import InputFiles, write_file

BUNDLE_FORMAT = "bsrnn-generator"
BUNDLE_VERSION = 2
"""The newest format this bsrnn reads and writes (2: a causal generator; 1: any other)."""
CAUSAL_BUNDLE_VERSION = 2
BUNDLE_SUFFIX = ".safetensors"
SIGNAL = {"sample_rate": SAMPLE_RATE, "n_fft": N_FFT, "hop_length": HOP_LENGTH, "window": "hann",
          "compression_exponent": COMPRESSION_EXPONENT}
"""The front end every generator of this package expects (``bsrnn.audio``)."""


def is_bundle(location: Path | str) -> bool:
    return Path(location).suffix == BUNDLE_SUFFIX and not Path(location).is_dir()


def write_bundle(loaded: LoadedCheckpoint, out: Path, *, overwrite: bool = False) -> int:
    """Write the generator of a verified checkpoint as a bundle at ``out``; return its tensor count.

    Written through ``bsrnn.output.write_file`` (a temporary beside ``out``, fsynced, renamed),
    so ``out`` is never half a file, never the checkpoint it comes from, replaced only with
    ``overwrite``; and made readable like a checkpoint (safetensors itself creates files
    readable by the owner only).
    """
    from safetensors.torch import save_file

    weights = loaded.get(keys.GENERATOR)
    if not isinstance(weights, Mapping) or not weights:
        raise UserError(f"{loaded.path} holds no {keys.GENERATOR} to export. Fix: export a checkpoint written "
                        "by `bsrnn train` or `bsrnn ckpt migrate`.")
    config = loaded.get(keys.CONFIG) or {}
    causal = config.get("causal") is True
    model = {"class": "BSRNN", "num_channel": int(config.get("num_channel", 64)),
             "num_layer": int(config.get("num_layer", 5)), "causal": causal}
    version = CAUSAL_BUNDLE_VERSION if causal else 1
    metadata = {
        "format": BUNDLE_FORMAT, "format_version": str(version), "model": json.dumps(model),
        "signal": json.dumps(SIGNAL), "source": str(loaded.path), "source_digest": loaded.digest,
        "epoch": str(loaded.get("epoch")), "global_step": str(loaded.get("global_step")),
        "bsrnn_version": __version__,
    }

    def save(temporary: Path) -> None:
        save_file({name: tensor.contiguous() for name, tensor in weights.items()}, str(temporary),
                  metadata=metadata)
        os.chmod(temporary, 0o644 & ~_umask())

    write_file(out, save, overwrite=overwrite, flag="--out", inputs=InputFiles([loaded.path]))
    return len(weights)


def read_bundle(path: Path) -> tuple[BSRNN, dict[str, Any]]:
    """The generator of a bundle (in eval mode) and its metadata; UserError if it is not one."""
    from safetensors import SafetensorError, safe_open

    fix = "Fix: pass a file written by `bsrnn ckpt export`, a checkpoint, or a run directory."
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            weights = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError) as error:
        raise UserError(f"{path}: expected a bsrnn model bundle, found a file safetensors cannot read "
                        f"({error}). {fix}") from error
    check_model_metadata(path, metadata, BUNDLE_FORMAT, BUNDLE_VERSION, "model bundle", ".safetensors file", fix)
    spec = json.loads(metadata.get("model", "{}"))
    model = BSRNN(num_channel=int(spec.get("num_channel", 64)), num_layer=int(spec.get("num_layer", 5)),
                  causal=spec.get("causal") is True)
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        raise UserError(f"{path}: its weights do not fit BSRNN({spec}): {str(error).splitlines()[0]}. {fix}") \
            from error
    return model.eval(), metadata


def check_model_metadata(path: Path, metadata: dict[str, str], format: str, version: int, kind: str,
                         container: str, fix: str) -> None:
    """Refuse an exported model (bundle or ONNX) without bsrnn's metadata of ``format``, from a newer
    bsrnn than reads ``version``, or for another signal front end than ``SIGNAL``: each would
    enhance wrongly without a word."""
    if metadata.get("format") != format:
        raise UserError(f"{path}: expected a bsrnn {kind}, found a {container} without bsrnn's metadata "
                        f"(format {metadata.get('format')!r}). {fix}")
    if int(metadata.get("format_version", "0")) > version:
        raise UserError(f"{path}: {kind} format version {metadata.get('format_version')} is newer than this "
                        f"bsrnn reads ({version}). Fix: upgrade bsrnn.")
    signal = json.loads(metadata.get("signal", "{}"))
    if signal != SIGNAL:
        raise UserError(f"{path}: the model expects the front end {signal}, this bsrnn computes {SIGNAL}. "
                        "Fix: use the bsrnn version that exported it.")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask

