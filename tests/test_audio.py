"""The audio front end reproduces the reference STFT and reads/writes audio files faithfully."""

from __future__ import annotations

import logging
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from bsrnn.audio import (
    AudioFileError,
    audio_files_by_name,
    audio_info,
    hann_window,
    istft,
    output_format,
    output_format_like,
    read_audio,
    resample,
    stft,
    write_audio,
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


def test_window_is_cached_per_device_and_dtype() -> None:
    assert hann_window("cpu", torch.float32) is hann_window(torch.device("cpu"), torch.float32)
    assert hann_window("cpu", torch.float64).dtype == torch.float64
    assert torch.equal(hann_window(), torch.hann_window(512))


def test_float_wav_round_trip_is_exact(tmp_path) -> None:
    audio = np.random.default_rng(0).uniform(-1, 1, 1000).astype(np.float32)
    write_audio(tmp_path / "a.wav", audio, 16000, subtype="FLOAT")
    restored, rate = read_audio(tmp_path / "a.wav")
    assert rate == 16000 and restored.dtype == np.float32
    assert np.array_equal(restored, audio)


def test_pcm16_wav_round_trip_is_within_one_step(tmp_path) -> None:
    audio = np.random.default_rng(0).uniform(-0.9, 0.9, 1000).astype(np.float32)
    write_audio(tmp_path / "a.wav", torch.from_numpy(audio), 16000)
    assert soundfile.info(str(tmp_path / "a.wav")).subtype == "PCM_16"
    restored, _ = read_audio(tmp_path / "a.wav")
    assert np.max(np.abs(restored - audio)) <= 1 / 32768


def test_stereo_wav_reads_channels_first(tmp_path) -> None:
    audio = np.stack([np.full(100, 0.25), np.full(100, -0.5)]).astype(np.float32)
    write_audio(tmp_path / "s.wav", audio, 8000)
    restored, rate = read_audio(tmp_path / "s.wav")
    assert rate == 8000 and restored.shape == (2, 100)
    assert np.allclose(restored, audio, atol=1 / 32768)


def test_pcm_write_clips_out_of_range_samples_and_says_so(tmp_path, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        write_audio(tmp_path / "loud.wav", np.array([0.5, 1.5, -2.0], dtype=np.float32), 16000)
    assert "2 samples beyond [-1, 1]" in caplog.text and "loud.wav" in caplog.text
    restored, _ = read_audio(tmp_path / "loud.wav")
    assert restored.max() <= 1.0 and restored.min() >= -1.0


def test_reading_a_broken_file_names_it(tmp_path) -> None:
    path = tmp_path / "broken.wav"
    path.write_bytes(b"not audio at all")
    with pytest.raises(DataError, match="broken.wav"):
        read_audio(path)


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


def test_resample_keeps_float64_input_in_float64() -> None:
    tone = np.sin(np.arange(4800) * 0.01)
    out = resample(tone, 48000, 16000)
    assert out.dtype == np.float64 and out.shape == (1600,)


# ----------------------------------------------------------------------------- one home
def test_importing_the_audio_module_does_not_import_torch() -> None:
    """``bsrnn score`` reads audio through it and may fork its helpers only without torch."""
    probe = "import sys, bsrnn.audio, bsrnn.metrics, bsrnn.cli.score; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


# ----------------------------------------------------------------------------- formats
@pytest.mark.parametrize("suffix, container", [(".flac", "FLAC"), (".aiff", "AIFF"), (".wav", "WAV")])
def test_lossless_formats_read_the_same_samples_as_a_wav(tmp_path: Path, suffix: str, container: str) -> None:
    stored = np.random.default_rng(1).integers(-32768, 32768, 3000).astype(np.int16)
    soundfile.write(tmp_path / "reference.wav", stored, 16000, subtype="PCM_16")
    soundfile.write(tmp_path / f"clip{suffix}", stored, 16000, subtype="PCM_16")
    info = audio_info(tmp_path / f"clip{suffix}")
    assert (info.format, info.subtype, info.rate, info.channels, info.frames) == (container, "PCM_16", 16000, 1, 3000)
    samples, rate = read_audio(tmp_path / f"clip{suffix}")
    assert rate == 16000 and samples.dtype == np.float32
    assert np.array_equal(samples, read_audio(tmp_path / "reference.wav")[0])
    int16, _ = read_audio(tmp_path / f"clip{suffix}", dtype="int16")
    assert int16.dtype == np.int16 and np.array_equal(int16, stored)
    assert np.array_equal(samples, stored / np.float32(32768))


def test_an_ogg_is_written_as_vorbis_and_read_back_close_to_the_original(tmp_path: Path) -> None:
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)).astype(np.float32)
    write_audio(tmp_path / "tone.ogg", tone, 16000)
    info = audio_info(tmp_path / "tone.ogg")
    assert (info.format, info.subtype) == ("OGG", "VORBIS")
    samples, rate = read_audio(tmp_path / "tone.ogg")
    assert rate == 16000 and abs(len(samples) - 16000) < 1024
    assert np.argmax(np.abs(np.fft.rfft(samples[:16000]))) == pytest.approx(440, abs=2)


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "missing.flac"


