"""A trained generator as an ONNX model: ``bsrnn ckpt export RUN --format onnx``, run by ONNX Runtime.

Why only the network: ONNX has no complex tensors, and an STFT inside the graph would have to be
re-implemented as a convolution whose numerics differ from ``torch.stft``. So the graph is the
spectrum-to-spectrum network in real arithmetic (``RealValuedGenerator``: input ``spectrum``
``[batch, 257, frames, 2]`` float32, real and imaginary parts; output ``enhanced``, the same shape;
batch and frames dynamic), and the STFT, inverse STFT, chunking, resampling and refusals stay in
bsrnn (``bsrnn.enhancement``), the same code as for a checkpoint. ``bsrnn enhance model.onnx ...``
and ``bsrnn evaluate model.onnx ...`` load it in place of a checkpoint; the output equals the
PyTorch model's within float32 rounding: 5e-7 of the peak for a tiny model (tested to 1e-4),
3.2e-5 for the default size (N 64, L 5, fixture weights, 10 s; ONNX Runtime's LSTM and
activations round differently from oneDNN's, and 10 recurrent layers carry it).

The file's metadata (ONNX ``metadata_props``) says what it is, as a bundle's does (``bsrnn.bundle``):
``format`` ``bsrnn-generator-onnx``, ``format_version``, ``model`` and ``signal`` (JSON), the source
checkpoint and its digest, its epoch and global step, and the bsrnn version. A causal model is
exported like any other; ONNX Runtime runs it on whole spectrograms (streaming needs the PyTorch
model, which carries its state between hops).

ONNX Runtime is an optional dependency (``pip install 'bsrnn[onnx]'``: ``onnx`` to export,
``onnxruntime`` to run); without it the commands stop at once and say so. Runs on the CPU, in
float32.
"""

from __future__ import annotations

import copy
import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bsrnn import __version__
from bsrnn.bundle import SIGNAL, check_model_metadata
from bsrnn.checkpoint import LoadedCheckpoint
from bsrnn.errors import UserError
from bsrnn.models import BSRNN
from bsrnn.output import InputFiles, write_file

ONNX_FORMAT = "bsrnn-generator-onnx"
ONNX_VERSION = 1
ONNX_SUFFIX = ".onnx"
OPSET = 17
INSTALL_HINT = "pip install 'bsrnn[onnx]' (onnx and onnxruntime)"


def is_onnx_model(location: Path | str) -> bool:
    return Path(location).suffix.lower() == ONNX_SUFFIX and not Path(location).is_dir()


def require(module: str) -> Any:
    """``import module``, or a UserError naming the optional extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise UserError(f"ONNX models need the {module} package, found it missing ({error}). "
                        f"Fix: {INSTALL_HINT}") from error


def apply_three_tap_mask_real(spec: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``apply_three_tap_mask`` in real arithmetic: ``spec`` ``[B, F, T, 2]``, ``mask`` ``[B, F, T, 3, 2]``."""
    padded = F.pad(spec, (0, 0, 1, 1))  # a zero frame before the first and after the last
    frames = spec.shape[2]
    real = torch.zeros_like(spec[..., 0])
    imag = torch.zeros_like(spec[..., 0])
    for tap in range(3):
        x = padded[:, :, tap : tap + frames]
        m = mask[..., tap, :]
        real = real + (m[..., 0] * x[..., 0] - m[..., 1] * x[..., 1])
        imag = imag + (m[..., 0] * x[..., 1] + m[..., 1] * x[..., 0])
    return torch.stack([real, imag], dim=-1)


class RealValuedGenerator(nn.Module):
    """``BSRNN.forward`` without complex tensors: ``[B, 257, T, 2]`` -> ``[B, 257, T, 2]``.

    Holds a copy of the model whose LSTMs run in one call whatever the row count (the CPU row
    grouping of ``ResidualRNNLayer`` is a Python loop that a trace would freeze at one size).
    """

    def __init__(self, model: BSRNN) -> None:
        super().__init__()
        self.model = copy.deepcopy(model).cpu().eval()
        for layer in [*self.model.time_layers, *self.model.band_layers]:
            layer.cpu_rows_per_thread = 0

    def forward(self, spectrum: torch.Tensor) -> torch.Tensor:
        return apply_three_tap_mask_real(spectrum, self.model.real_mask(spectrum))


