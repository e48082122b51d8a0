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
checkpoint and its digest, its epoch and global step, and the bsrnn version.

A causal model's file also holds a second graph, the streaming step (``StatefulMask``): inputs
``frames`` ``[batch, 257, n, 2]`` (the signal's next frames, usually one) and the state a stream
carries, as named tensors (``bsrnn.models.streaming.stream_state_layout``: every cumulative norm's
float64 running sums, every time LSTM's ``h`` and ``c``, ``frames_seen``; zeros at a signal's
start); outputs ``mask`` ``[batch, 257, n, 3, 2]`` and ``next_<name>`` for each state tensor.
``bsrnn enhance model.onnx ... --stream`` and ``Enhancer.load("model.onnx").stream(rate)`` run it
in ONNX Runtime (``OnnxMaskStep``) inside the same stream as a PyTorch model
(``bsrnn.models.streaming.SpectrumStream``: the three-tap mask, the one-frame delay; and
``bsrnn.streaming``: the framing, STFT and overlap-add), so only the network changes runtime. The
output equals the PyTorch stream's and the offline forward's within float32 rounding (3e-7 of the
peak for a tiny model, tested to 1e-4), with the same length.

Where the step graph lives, and why: in the same file, in the metadata entry ``stream_step``
(base64 of an ONNX ``GraphProto``) without its weights: each weight it shares with the main graph
(all of them) is named ``shared/<name of the main graph's initializer>`` and taken from the main
graph when bsrnn builds the step model (``stream_step_model``). One file, because a model is
shipped, copied and verified as one thing: a second file could be left behind or paired with
another export's; the weights are stored once (for N 64, L 5 the file grows by the step's 0.3 MB
of graph, beside 12.3 MB of weights, not by a second copy of them); and the main graph and its interface stay as they
were, so the file still runs in any ONNX Runtime and in older bsrnn versions (``format_version``
stays 1; a file without the entry, from an older bsrnn, is refused for streaming with the fix).
The cost: plain ONNX tools do not see the step graph; ``stream_step_model(path)`` gives it as a
model (``onnx.save`` it to run it elsewhere), and building it needs the ``onnx`` package as well
as ``onnxruntime`` (both in the extra below). The step graph is not one graph with the main one:
an ONNX model runs one graph, and every state tensor would become a required input of the
whole-spectrogram interface.

