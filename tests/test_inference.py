"""``bsrnn.Enhancer``: the Python inference API, and ``bsrnn enhance`` as a thin layer over it.

The command and the API must give the same output for the same file, whatever the model file
(run directory, checkpoint, bundle); streams must equal the offline path; and every refusal must
name the problem in the API's terms, never a command-line flag.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile

import bsrnn
from bsrnn.audio import read_audio
from bsrnn.bundle import read_bundle, write_bundle
from bsrnn.checkpoint import CheckpointError, load_checkpoint
from bsrnn.cli.main import main
from bsrnn.errors import DataError, UserError
from bsrnn.inference import Enhancer
from bsrnn.models.precision import bf16_runs_here
from tiny_generator import causal_run_dir, one_torch_thread, run_dir, snr_db, tone_in_noise  # noqa: F401  (fixtures)

PCM_STEP = 1 / 32768
"""The CLI writes WAV outputs as 16-bit PCM: the API's float output, rounded, is within one step."""


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def cli_enhance(model: Path, audio_file: Path, out: Path, *flags: str) -> np.ndarray:
    assert main(["enhance", str(model), str(audio_file), "--out", str(out), *flags]) == 0
    return read_audio(out / audio_file.name)[0]


def test_the_api_on_a_run_directory_a_checkpoint_and_a_bundle_gives_what_the_command_writes(
        run_dir: Path, tmp_path: Path) -> None:
    noisy = tmp_path / "noisy.wav"
    soundfile.write(noisy, tone_in_noise(), 16000)
    bundle = tmp_path / "model.safetensors"
    write_bundle(load_checkpoint(run_dir, "best"), bundle)
    audio, rate = read_audio(noisy)
    outputs = [Enhancer.load(location).enhance(audio, rate)
               for location in (run_dir, run_dir / "checkpoint_best.pt", bundle)]
    assert all(np.array_equal(output, outputs[0]) for output in outputs)
    assert outputs[0].shape == audio.shape and outputs[0].dtype == np.float32
    for location, out in ((run_dir, "a"), (bundle, "b")):
        written = cli_enhance(location, noisy, tmp_path / out)
        assert np.abs(written - outputs[0]).max() <= PCM_STEP


def test_the_package_exports_the_enhancer_lazily() -> None:
    assert bsrnn.Enhancer is Enhancer and "Enhancer" in bsrnn.__all__


def test_every_channel_is_enhanced_on_its_own_and_the_rate_is_kept(run_dir: Path) -> None:
    enhancer = Enhancer.load(run_dir)
    stereo = np.stack([tone_in_noise(seed=1, rate=44100), tone_in_noise(seed=2, rate=44100)])
    both = enhancer.enhance(stereo, 44100)
    assert both.shape == stereo.shape
    assert np.array_equal(both[1], enhancer.enhance(stereo[1], 44100))
    assert enhancer.latency_ms is None and not enhancer.causal


def test_a_causal_model_streams_what_it_enhances_offline_at_any_chunk_size(causal_run_dir: Path) -> None:
    enhancer = Enhancer.load(causal_run_dir)
    assert enhancer.causal and enhancer.latency_ms == 40.0
    audio = tone_in_noise()
    offline = enhancer.enhance(audio, 16000)
    assert np.abs(enhancer.enhance(audio, 16000, streaming=True) - offline).max() <= 1e-4 * np.abs(offline).max()
    for chunk in (1, 777):
        stream = enhancer.stream(16000)
        pieces = [stream.process(audio[start : start + chunk]) for start in range(0, len(audio), chunk)]
        output = np.concatenate([*pieces, stream.flush()])
        assert output.shape == audio.shape
        assert np.abs(output - offline).max() <= 1e-4 * np.abs(offline).max()


@pytest.mark.parametrize("precision", ["int8", "bf16"])
def test_a_stream_runs_at_the_precision_it_was_loaded_with(causal_run_dir: Path, precision: str) -> None:
    """bf16: the same autocast as offline. int8: dynamic quantization scales each call's activations by
    that call's range, so a stream (one block at a time) is not the offline int8 function: measured
    42 dB apart here (0.7 % of the peak), as far as offline int8 is from fp32."""
    if precision == "bf16" and not bf16_runs_here("cpu"):
        pytest.skip("this CPU has no bfloat16 LSTM (no AVX512-BF16/AMX)")
    enhancer = Enhancer.load(causal_run_dir, precision=precision)
    audio = tone_in_noise()
    offline, streamed = enhancer.enhance(audio, 16000), enhancer.enhance(audio, 16000, streaming=True)
    assert not np.array_equal(offline, Enhancer.load(causal_run_dir).enhance(audio, 16000))  # really another arithmetic
    assert snr_db(offline, streamed) > (30 if precision == "int8" else 60)


