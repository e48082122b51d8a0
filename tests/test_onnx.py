"""``bsrnn ckpt export --format onnx`` and ``bsrnn enhance MODEL.onnx``: the exported network runs in
ONNX Runtime and enhances as the PyTorch model does (within 1e-4 of the peak); skipped without the
optional packages (``pip install 'bsrnn[onnx]'``)."""

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
from bsrnn.onnx_model import require
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
    for call, expected in [
        (lambda: Enhancer.load(model).stream(), "expected a PyTorch model to stream"),
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
