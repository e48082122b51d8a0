"""``bsrnn enhance/evaluate --precision {fp32,bf16,int8}``: one preparation, every input path.

fp32 must stay bit-identical to the network itself; int8 and bf16 are different functions, so
they are held to a measured closeness to fp32, and refused clearly where they cannot run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from bsrnn.bundle import write_bundle
from bsrnn.checkpoint import load_checkpoint
from bsrnn.cli.enhance import PRECISION_CHOICES
from bsrnn.cli.main import main
from bsrnn.enhancement import (
    DEFAULT_PRECISION,
    PRECISIONS,
    check_precision,
    enhance_waveform,
    load_generator,
    prepare_for_inference,
)
from bsrnn.errors import UserError
from bsrnn.models.precision import bf16_runs_here
from tiny_generator import run_dir, snr_db, tiny_generator  # noqa: F401  (run_dir: a fixture)

NO_BF16 = pytest.mark.skipif(not bf16_runs_here("cpu"), reason="this CPU has no bfloat16 LSTM (no AVX512-BF16/AMX)")

INT8_MIN_SNR_DB = 30.0
"""int8 output vs fp32 output of the tiny random generator below, on ``speech_like()``: measured
42.5 dB (seed 0; 34.8-42.5 dB over seeds 0-4, 33-37 dB at N 16 L 2, 25 dB for the default
N 64 L 5 with random weights; torch 2.13, x86 engine). A broken quantization (wrong scales,
weights dropped) is near 0 dB."""


def speech_like(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))
    return (tone + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def runnable_here(precision: str) -> object:
    """``precision`` as a parameter, skipped (with the bf16 tests' reason) where this CPU cannot run it."""
    marks = [NO_BF16] if precision == "bf16" else []
    return pytest.param(precision, marks=marks, id=precision)


def test_the_cli_offers_exactly_the_precisions_the_library_knows() -> None:
    assert PRECISION_CHOICES == PRECISIONS and DEFAULT_PRECISION == "fp32"


# ------------------------------------------------------------------------------------- fp32
def test_fp32_is_the_network_itself_so_its_output_is_bit_identical(run_dir: Path) -> None:
    model = tiny_generator()
    assert prepare_for_inference(model, "fp32") is model
    loaded = load_generator(run_dir)  # the default precision
    assert loaded.precision == "fp32" and loaded.enhancer is loaded.model
    assert "running in" not in loaded.describe()  # the line users know, unchanged
    audio = speech_like(seed=1)
    assert np.array_equal(enhance_waveform(loaded.enhancer, audio), enhance_waveform(model, audio))


# ------------------------------------------------------------------------------------- int8
def test_int8_quantizes_the_lstms_and_linears_of_a_copy_and_stays_close_to_fp32() -> None:
    model = tiny_generator()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    quantized = prepare_for_inference(model, "int8", "cpu")

    assert isinstance(quantized, torch.nn.Module) and quantized is not model
    from torch.ao.nn.quantized import dynamic

    kinds = {type(module) for module in quantized.modules()}
    assert {dynamic.LSTM, dynamic.Linear} <= kinds and not {torch.nn.LSTM, torch.nn.Linear} & kinds
    # The float32 network is untouched: it still runs fp32 and would save the same weights.
    assert isinstance(model.time_layers[0].lstm, torch.nn.LSTM)
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())

    audio = speech_like()
    reference, estimate = enhance_waveform(model, audio), enhance_waveform(quantized, audio)
    assert estimate.dtype == np.float32 and estimate.shape == reference.shape
    assert not np.array_equal(estimate, reference)  # really another arithmetic
    assert snr_db(reference, estimate) > INT8_MIN_SNR_DB


def test_int8_on_cuda_is_refused_before_anything_runs_naming_the_fix() -> None:
    with pytest.raises(UserError, match=r"precision int8: expected device cpu, found device cuda.*"
                                        r"Fix: run int8 on device cpu.*precision fp32 or bf16"):
        prepare_for_inference(tiny_generator(), "int8", "cuda")  # no GPU needed: refused by device type
    with pytest.raises(UserError, match="expected device cpu, found device cuda:1"):
        check_precision("int8", "cuda:1")