ONNX Runtime is an optional dependency (``pip install 'bsrnn[onnx]'``: ``onnx`` to export,
``onnxruntime`` to run, both to stream); without it the commands stop at once and say so. Runs on the CPU, in
float32.
"""

from __future__ import annotations

import base64
import copy
import hashlib
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
from bsrnn.models.streaming import StatefulMask, stream_state_layout
from bsrnn.output import InputFiles, write_file

ONNX_FORMAT = "bsrnn-generator-onnx"
ONNX_VERSION = 1
ONNX_SUFFIX = ".onnx"
OPSET = 17
INSTALL_HINT = "pip install 'bsrnn[onnx]' (onnx and onnxruntime)"
STREAM_KEY = "stream_step"
"""The metadata entry holding a causal model's streaming step graph (see the module docstring)."""
SHARED_PREFIX = "shared/"
"""How the step graph names a weight it takes from the main graph: ``shared/`` + its name there."""
STEP_FRAMES = 4
"""Frames of the example the step is traced on (frames are dynamic in the graph; a stream passes 1)."""


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

    Holds a copy of the model whose LSTMs run in one call whatever the row count (``one_call_copy``).
    """

    def __init__(self, model: BSRNN) -> None:
        super().__init__()
        self.model = one_call_copy(model)

    def forward(self, spectrum: torch.Tensor) -> torch.Tensor:
        return apply_three_tap_mask_real(spectrum, self.model.real_mask(spectrum))


def one_call_copy(model: BSRNN) -> BSRNN:
    """A CPU copy of ``model`` in eval mode whose LSTMs run in one call whatever the row count: the
    CPU row grouping of ``ResidualRNNLayer`` is a Python loop that a trace would freeze at one size."""
    copied = copy.deepcopy(model).cpu().eval()
    for layer in [*copied.time_layers, *copied.band_layers]:
        layer.cpu_rows_per_thread = 0
    return copied


def export_onnx(model: BSRNN, loaded: LoadedCheckpoint, out: Path, *, overwrite: bool = False) -> None:
    """Write ``model`` (the generator of ``loaded``) as an ONNX model at ``out``, with its metadata,
    and for a causal model its streaming step (``STREAM_KEY``).

    Written through ``bsrnn.output.write_file`` (a temporary beside ``out``, renamed when complete).
    The trace runs on 1 example of 20 frames (the step: 4); batch and frames are dynamic in the graphs.
    """
    onnx = require("onnx")
    metadata = {
        "format": ONNX_FORMAT, "format_version": str(ONNX_VERSION),
        "model": json.dumps({"class": "BSRNN", **model.config()}), "signal": json.dumps(SIGNAL),
        "source": str(loaded.path), "source_digest": loaded.digest, "epoch": str(loaded.get("epoch")),
        "global_step": str(loaded.get("global_step")), "bsrnn_version": __version__,
    }
    graph = onnx_graphs(model)
    for key, value in metadata.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    write_file(out, lambda temporary: onnx.save(graph, str(temporary)), overwrite=overwrite, flag="--out",
               inputs=InputFiles([loaded.path]))


def onnx_graphs(model: BSRNN) -> Any:
    """The ONNX model (``onnx.ModelProto``) of ``model`` without bsrnn's metadata: the
    whole-spectrogram graph, and for a causal model the streaming step in ``STREAM_KEY``, checked
    by ``onnx.checker`` as the model bsrnn will build from it."""
    onnx = require("onnx")
    example = torch.randn(1, model.band_split.norm_weight.shape[0] // 2, 20, 2)
    graph = _traced(RealValuedGenerator(model), (example,), ["spectrum"], ["enhanced"],
                    {"spectrum": {0: "batch", 2: "frames"}, "enhanced": {0: "batch", 2: "frames"}})
    if model.causal:
        step = _traced_step(model)
        entry = graph.metadata_props.add()
        entry.key, entry.value = STREAM_KEY, _without_shared_weights(step, graph)
        onnx.checker.check_model(stream_step_model(graph), full_check=True)
    return graph


def _traced_step(model: BSRNN) -> Any:
    """The streaming step (``StatefulMask``) as an ONNX model: batch, frames and LSTM rows dynamic."""
    layout = stream_state_layout(model.num_channel, model.num_layer, batch=1)
    doubled = stream_state_layout(model.num_channel, model.num_layer, batch=2)
    state = [torch.zeros(shape, dtype=dtype) for shape, dtype in layout.values()]
    frames = torch.randn(1, model.band_split.norm_weight.shape[0] // 2, STEP_FRAMES, 2)
    dynamic = {"frames": {0: "batch", 2: "frames"}, "mask": {0: "batch", 2: "frames"}}
    for name, (shape, _) in layout.items():
        axes = {axis: "batch" if size == 1 else f"batch_times_{size}"
                for axis, (size, other) in enumerate(zip(shape, doubled[name][0])) if size != other}
        if axes:
            dynamic[name] = dynamic[f"next_{name}"] = axes
    return _traced(StatefulMask(one_call_copy(model)), (frames, *state), ["frames", *layout],
                   ["mask", *(f"next_{name}" for name in layout)], dynamic)


def _traced(module: nn.Module, example: tuple[torch.Tensor, ...], inputs: list[str], outputs: list[str],
            dynamic_axes: dict[str, dict[int, str]]) -> Any:
    """``module`` traced by torch's TorchScript exporter, as a checked ``onnx.ModelProto``."""
    onnx = require("onnx")
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
            torch.onnx.export(module, example, str(traced), dynamo=False, opset_version=OPSET,
                              input_names=inputs, output_names=outputs, dynamic_axes=dynamic_axes)
        graph = onnx.load(str(traced))
    onnx.checker.check_model(graph)
    return graph


def _tensor_key(tensor: Any) -> tuple[str, tuple[int, ...], str]:
    from onnx import numpy_helper

    array = numpy_helper.to_array(tensor)
    return array.dtype.str, array.shape, hashlib.sha256(array.tobytes()).hexdigest()