def _folder(tmp_path: Path) -> Path:
    (tmp_path / "folder.wav").mkdir()
    return tmp_path / "folder.wav"


def _empty(tmp_path: Path) -> Path:
    (tmp_path / "empty.flac").write_bytes(b"")
    return tmp_path / "empty.flac"


def _text(tmp_path: Path) -> Path:
    (tmp_path / "text.wav").write_text("not audio at all")
    return tmp_path / "text.wav"


def _truncated_flac(tmp_path: Path) -> Path:
    write_audio(tmp_path / "whole.flac", np.random.default_rng(0).uniform(-0.5, 0.5, 16000), 16000)
    data = (tmp_path / "whole.flac").read_bytes()
    (tmp_path / "cut.flac").write_bytes(data[: len(data) // 2])
    audio_info(tmp_path / "cut.flac")  # its header is intact: only decoding fails
    return tmp_path / "cut.flac"


@pytest.mark.parametrize("make, found", [
    (_missing, "no such file"),
    (_folder, "a folder"),
    (_empty, "an empty file"),
    (_text, "data it cannot decode"),
    (_truncated_flac, "data it cannot decode"),
])
def test_every_read_failure_is_one_error_naming_the_file_and_the_fix(tmp_path: Path, make, found: str) -> None:
    path = make(tmp_path)
    with pytest.raises(AudioFileError) as caught:
        read_audio(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: expected an audio file libsndfile reads (WAV, FLAC, OGG")
    assert f"found {found}" in message and "Fix:" in message and "\n" not in message
    assert isinstance(caught.value, DataError) and caught.value.path == str(path)
    if make is not _truncated_flac:
        with pytest.raises(AudioFileError, match=f"found {found}"):
            audio_info(path)


def test_an_audio_file_error_survives_a_trip_through_a_worker_process(tmp_path: Path) -> None:
    with pytest.raises(AudioFileError) as caught:
        read_audio(tmp_path / "missing.wav")
    restored = pickle.loads(pickle.dumps(caught.value))
    assert str(restored) == str(caught.value) and restored.reason == "no such file"
    assert type(restored)(str(caught.value)).args == caught.value.args  # from the message alone


def test_writing_keeps_16_bit_pcm_where_the_format_stores_pcm(tmp_path: Path) -> None:
    assert output_format(tmp_path / "x.wav") == ("WAV", "PCM_16")
    assert output_format(tmp_path / "x.FLAC") == ("FLAC", "PCM_16")
    assert output_format(tmp_path / "x.ogg") == ("OGG", "VORBIS")
    assert output_format(tmp_path / "x.wav", subtype="FLOAT") == ("WAV", "FLOAT")
    assert output_format(tmp_path / "x.wav", format="FLAC") == ("FLAC", "PCM_16")


def test_an_output_keeps_the_input_format_even_when_its_name_says_otherwise(tmp_path: Path) -> None:
    write_audio(tmp_path / "a.wav", np.zeros(1000), 16000, format="FLAC")
    info = audio_info(tmp_path / "a.wav")
    assert info.format == "FLAC"  # recognised from the content, not the suffix
    assert output_format_like(info, tmp_path / "out.wav") == ("FLAC", "PCM_16")
    write_audio(tmp_path / "b.ogg", np.zeros(1000), 16000)
    assert output_format_like(audio_info(tmp_path / "b.ogg"), tmp_path / "out.ogg") == ("OGG", "VORBIS")


def test_a_format_or_encoding_that_cannot_be_written_is_refused_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(AudioFileError, match=r"x\.xyz: expected a suffix naming an audio format libsndfile writes \(.*\.flac.*\), found the suffix '\.xyz'"):
        write_audio(tmp_path / "x.xyz", np.zeros(100), 16000)
    assert not (tmp_path / "x.xyz").exists()
    with pytest.raises(AudioFileError, match=r"y\.flac: expected an encoding that libsndfile writes in FLAC files, "
                                             r"found FLOAT"):
        output_format(tmp_path / "y.flac", subtype="FLOAT")
    with pytest.raises(AudioFileError, match=r"z\.wav: expected a place to write WAV audio"):
        write_audio(tmp_path / "no_such_folder" / "z.wav", np.zeros(100), 16000)


def test_folder_files_pair_by_name_across_formats_and_clashes_are_reported(tmp_path: Path) -> None:
    for name in ("b.flac", "a.wav", "c.OGG", ".hidden.wav", "notes.txt", "d.wav", "d.flac", "e.wav", "e.WAV"):
        (tmp_path / name).write_bytes(b"")
    files, clashes = audio_files_by_name(tmp_path)
    assert sorted(files) == ["a", "b", "c", "d", "e"]
    assert files["b"] == tmp_path / "b.flac" and files["c"] == tmp_path / "c.OGG"
    assert sorted(sorted(path.name for path in group) for group in clashes) == [["d.flac", "d.wav"], ["e.WAV", "e.wav"]]
