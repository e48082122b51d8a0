"""The causal BSRNN: no output depends on input further ahead than its stated latency, a stream
computes what the offline path computes, and ``train --causal`` is an architecture field."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bsrnn.config import Config
from bsrnn.enhancement import enhance_segment
from bsrnn.errors import ConfigError, DataError
from bsrnn.models import BSRNN
from bsrnn.models.bands import NUM_BINS
from bsrnn.models.streaming import SpectrumStream, StatefulMask, stream_state_layout
from bsrnn.streaming import LATENCY_MS, LATENCY_SAMPLES, WaveformStream
from bsrnn.training.resume import reconcile
from e2e import TINY, bsrnn, checkpoint
from tiny_generator import one_torch_thread, tiny_generator  # noqa: F401  (a fixture)

STREAM_TOLERANCE = 1e-4
"""Stream against offline, relative to the offline peak: "float32 noise" (measured 2.3e-7 on the
signal below at every chunk size; the LSTMs and running sums add in another order)."""


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_signal(seconds: float = 1.3, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(16000 * seconds))).astype(np.float32)


def streamed(model: BSRNN, signal: np.ndarray, chunk: int) -> np.ndarray:
    stream = WaveformStream(model)
    pieces = [stream.process(signal[start : start + chunk]) for start in range(0, len(signal), chunk)]
    return np.concatenate([*pieces, stream.flush()])


def test_no_mask_depends_on_later_frames_in_the_causal_model_and_some_do_in_the_reference() -> None:
    spec = torch.randn(2, NUM_BINS, 40, dtype=torch.complex64)
    changed = spec.clone()
    changed[..., 25:] = torch.randn(2, NUM_BINS, 15, dtype=torch.complex64)
    with torch.no_grad():
        causal, reference = tiny_generator(causal=True), tiny_generator()
        assert torch.equal(causal.mask(spec)[:, :, :25], causal.mask(changed)[:, :, :25])
        assert (reference.mask(spec)[:, :, :25] - reference.mask(changed)[:, :, :25]).abs().max() > 1e-3


def test_causal_output_up_to_sample_n_ignores_every_input_sample_after_n_plus_639() -> None:
    """The offline forward (``enhance_segment``), so that the streaming path is not what is tested:
    output sample n (a multiple of 128, the worst case) is final at input sample n + 639."""
    model = tiny_generator(causal=True)
    signal = random_signal()
    for n in (0, 128 * 30, 128 * 100):
        future = signal.copy()
        future[n + LATENCY_SAMPLES :] = random_signal(seed=n + 1)[n + LATENCY_SAMPLES :]
        before, after = enhance_segment(model, signal), enhance_segment(model, future)
        peak = np.abs(before).max()
        assert np.abs(before[: n + 1] - after[: n + 1]).max() <= 1e-6 * peak, n
        assert np.abs(before[n + LATENCY_SAMPLES :] - after[n + LATENCY_SAMPLES :]).max() > 1e-3 * peak
    assert LATENCY_SAMPLES == 640 and LATENCY_MS == 40.0


@pytest.mark.parametrize("chunk", [1, 160, 777])
def test_a_stream_in_chunks_of_any_size_equals_the_offline_forward_and_keeps_the_length(chunk: int) -> None:
    model = tiny_generator(causal=True)
    signal = random_signal()
    offline = enhance_segment(model, signal)
    output = streamed(model, signal, chunk)
    assert output.shape == signal.shape and output.dtype == np.float32
    assert np.abs(output - offline).max() <= STREAM_TOLERANCE * np.abs(offline).max()


def test_a_stream_returns_each_sample_once_it_is_final_and_no_later() -> None:
    """Once input samples 0..m are in, every output sample n with n + 639 <= m has been returned
    (640 samples of latency at most), and none with n + 512 > m (a hop's first sample waits 639)."""
    stream = WaveformStream(tiny_generator(causal=True))
    signal, returned = random_signal(), 0
    for start in range(0, 4000, 100):
        returned += len(stream.process(signal[start : start + 100]))
        last = start + 99  # the newest input sample
        assert max(last - (LATENCY_SAMPLES - 1) + 1, 0) <= returned <= max(last - 512 + 1, 0), last


def test_spectrum_stream_equals_forward_frame_by_frame() -> None:
    model = tiny_generator(causal=True)
    spec = torch.randn(1, NUM_BINS, 23, dtype=torch.complex64)
    stream = SpectrumStream(model)
    frames = [stream.push(spec[..., index : index + 1]) for index in range(23)]
    last = stream.flush()
    assert last is not None
    with torch.no_grad():
        assert torch.allclose(torch.cat([*frames, last], dim=-1), model(spec), atol=1e-5)


def test_the_carry_as_named_tensors_gives_the_masks_of_the_whole_signal() -> None:
    """``StatefulMask``, the ONNX streaming step before export: the state in and out as tensors."""
    model = tiny_generator(causal=True)
    for layer in [*model.time_layers, *model.band_layers]:
        layer.cpu_rows_per_thread = 0  # one LSTM call, as the export's copy runs
    step = StatefulMask(model)
    spec = torch.view_as_real(torch.randn(2, NUM_BINS, 9, dtype=torch.complex64))
    state = [torch.zeros(shape, dtype=dtype) for shape, dtype in stream_state_layout(8, 1, batch=2).values()]
    masks = []
    with torch.no_grad():
        for start, stop in [(0, 1), (1, 4), (4, 5), (5, 9)]:
            mask, *state = step(spec[:, :, start:stop], *state)
            masks.append(mask)
        whole = model.real_mask(spec)
    assert (torch.cat(masks, dim=2) - whole).abs().max() <= 1e-5 * whole.abs().max()
    assert state[-1].tolist() == [9.0]  # frames_seen


def test_a_non_causal_model_cannot_stream_and_a_stream_shorter_than_a_frame_is_refused() -> None:
    with pytest.raises(ValueError, match="causal"):
        WaveformStream(tiny_generator())
    stream = WaveformStream(tiny_generator(causal=True))
    stream.process(random_signal()[:300])
    with pytest.raises(DataError, match="at least 512 samples"):
        stream.flush()


def test_a_run_from_before_the_field_resumed_with_causal_is_refused_as_an_architecture_change() -> None:
    """Its checkpoint's config has no ``causal``: it trained the reference network, whose tensors a
    causal model would load without a word."""
    saved = Config(num_channel=8, num_layer=1).to_dict()
    del saved["causal"]
    with pytest.raises(ConfigError, match="causal: checkpoint False, config True"):
        reconcile(Config(num_channel=8, num_layer=1, causal=True), {"causal"}, saved, "ckpt")
    assert reconcile(Config(num_channel=8, num_layer=1), set(), saved, "ckpt").causal is False


def test_the_causal_model_has_the_reference_tensors_and_the_reference_is_unchanged() -> None:
    causal, reference = tiny_generator(causal=True), tiny_generator()
    assert {k: v.shape for k, v in causal.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}
    assert causal.config()["causal"] is True and reference.config()["causal"] is False


@pytest.fixture(scope="module")
def causal_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``train --causal`` on the demo set, stopped after 2 steps (shared: tests copy it to change it)."""
    run = tmp_path_factory.mktemp("causal") / "run"
    first = bsrnn("train", *TINY, "--causal", "--max-steps", "2", "--run-dir", str(run))
    assert first.returncode == 0, first.stdout + first.stderr
    return run


@pytest.mark.slow
def test_train_causal_records_it_and_a_resume_without_the_flag_takes_it_from_the_checkpoint(
        causal_run: Path, tmp_path: Path) -> None:
    assert checkpoint(causal_run)["config"]["causal"] is True
    run = tmp_path / "run"
    shutil.copytree(causal_run, run)
    resumed = bsrnn("train", *TINY, "--max-steps", "2", "--run-dir", str(run), "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    saved = checkpoint(run)
    assert saved["config"]["causal"] is True and saved["global_step"] == 4


@pytest.mark.slow
def test_a_resume_that_asks_for_the_other_architecture_is_refused(causal_run: Path) -> None:
    conflict = bsrnn("train", *TINY, "--no-causal", "--max-steps", "2", "--run-dir", str(causal_run), "--resume")
    assert conflict.returncode == 2
    assert "causal: checkpoint True, config False" in conflict.stderr
    assert checkpoint(causal_run)["global_step"] == 2