def _without_shared_weights(step: Any, main: Any) -> str:
    """``step``'s graph, base64, with each initializer that the main graph holds too (same type,
    shape and values) left out and referred to as ``SHARED_PREFIX`` + its name there."""
    graph = copy.deepcopy(step.graph)
    if [(entry.domain, entry.version) for entry in step.opset_import] != \
            [(entry.domain, entry.version) for entry in main.opset_import]:
        raise RuntimeError("the streaming step was exported with other operator sets than the main graph")
    in_main = {_tensor_key(tensor): tensor.name for tensor in main.graph.initializer}
    renamed, kept = {}, []
    for tensor in graph.initializer:
        name = in_main.get(_tensor_key(tensor))
        if name is None:
            kept.append(tensor)
        else:
            renamed[tensor.name] = SHARED_PREFIX + name
    del graph.initializer[:]
    graph.initializer.extend(kept)
    for node in graph.node:
        if any(attribute.g.node or attribute.graphs for attribute in node.attribute):
            raise RuntimeError(f"the streaming step holds a subgraph ({node.op_type}), which this export does not share")
        for index, name in enumerate(node.input):
            node.input[index] = renamed.get(name, name)
    return base64.b64encode(graph.SerializeToString()).decode("ascii")


def stream_step_model(main: Any, where: Path | str | None = None) -> Any:
    """The streaming step of a causal model's file as a runnable ``onnx.ModelProto``: the graph
    in its metadata (``STREAM_KEY``) with the weights it shares taken from the main graph.
    ``main``: the file's path or its ``onnx.ModelProto`` (``where``: its path, for messages). ``onnx.save`` the result to run the step
    without bsrnn (inputs and outputs: the module docstring). UserError if there is no step."""
    onnx = require("onnx")
    path = main if isinstance(main, (str, Path)) else None
    if path is not None:
        main = onnx.load(str(path))
    where = path if path is not None else where if where is not None else "the ONNX model"
    encoded = {entry.key: entry.value for entry in main.metadata_props}.get(STREAM_KEY)
    if encoded is None:
        raise UserError(f"{where}: expected a streaming step (metadata {STREAM_KEY!r}), found none: it is a "
                        "non-causal model, or was exported by a bsrnn without ONNX streaming. Fix: export the "
                        "causal model again with this bsrnn")
    graph = onnx.GraphProto()
    weights = {tensor.name: tensor for tensor in main.graph.initializer}
    try:
        graph.ParseFromString(base64.b64decode(encoded, validate=True))
    except Exception as error:  # noqa: BLE001 - binascii and protobuf raise their own types
        raise UserError(f"{where}: expected a streaming step graph in metadata {STREAM_KEY!r}, found one that "
                        f"does not decode ({error}). Fix: export the model again") from error
    shared = sorted({name for node in graph.node for name in node.input if name.startswith(SHARED_PREFIX)})
    for name in shared:
        source = weights.get(name[len(SHARED_PREFIX):])
        if source is None:
            raise UserError(f"{where}: the streaming step refers to weight {name[len(SHARED_PREFIX):]!r}, which "
                            "the main graph does not hold. Fix: export the model again")
        tensor = graph.initializer.add()
        tensor.CopyFrom(source)
        tensor.name = name
    return onnx.helper.make_model(graph, opset_imports=list(main.opset_import), ir_version=main.ir_version,
                                  producer_name="bsrnn", producer_version=__version__)


class OnnxSpectrumEnhancer:
    """An ONNX model as a ``SpectrumEnhancer``: complex STFT ``[B, 257, T]`` in, enhanced out.

    ``model_bytes``: the file's contents, kept for a causal model with a streaming step, whose
    ONNX Runtime session ``stream_step`` builds at the first stream (``can_stream``).
    """

    def __init__(self, session: Any, path: Path | None = None, metadata: dict[str, str] | None = None,
                 model_bytes: bytes | None = None) -> None:
        self.session = session
        self.path = path
        self.metadata = metadata or {}
        self.model_bytes = model_bytes
        self._stream_session: Any = None

    def __call__(self, spec: torch.Tensor) -> torch.Tensor:
        spectrum = torch.view_as_real(spec.detach().cpu().to(torch.complex64)).numpy()
        (enhanced,) = self.session.run(["enhanced"], {"spectrum": np.ascontiguousarray(spectrum)})
        return torch.view_as_complex(torch.from_numpy(np.ascontiguousarray(enhanced))).to(spec.device)

    @property
    def can_stream(self) -> bool:
        """Whether the file holds a streaming step (a causal model exported by this bsrnn)."""
        return self.model_bytes is not None

    def stream_step(self) -> OnnxMaskStep:
        """A fresh ``MaskStep`` for one stream, running the file's streaming step in ONNX Runtime."""
        if self.model_bytes is None:
            raise UserError(f"{self.path}: expected a causal ONNX model with a streaming step, found none")
        if self._stream_session is None:
            onnx = require("onnx")
            step = stream_step_model(onnx.load_from_string(self.model_bytes), self.path)
            self._stream_session = _session(step.SerializeToString(), stream=True)
        config = json.loads(self.metadata.get("model", "{}"))
        return OnnxMaskStep(self._stream_session, int(config.get("num_channel", 64)),
                            int(config.get("num_layer", 5)), self.path)