def test_an_unknown_precision_is_refused_with_the_choices() -> None:
    with pytest.raises(UserError, match=r"precision 'fp16': expected one of fp32, bf16, int8"):
        prepare_for_inference(tiny_generator(), "fp16")


# ------------------------------------------------------------------------------------- bf16
def test_bf16_on_a_cpu_without_bfloat16_instructions_is_refused_clearly() -> None:
    if bf16_runs_here("cpu"):
        pytest.skip("this CPU has bfloat16 instructions: nothing to refuse")
    with pytest.raises(UserError, match=r"precision bf16: expected a processor with bfloat16 instructions "
                                        r"\(AVX512-BF16 or AMX\).*Fix: use precision fp32"):
        prepare_for_inference(tiny_generator(), "bf16", "cpu")


@NO_BF16
def test_bf16_runs_the_generator_under_autocast_close_to_fp32_and_returns_float32() -> None:
    model = tiny_generator()
    mixed = prepare_for_inference(model, "bf16", "cpu")
    audio = speech_like()
    reference, estimate = enhance_waveform(model, audio), enhance_waveform(mixed, audio)
    assert estimate.dtype == np.float32 and not np.array_equal(estimate, reference)
    assert np.abs(estimate - reference).max() / np.abs(reference).max() < 0.05  # as --amp bf16's test


# ------------------------------------------------------------------------ checkpoints, bundles
@pytest.mark.parametrize("precision", [runnable_here(p) for p in PRECISIONS])
def test_every_precision_runs_from_a_checkpoint_and_from_its_bundle_alike(
        run_dir: Path, tmp_path: Path, precision: str) -> None:
    bundle = tmp_path / "model.safetensors"
    write_bundle(load_checkpoint(run_dir, "best"), bundle)
    from_checkpoint = load_generator(run_dir, precision=precision)
    from_bundle = load_generator(bundle, precision=precision)
    audio = speech_like(seed=2)
    expected = enhance_waveform(prepare_for_inference(tiny_generator(), precision), audio)
    for loaded in (from_checkpoint, from_bundle):
        assert loaded.precision == precision
        assert all(tensor.dtype == torch.float32 for tensor in loaded.model.state_dict().values())
        assert np.array_equal(enhance_waveform(loaded.enhancer, audio), expected)
        if precision != "fp32":
            assert f"running in {precision}" in loaded.describe()


# ------------------------------------------------------------------------------------- CLI
def test_enhance_int8_writes_an_output_close_to_fp32s(run_dir: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    soundfile.write(inputs / "a.wav", speech_like(2.0), 16000, subtype="FLOAT")
    outputs = {}
    for precision in ("fp32", "int8"):
        out = tmp_path / precision
        assert main(["enhance", str(run_dir), str(inputs / "a.wav"), "--out", str(out),
                     "--precision", precision]) == 0
        outputs[precision], rate = soundfile.read(out / "a.wav", dtype="float32")
        assert rate == 16000
    assert "running in int8" in capsys.readouterr().out
    assert snr_db(outputs["fp32"], outputs["int8"]) > INT8_MIN_SNR_DB - 6  # 16-bit PCM output adds its own noise


def test_enhance_int8_on_cuda_exits_2_with_the_fix_and_writes_nothing(
        run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    soundfile.write(tmp_path / "a.wav", speech_like(), 16000)
    out = tmp_path / "out"
    code = main(["enhance", str(run_dir), str(tmp_path / "a.wav"), "--out", str(out), "--device", "cuda",
                 "--precision", "int8"])
    assert code == 2
    assert "precision int8: expected device cpu, found device cuda" in capsys.readouterr().err
    assert not out.exists()


def test_evaluate_accepts_the_precision_and_scores_every_utterance(
        run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv_path = tmp_path / "scores.csv"
    assert main(["evaluate", str(run_dir), "--demo", "--precision", "int8", "--workers", "1",
                 "--csv", str(csv_path)]) == 0
    printed = capsys.readouterr().out
    assert "running in int8" in printed and "pesq" in printed
    assert len(csv_path.read_text().splitlines()) == 1 + 8  # header + the demo set's 8 test pairs
