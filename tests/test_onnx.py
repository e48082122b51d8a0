"""``bsrnn ckpt export --format onnx`` and ``bsrnn enhance MODEL.onnx``: the exported network runs in
ONNX Runtime and enhances as the PyTorch model does (within 1e-4 of the peak), offline and, for a
causal model, as a stream through its streaming step; skipped without the optional packages
(``pip install 'bsrnn[onnx]'``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from bsrnn.audio import read_audio
from bsrnn.cli.main import main
from bsrnn.errors import UserError
from bsrnn.inference import Enhancer
from bsrnn.models.streaming import TorchMaskStep
from bsrnn.onnx_model import SHARED_PREFIX, STREAM_KEY, require, stream_step_model
from tiny_generator import causal_run_dir, one_torch_thread, run_dir, tone_in_noise  # noqa: F401  (fixtures)

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def exported(run: Path, out: Path) -> Path:
    assert main(["ckpt", "export", str(run), "--format", "onnx", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("causal", [False, True], ids=["reference", "causal"])
def test_the_onnx_model_enhances_as_the_pytorch_model_does(run_dir: Path, causal_run_dir: Path,
                                                           tmp_path: Path, causal: bool) -> None:
    run = causal_run_dir if causal else run_dir
    model = exported(run, tmp_path / "model.onnx")
    audio = tone_in_noise()
    expected = Enhancer.load(run).enhance(audio, 16000)
    onnx = Enhancer.load(model)
    assert onnx.causal is causal and "an ONNX model exported from" in onnx.describe()
    output = onnx.enhance(audio, 16000)
    assert output.shape == audio.shape
    assert np.abs(output - expected).max() <= 1e-4 * np.abs(expected).max()
    # Batch and frames are dynamic: two chunks of another length in one pass.
    spec = torch.randn(2, 257, 61, dtype=torch.complex64)
    with torch.no_grad():
        reference = Enhancer.load(run).generator.model(spec)
    assert (onnx.generator.enhancer(spec) - reference).abs().max() <= 1e-4 * reference.abs().max()


def test_enhance_runs_an_onnx_model_from_the_command_line(run_dir: Path, tmp_path: Path) -> None:
    model = exported(run_dir, tmp_path / "model.onnx")
    noisy = tmp_path / "noisy.wav"
    soundfile.write(noisy, tone_in_noise(), 16000)
    assert main(["enhance", str(model), str(noisy), "--out", str(tmp_path / "out")]) == 0
    written = read_audio(tmp_path / "out" / "noisy.wav")[0]
    expected = Enhancer.load(run_dir).enhance(read_audio(noisy)[0], 16000)
    assert np.abs(written - expected).max() <= 1 / 32768 + 1e-4 * np.abs(expected).max()


def test_what_an_onnx_model_cannot_do_is_refused_in_api_terms(causal_run_dir: Path, tmp_path: Path) -> None:
    model = exported(causal_run_dir, tmp_path / "model.onnx")
    older = without_streaming_step(model, tmp_path / "older.onnx")
    for call, expected in [
        (lambda: Enhancer.load(older).stream(), "expected an ONNX model with a streaming step"),
        (lambda: stream_step_model(older), "export the causal model again"),
        (lambda: Enhancer.load(model, precision="int8"), "expected fp32 for an ONNX model"),
        (lambda: Enhancer.load(model, device="cuda"), "expected cpu for an ONNX model"),
        (lambda: require("no_such_module_for_bsrnn"), "pip install 'bsrnn[onnx]'"),
    ]:
        with pytest.raises(UserError) as raised:
            call()
        assert expected in str(raised.value) and "--" not in str(raised.value)


def test_an_onnx_file_that_is_not_ours_is_refused_and_the_suffix_must_match(run_dir: Path, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "other",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    other = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph), str(other))
    with pytest.raises(UserError, match="without bsrnn's metadata"):
        Enhancer.load(other)
    assert main(["ckpt", "export", str(run_dir), "--format", "onnx", "--out", str(tmp_path / "m.safetensors")]) == 2
    assert "must end in .onnx for --format onnx" in capsys.readouterr().err


def without_streaming_step(model: Path, out: Path) -> Path:
    """``model`` as a bsrnn from before ONNX streaming exported it: no ``STREAM_KEY`` entry."""
    import onnx

    graph = onnx.load(str(model))
    kept = [entry for entry in graph.metadata_props if entry.key != STREAM_KEY]
    del graph.metadata_props[:]
    graph.metadata_props.extend(kept)
    onnx.save(graph, str(out))
    return out


def streamed(enhancer: Enhancer, audio: np.ndarray, chunk: int) -> np.ndarray:
    stream = enhancer.stream(16000)
    pieces = [stream.process(audio[start : start + chunk]) for start in range(0, len(audio), chunk)]
    return np.concatenate([*pieces, stream.flush()])


@pytest.mark.parametrize("chunk", [128, 777])
def test_a_causal_onnx_model_streams_what_the_pytorch_stream_and_the_offline_forward_give(
        causal_run_dir: Path, tmp_path: Path, chunk: int) -> None:
    onnx = Enhancer.load(exported(causal_run_dir, tmp_path / "model.onnx"))
    pytorch = Enhancer.load(causal_run_dir)
    audio = tone_in_noise()
    offline = pytorch.enhance(audio, 16000)
    output = streamed(onnx, audio, chunk)
    assert output.shape == audio.shape and output.dtype == np.float32
    peak = np.abs(offline).max()
    assert np.abs(output - streamed(pytorch, audio, chunk)).max() <= 1e-4 * peak
    assert np.abs(output - offline).max() <= 1e-4 * peak
    assert np.array_equal(onnx.enhance(audio, 16000, streaming=True), streamed(onnx, audio, 128))


def test_the_streaming_step_carries_any_batch_and_block_of_frames_and_shares_the_weights(
        causal_run_dir: Path, tmp_path: Path) -> None:
    path = exported(causal_run_dir, tmp_path / "model.onnx")
    onnx, pytorch = Enhancer.load(path), Enhancer.load(causal_run_dir).generator.model
    assert pytorch is not None
    spec = torch.randn(2, 257, 9, dtype=torch.complex64)
    runtime, reference = onnx.generator.prepared.stream_step(), TorchMaskStep(pytorch)
    blocks = [(0, 1), (1, 4), (4, 5), (5, 9)]
    masks = torch.cat([runtime(spec[..., start:stop]) for start, stop in blocks], dim=-2)
    expected = torch.cat([reference(spec[..., start:stop]) for start, stop in blocks], dim=-2)
    assert masks.shape == (2, 257, 9, 3)
    assert (masks - expected).abs().max() <= 1e-4 * expected.abs().max()
    assert runtime.state is not None and runtime.state["frames_seen"].tolist() == [9.0]
    # The weights are stored once: the step graph takes every large one from the main graph.
    own = [tensor for tensor in stream_step_model(path).graph.initializer if not tensor.name.startswith(SHARED_PREFIX)]
    assert sum(len(tensor.raw_data) for tensor in own) < 1024


def test_enhance_stream_runs_a_causal_onnx_model_and_refuses_a_non_causal_one(
        run_dir: Path, causal_run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    noisy = tmp_path / "noisy.wav"
    soundfile.write(noisy, tone_in_noise(), 16000)
    model = exported(causal_run_dir, tmp_path / "causal.onnx")
    assert main(["enhance", str(model), str(noisy), "--out", str(tmp_path / "onnx"), "--stream"]) == 0
    assert "Streaming hop by hop through the causal model in ONNX Runtime" in capsys.readouterr().out
    assert main(["enhance", str(causal_run_dir), str(noisy), "--out", str(tmp_path / "torch"), "--stream"]) == 0
    written, expected = read_audio(tmp_path / "onnx" / "noisy.wav")[0], read_audio(tmp_path / "torch" / "noisy.wav")[0]
    assert written.shape == expected.shape
    assert np.abs(written - expected).max() <= 1 / 32768 + 1e-4 * np.abs(expected).max()

    reference = exported(run_dir, tmp_path / "reference.onnx")
    assert main(["enhance", str(reference), str(noisy), "--out", str(tmp_path / "refused"), "--stream"]) == 2
    error = capsys.readouterr().err
    assert "expected a causal model to stream" in error and "statistics of the whole signal" in error
    assert not (tmp_path / "refused" / "noisy.wav").exists()
    with pytest.raises(UserError, match="expected a causal model to stream"):
        Enhancer.load(reference).stream(16000)
