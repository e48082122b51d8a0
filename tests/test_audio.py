"""The audio front end reproduces the reference STFT and reads/writes wavs faithfully."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import soundfile
import torch

from bsrnn.audio import (
    compress_magnitude,
    hann_window,
    istft,
    read_wav,
    resample,
    stft,
    write_wav,
)
from bsrnn.errors import DataError


def test_stft_equals_the_reference_call_exactly() -> None:
    audio = torch.randn(2, 32000)
    reference = torch.stft(audio, 512, 128, window=torch.hann_window(512), onesided=True, return_complex=True)
    spec = stft(audio)
    assert spec.shape == (2, 257, 251)
    assert torch.equal(spec, reference)


def test_istft_of_stft_recovers_the_signal() -> None:
    audio = torch.randn(3, 16000)
    assert torch.allclose(istft(stft(audio), length=16000), audio, atol=1e-5)


def test_istft_without_length_returns_hop_times_frames_minus_one() -> None:
    audio = torch.randn(1, 32000)
    restored = istft(stft(audio))
    assert restored.shape == (1, 32000)
    assert torch.allclose(restored, audio, atol=1e-5)


def test_stft_and_istft_accept_extra_leading_dimensions() -> None:
    audio = torch.randn(2, 3, 4000)
    spec = stft(audio)
    assert spec.shape == (2, 3, 257, 32)
    assert torch.allclose(istft(spec, length=4000), audio, atol=1e-5)


def test_compress_magnitude_is_the_power_law_with_floor_and_adds_a_channel() -> None:
    spec = torch.tensor([[[0.0 + 0.0j, 8.0 + 0.0j], [0.0 + 1.0j, 3.0 - 4.0j]]], dtype=torch.complex64)
    compressed = compress_magnitude(spec)
    assert compressed.shape == (1, 1, 2, 2)
    expected = torch.tensor([[(1e-10) ** 0.3, 8.0**0.3], [1.0, 5.0**0.3]])
    assert torch.allclose(compressed[0, 0], expected, rtol=1e-6)


def test_compress_magnitude_rejects_a_spectrogram_without_batch_axis() -> None:
    with pytest.raises(ValueError, match=r"\[B, 257, T\]"):
        compress_magnitude(torch.zeros(257, 10, dtype=torch.complex64))


def test_window_is_cached_per_device_and_dtype() -> None:
    assert hann_window("cpu", torch.float32) is hann_window(torch.device("cpu"), torch.float32)
    assert hann_window("cpu", torch.float64).dtype == torch.float64
    assert torch.equal(hann_window(), torch.hann_window(512))


def test_float_wav_round_trip_is_exact(tmp_path) -> None:
    audio = np.random.default_rng(0).uniform(-1, 1, 1000).astype(np.float32)
    write_wav(tmp_path / "a.wav", audio, 16000, subtype="FLOAT")
    restored, rate = read_wav(tmp_path / "a.wav")
    assert rate == 16000 and restored.dtype == np.float32
    assert np.array_equal(restored, audio)


def test_pcm16_wav_round_trip_is_within_one_step(tmp_path) -> None:
    audio = np.random.default_rng(0).uniform(-0.9, 0.9, 1000).astype(np.float32)
    write_wav(tmp_path / "a.wav", torch.from_numpy(audio), 16000)
    assert soundfile.info(str(tmp_path / "a.wav")).subtype == "PCM_16"
    restored, _ = read_wav(tmp_path / "a.wav")
    assert np.max(np.abs(restored - audio)) <= 1 / 32768


def test_stereo_wav_reads_channels_first(tmp_path) -> None:
    audio = np.stack([np.full(100, 0.25), np.full(100, -0.5)]).astype(np.float32)
    write_wav(tmp_path / "s.wav", audio, 8000)
    restored, rate = read_wav(tmp_path / "s.wav")
    assert rate == 8000 and restored.shape == (2, 100)
    assert np.allclose(restored, audio, atol=1 / 32768)


def test_pcm_write_clips_out_of_range_samples_and_says_so(tmp_path, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        write_wav(tmp_path / "loud.wav", np.array([0.5, 1.5, -2.0], dtype=np.float32), 16000)
    assert "2 samples beyond [-1, 1]" in caplog.text and "loud.wav" in caplog.text
    restored, _ = read_wav(tmp_path / "loud.wav")
    assert restored.max() <= 1.0 and restored.min() >= -1.0


def test_read_wav_of_a_broken_file_names_it(tmp_path) -> None:
    path = tmp_path / "broken.wav"
    path.write_bytes(b"not audio at all")
    with pytest.raises(DataError, match="broken.wav"):
        read_wav(path)


def test_resample_changes_the_length_by_the_ratio_and_keeps_a_tone() -> None:
    t = np.arange(44100) / 44100
    tone = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    out = resample(tone, 44100, 16000)
    assert out.dtype == np.float32 and out.shape == (16000,)
    spectrum = np.abs(np.fft.rfft(out))
    assert np.argmax(spectrum) == 440  # 1 Hz bins over one second
    stereo = resample(np.stack([tone, tone]), 44100, 16000)
    assert stereo.shape == (2, 16000)
    assert resample(tone, 16000, 16000) is not None and resample(tone, 16000, 16000).shape == tone.shape