def test_a_stream_at_another_rate_keeps_the_length_and_stays_close_to_the_offline_output(
        causal_run_dir: Path) -> None:
    """libsoxr resamples a stream, scipy's polyphase filter the offline path: close, not equal."""
    enhancer = Enhancer.load(causal_run_dir)
    audio = tone_in_noise(rate=44100)
    offline = enhancer.enhance(audio, 44100)
    stream = enhancer.stream(44100)
    pieces = [stream.process(audio[start : start + 441]) for start in range(0, len(audio), 441)]
    output = np.concatenate([*pieces, stream.flush()])
    assert output.shape == audio.shape
    assert snr_db(offline, output) > 20


def test_enhance_stream_writes_what_the_offline_command_writes(causal_run_dir: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    noisy = tmp_path / "noisy.wav"
    soundfile.write(noisy, np.stack([tone_in_noise(seed=3), tone_in_noise(seed=4)], axis=1), 16000)
    offline = cli_enhance(causal_run_dir, noisy, tmp_path / "offline")
    streamed = cli_enhance(causal_run_dir, noisy, tmp_path / "streamed", "--stream")
    assert "Streaming hop by hop" in capsys.readouterr().out
    assert streamed.shape == offline.shape == (2, len(tone_in_noise()))
    assert np.abs(streamed - offline).max() <= 2 * PCM_STEP


def test_enhance_stream_with_a_non_causal_model_exits_2_with_the_reason_and_writes_nothing(
        run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    noisy = tmp_path / "noisy.wav"
    soundfile.write(noisy, tone_in_noise(), 16000)
    out = tmp_path / "out"
    assert main(["enhance", str(run_dir), str(noisy), "--out", str(out), "--stream"]) == 2
    error = capsys.readouterr().err
    assert "expected a causal model to stream" in error and "statistics of the whole signal" in error
    assert not (out / "noisy.wav").exists()


def api_errors(run: Path, tmp_path: Path) -> dict[str, Callable[[], object]]:
    enhancer = Enhancer.load(run)
    audio = tone_in_noise()
    return {
        "stream": lambda: enhancer.stream(16000),
        "streaming": lambda: enhancer.enhance(audio, 16000, streaming=True),
        "precision": lambda: Enhancer.load(run, precision="fp16"),
        "int8 on cuda": lambda: Enhancer.load(run, device="cuda", precision="int8"),
        "load": lambda: Enhancer.load(run, load="newest"),
        "device": lambda: Enhancer.load(run, device="gpu"),
        "missing": lambda: Enhancer.load(tmp_path / "nowhere"),
        "transposed": lambda: enhancer.enhance(np.stack([audio, audio], axis=1), 16000),
        "int16": lambda: enhancer.enhance((audio * 32767).astype(np.int16), 16000),
        "3-D": lambda: enhancer.enhance(audio[None, None], 16000),
        "rate": lambda: enhancer.enhance(audio, 0),
        "short": lambda: enhancer.enhance(audio[:100], 16000),
        "nan": lambda: enhancer.enhance(np.full(16000, np.nan, dtype=np.float32), 16000),
    }


def test_every_api_refusal_names_the_problem_in_api_terms_never_a_flag(run_dir: Path, tmp_path: Path) -> None:
    expected = {
        "stream": "expected a causal model to stream", "streaming": "expected a causal model to stream",
        "precision": "precision 'fp16': expected one of fp32, bf16, int8", "int8 on cuda": "expected device cpu",
        "load": "load 'newest': expected one of auto, best, last", "device": "device 'gpu'",
        "missing": "nowhere", "transposed": "Fix: pass audio.T", "int16": "divide by 32768",
        "3-D": "found shape (1, 1, 20800)", "rate": "rate 0", "short": "expected at least 32 ms",
        "nan": "expected finite samples",
    }
    for name, call in api_errors(run_dir, tmp_path).items():
        with pytest.raises((UserError, CheckpointError)) as raised:
            call()
        message = str(raised.value)
        assert expected[name] in message, (name, message)
        assert "--" not in message, (name, message)
    assert isinstance(pytest.raises(DataError, api_errors(run_dir, tmp_path)["short"]).value, DataError)


def test_stream_misuse_is_refused_clearly(causal_run_dir: Path) -> None:
    stream = Enhancer.load(causal_run_dir).stream()
    with pytest.raises(UserError, match="1-D array of float samples") as raised:
        stream.process(np.zeros((2, 100), dtype=np.float32))
    assert "--" not in str(raised.value)
    stream.process(tone_in_noise())
    stream.flush()
    with pytest.raises(UserError, match="flushed"):
        stream.process(tone_in_noise())


def test_a_causal_bundle_is_format_2_so_that_an_older_reader_refuses_it(causal_run_dir: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "causal.safetensors"
    write_bundle(load_checkpoint(causal_run_dir, "best"), bundle)
    model, metadata = read_bundle(bundle)
    assert model.causal and metadata["format_version"] == "2" and json.loads(metadata["model"])["causal"] is True
    assert Enhancer.load(bundle).causal