class OnnxMaskStep:
    """The streaming step in ONNX Runtime as a ``bsrnn.models.streaming.MaskStep``: it holds the
    state tensors between calls (zeros at first, for the batch of the first call)."""

    def __init__(self, session: Any, num_channel: int, num_layer: int, path: Path | None = None) -> None:
        self.session = session
        self.num_channel, self.num_layer = num_channel, num_layer
        self.names = list(stream_state_layout(num_channel, num_layer))
        found = [entry.name for entry in session.get_inputs()]
        if found != ["frames", *self.names]:
            raise UserError(f"{path}: expected a streaming step with inputs frames and the state of "
                            f"BSRNN(num_channel={num_channel}, num_layer={num_layer}), found inputs {found}. "
                            "Fix: export the model again with this bsrnn")
        self.outputs = ["mask", *(f"next_{name}" for name in self.names)]
        self.state: dict[str, np.ndarray] | None = None

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        if self.state is None:
            layout = stream_state_layout(self.num_channel, self.num_layer, batch=frames.shape[0])
            self.state = {name: np.zeros(shape, dtype=torch.empty(0, dtype=dtype).numpy().dtype)
                          for name, (shape, dtype) in layout.items()}
        spectrum = np.ascontiguousarray(torch.view_as_real(frames.detach().cpu().to(torch.complex64)).numpy())
        mask, *state = self.session.run(self.outputs, {"frames": spectrum, **self.state})
        self.state = dict(zip(self.names, state, strict=True))
        return torch.view_as_complex(torch.from_numpy(mask)).to(frames.device)


def _session(model: bytes, stream: bool = False) -> Any:
    """An ONNX Runtime session on the CPU for the serialized ``model``: the whole-spectrogram graph
    with ONNX Runtime's default threads, or (``stream``) the streaming step on one thread."""
    runtime = require("onnxruntime")
    options = runtime.SessionOptions()
    options.log_severity_level = 3  # errors only: ONNX Runtime's warnings are not the user's to act on
    # No fusions: ONNX Runtime's move the default model (N 64, L 5, fixture weights, 10 s) 1.2e-4 of
    # the peak away from PyTorch, 3.2e-5 without them, at the same speed (RTF 0.23 against 0.22 on one
    # thread; PyTorch 0.16). The whole graph runs with no rewrite at all. The streaming step runs the
    # basic rewrites (constant folding, redundant nodes removed: the same arithmetic), which fold the
    # shape computations that dominate a one-frame call: 1.9 ms against 2.8 ms per hop for N 64, L 5,
    # on one thread (BENCHMARKS.md). One thread, because a hop's work is too small to share: two took
    # 10.8 ms per hop on the 2-core development machine.
    options.graph_optimization_level = (runtime.GraphOptimizationLevel.ORT_ENABLE_BASIC if stream
                                        else runtime.GraphOptimizationLevel.ORT_DISABLE_ALL)
    if stream:
        options.intra_op_num_threads = options.inter_op_num_threads = 1
    return runtime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def read_onnx(path: Path) -> tuple[OnnxSpectrumEnhancer, dict[str, str]]:
    """The ONNX model at ``path``, ready to run, and its metadata; UserError if it is not one of ours."""
    require("onnxruntime")
    fix = "Fix: pass a file written by `bsrnn ckpt export ... --format onnx`, a checkpoint or a run directory."
    try:
        model = path.read_bytes()
        session = _session(model)
    except Exception as error:  # noqa: BLE001 - ONNX Runtime raises its own exception types
        raise UserError(f"{path}: expected an ONNX model, found a file ONNX Runtime cannot load "
                        f"({str(error).splitlines()[0]}). {fix}") from error
    metadata = dict(session.get_modelmeta().custom_metadata_map)
    check_model_metadata(path, metadata, ONNX_FORMAT, ONNX_VERSION, "ONNX model", "ONNX file", fix)
    return OnnxSpectrumEnhancer(session, path, metadata, model if STREAM_KEY in metadata else None), metadata