def export_onnx(model: BSRNN, loaded: LoadedCheckpoint, out: Path, *, overwrite: bool = False) -> None:
    """Write ``model`` (the generator of ``loaded``) as an ONNX model at ``out``, with its metadata.

    Written through ``bsrnn.output.write_file`` (a temporary beside ``out``, renamed when complete).
    The trace runs on 1 example of 20 frames; batch and frames are dynamic in the graph.
    """
    onnx = require("onnx")
    network = RealValuedGenerator(model)
    example = torch.randn(1, model.band_split.norm_weight.shape[0] // 2, 20, 2)
    metadata = {
        "format": ONNX_FORMAT, "format_version": str(ONNX_VERSION),
        "model": json.dumps({"class": "BSRNN", **model.config()}), "signal": json.dumps(SIGNAL),
        "source": str(loaded.path), "source_digest": loaded.digest, "epoch": str(loaded.get("epoch")),
        "global_step": str(loaded.get("global_step")), "bsrnn_version": __version__,
    }
    with tempfile.TemporaryDirectory() as scratch:
        traced = Path(scratch) / "model.onnx"
        with torch.no_grad(), warnings.catch_warnings():
            # The tracer's notes on what it froze: the LSTM row grouping (off in this copy), slices it
            # does not fold, LSTMs with a batch other than 1 (checked: the graph runs any batch). And
            # the TorchScript exporter's deprecations: chosen on purpose, it needs no onnxscript and
            # writes nn.LSTM as ONNX's LSTM operator; a torch without it fails here, saying so.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", "Constant folding", UserWarning)
            warnings.filterwarnings("ignore", "Exporting a model to ONNX with a batch_size", UserWarning)
            torch.onnx.export(network, (example,), str(traced), dynamo=False, opset_version=OPSET,
                              input_names=["spectrum"], output_names=["enhanced"],
                              dynamic_axes={"spectrum": {0: "batch", 2: "frames"},
                                            "enhanced": {0: "batch", 2: "frames"}})
        graph = onnx.load(str(traced))
        onnx.checker.check_model(graph)
        for key, value in metadata.items():
            entry = graph.metadata_props.add()
            entry.key, entry.value = key, value

        write_file(out, lambda temporary: onnx.save(graph, str(temporary)), overwrite=overwrite, flag="--out",
                   inputs=InputFiles([loaded.path]))


class OnnxSpectrumEnhancer:
    """An ONNX model as a ``SpectrumEnhancer``: complex STFT ``[B, 257, T]`` in, enhanced out."""

    def __init__(self, session: Any) -> None:
        self.session = session

    def __call__(self, spec: torch.Tensor) -> torch.Tensor:
        spectrum = torch.view_as_real(spec.detach().cpu().to(torch.complex64)).numpy()
        (enhanced,) = self.session.run(["enhanced"], {"spectrum": np.ascontiguousarray(spectrum)})
        return torch.view_as_complex(torch.from_numpy(np.ascontiguousarray(enhanced))).to(spec.device)


def read_onnx(path: Path) -> tuple[OnnxSpectrumEnhancer, dict[str, str]]:
    """The ONNX model at ``path``, ready to run, and its metadata; UserError if it is not one of ours."""
    runtime = require("onnxruntime")
    fix = "Fix: pass a file written by `bsrnn ckpt export ... --format onnx`, a checkpoint or a run directory."
    options = runtime.SessionOptions()
    options.log_severity_level = 3  # errors only: ONNX Runtime's warnings are not the user's to act on
    # No graph rewrites: ONNX Runtime's fusions move the default model (N 64, L 5, fixture weights,
    # 10 s) 1.2e-4 of the peak away from PyTorch, 3.2e-5 without them, at the same speed (RTF 0.23
    # against 0.22 on one thread; PyTorch 0.16).
    options.graph_optimization_level = runtime.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = runtime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # noqa: BLE001 - ONNX Runtime raises its own exception types
        raise UserError(f"{path}: expected an ONNX model, found a file ONNX Runtime cannot load "
                        f"({str(error).splitlines()[0]}). {fix}") from error
    metadata = dict(session.get_modelmeta().custom_metadata_map)
    check_model_metadata(path, metadata, ONNX_FORMAT, ONNX_VERSION, "ONNX model", "ONNX file", fix)
    return OnnxSpectrumEnhancer(session), metadata
