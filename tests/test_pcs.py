"""Perceptual contrast stretching (``--pcs`` of ``enhance`` and ``evaluate``): off by default and
then bit-identical to enhancing without it; on, every enhanced magnitude raised to the exponent
of its bin, phase kept, the network's peak level kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from bsrnn.audio import HOP_LENGTH, N_FFT, NUM_BINS, SAMPLE_RATE, istft, stft
from bsrnn.cli.enhance import PCS_ON
from bsrnn.cli.main import main
from bsrnn.data.demo_corpus import write_demo_audio
from bsrnn.enhancement import enhance_audio, enhance_waveform
from bsrnn.pcs import PCS_MAX_EXPONENT, SII_CRITICAL_BANDS, pcs_exponents, perceptual_contrast_stretch
from e2e import bsrnn
from tiny_generator import run_dir, snr_db, tiny_generator  # noqa: F401  (run_dir: a fixture)

FREQUENCIES = np.arange(NUM_BINS) * SAMPLE_RATE / N_FFT
CHUNKED = {"chunk_seconds": 1.0, "overlap_seconds": 0.25}
"""Chunking small enough that 2.5 s of audio takes the chunked path (four chunks)."""


def speech_like(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))
    return (tone + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def identity(spectrum: torch.Tensor) -> torch.Tensor:
    """A "network" that returns its input: what remains is the STFT, PCS and the inverse STFT."""
    return spectrum


def reflect_padded(audio: np.ndarray) -> torch.Tensor:
    """``[1, samples + 2 hops]``: the reference evaluation's padding before the STFT."""
    return torch.nn.functional.pad(torch.from_numpy(audio)[None, None], (HOP_LENGTH, HOP_LENGTH), mode="reflect")[0]


# --------------------------------------------------------------------------- the exponents
def test_the_sii_table_tiles_100_to_9500_hz_with_importances_summing_to_one() -> None:
    assert len(SII_CRITICAL_BANDS) == 21
    assert SII_CRITICAL_BANDS[0][0] == 100 and SII_CRITICAL_BANDS[-1][1] == 9500
    bands = SII_CRITICAL_BANDS
    assert all(upper == next_lower for (_, upper, _), (next_lower, _, _) in zip(bands, bands[1:]))
    assert sum(importance for _, _, importance in SII_CRITICAL_BANDS) == pytest.approx(1.0, abs=1e-6)


def test_the_exponents_follow_the_speech_band_importance() -> None:
    gamma = pcs_exponents().numpy()
    assert gamma.shape == (NUM_BINS,) and gamma.dtype == np.float32
    assert np.all(gamma >= 1) and np.all(gamma <= PCS_MAX_EXPONENT + 1e-6)
    assert np.all(gamma[FREQUENCIES < 100] == 1), "no speech importance below 100 Hz: left as it is"
    assert np.all(gamma[FREQUENCIES >= 100] > 1), "every bin from 100 Hz to 8 kHz carries some importance"
    most_important = (FREQUENCIES >= 400) & (FREQUENCIES < 4400)
    assert np.allclose(gamma[most_important], PCS_MAX_EXPONENT)
    assert np.all(gamma[~most_important] < PCS_MAX_EXPONENT - 0.05)
    rising, falling = gamma[FREQUENCIES < 4400], gamma[FREQUENCIES >= 400]
    assert np.all(np.diff(rising) >= 0) and np.all(np.diff(falling) <= 0)
    assert len(np.unique(gamma.round(6))) == 9  # 1, three rising steps, the plateau, four falling steps
    # linear in the band importance: 100-200 Hz (0.0103) and 7700-9500 Hz (0.0110) of 0.0577
    assert gamma[FREQUENCIES == 125.0][0] == pytest.approx(1 + 0.4 * 0.0103 / 0.0577, abs=1e-6)
    assert gamma[-1] == pytest.approx(1 + 0.4 * 0.0110 / 0.0577, abs=1e-6)


def test_the_exponents_scale_to_other_transforms_and_refuse_nonsense() -> None:
    assert pcs_exponents(400).shape == (201,) and float(pcs_exponents(400).max()) == pytest.approx(1.4)
    assert torch.equal(pcs_exponents(max_exponent=1.0), torch.ones(NUM_BINS))
    with pytest.raises(ValueError, match="max_exponent >= 1"):
        pcs_exponents(max_exponent=0.5)


# --------------------------------------------------------------------------- the stretching
def random_spectrum(seed: int = 0) -> torch.Tensor:
    """Magnitudes from 1e-4 to 1e3 (log-uniform), random phases, a few exact zeros."""
    generator = torch.Generator().manual_seed(seed)
    magnitude = 10 ** (torch.rand(2, NUM_BINS, 12, generator=generator) * 7 - 4)
    magnitude[0, 100:110, 3] = 0
    phase = (torch.rand(2, NUM_BINS, 12, generator=generator) * 2 - 1) * torch.pi
    return torch.polar(magnitude, phase)


def test_each_magnitude_is_raised_to_its_bins_exponent_and_the_phase_is_kept() -> None:
    spectrum = random_spectrum()
    stretched = perceptual_contrast_stretch(spectrum)
    assert stretched.shape == spectrum.shape and stretched.dtype == torch.complex64
    gamma = pcs_exponents()[:, None].double()
    expected = torch.expm1(gamma * torch.log1p(spectrum.abs().double()))
    torch.testing.assert_close(stretched.abs().double(), expected, rtol=2e-6, atol=1e-9)
    nonzero = spectrum.abs() > 0
    phase_change = torch.angle(stretched * spectrum.conj())  # 0 where the phase is kept
    assert float(phase_change[nonzero].abs().max()) < 1e-6
    assert torch.all(stretched[~nonzero] == 0), "a bin of magnitude 0 stays 0"
    below_100_hz = torch.from_numpy(FREQUENCIES < 100)
    torch.testing.assert_close(stretched[:, below_100_hz], spectrum[:, below_100_hz], rtol=2e-6, atol=0)


def test_strong_bins_gain_more_than_weak_ones_so_contrast_grows() -> None:
    spectrum = torch.polar(torch.tensor([0.01, 1.0, 100.0])[None, :].expand(NUM_BINS, 3).contiguous(),
                           torch.zeros(NUM_BINS, 3))
    gains = (perceptual_contrast_stretch(spectrum).abs() / spectrum.abs())[FREQUENCIES == 1000.0][0]
    assert gains[0] == pytest.approx(1.4, rel=0.01)  # near 0: a gain of gamma
    assert gains[0] < gains[1] < gains[2] and float(gains[2]) == pytest.approx(101**1.4 / 100 - 0.01, rel=1e-5)


def test_unit_exponents_are_the_identity_and_wrong_shapes_are_refused() -> None:
    spectrum = random_spectrum(1)
    torch.testing.assert_close(perceptual_contrast_stretch(spectrum, torch.ones(NUM_BINS)), spectrum,
                               rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match=r"expected a complex spectrum \[\.\.\., 257, frames\], found torch.float32"):
        perceptual_contrast_stretch(spectrum.abs())
    with pytest.raises(ValueError, match="257, frames"):
        perceptual_contrast_stretch(spectrum[:, :201])
    with pytest.raises(ValueError, match="expected 257 exponents, found"):
        perceptual_contrast_stretch(spectrum, torch.ones(201))


# --------------------------------------------------------------------------- enhancement
@pytest.mark.parametrize("chunking", [{}, CHUNKED], ids=["whole", "chunked"])
def test_off_is_bit_identical_to_enhancing_without_the_option(chunking: dict) -> None:
    model, audio = tiny_generator(), speech_like(2.5)
    plain = enhance_waveform(model, audio, **chunking)
    assert np.array_equal(enhance_waveform(model, audio, pcs=False, **chunking), plain)
    assert np.array_equal(enhance_audio(model, audio, SAMPLE_RATE, pcs=False), enhance_audio(model, audio, SAMPLE_RATE))
    if not chunking:  # the reference evaluation, written out: reflect pad one hop, STFT, network, iSTFT
        padded = reflect_padded(audio)
        with torch.no_grad():
            by_hand = istft(model(stft(padded)), length=padded.shape[-1])[0, HOP_LENGTH:-HOP_LENGTH].numpy()
        assert np.array_equal(plain, by_hand)


def test_on_stretches_the_networks_spectrum_and_keeps_its_peak() -> None:
    model, audio = tiny_generator(), speech_like(2.0, seed=1)
    plain, stretched = enhance_waveform(model, audio), enhance_waveform(model, audio, pcs=True)
    padded = reflect_padded(audio)
    with torch.no_grad():
        by_hand = istft(perceptual_contrast_stretch(model(stft(padded))), length=padded.shape[-1])
    by_hand = by_hand[0, HOP_LENGTH:-HOP_LENGTH].numpy()
    by_hand *= np.abs(plain).max() / np.abs(by_hand).max()
    np.testing.assert_allclose(stretched, by_hand, rtol=1e-5, atol=1e-6 * np.abs(plain).max())
    assert stretched.dtype == np.float32 and stretched.shape == audio.shape
    assert np.abs(stretched).max() == pytest.approx(np.abs(plain).max(), rel=1e-6)
    assert snr_db(plain, stretched) < 30, "stretching changed nothing worth measuring"


def test_on_raises_the_contrast_of_a_tone_over_weak_noise() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    tone = 0.5 * np.sin(2 * np.pi * 1000 * t)
    noisy = (tone + 0.003 * rng.standard_normal(t.size)).astype(np.float32)

    def tone_to_rest_db(signal: np.ndarray) -> float:
        core = slice(2000, -2000)
        basis = np.stack([np.sin(2 * np.pi * 1000 * t), np.cos(2 * np.pi * 1000 * t)], axis=1)[core]
        fitted = basis @ np.linalg.lstsq(basis, signal[core], rcond=None)[0]
        return snr_db(fitted, signal[core])  # tone power over the power of everything else

    plain = enhance_waveform(identity, noisy)
    assert tone_to_rest_db(plain) == pytest.approx(tone_to_rest_db(noisy), abs=0.1)  # the STFT round trip alone
    assert tone_to_rest_db(enhance_waveform(identity, noisy, pcs=True)) > tone_to_rest_db(plain) + 6


def test_on_in_chunks_matches_the_whole_signal_and_the_chunked_peak() -> None:
    audio = speech_like(2.5, seed=2)
    whole = enhance_waveform(identity, audio, pcs=True)
    chunked = enhance_waveform(identity, audio, pcs=True, **CHUNKED)
    assert chunked.shape == audio.shape and np.isfinite(chunked).all()
    assert snr_db(whole, chunked) > 50  # measured 64 dB; PCS acts per bin: chunks differ only in their edge frames
    model = tiny_generator()
    plain, stretched = enhance_waveform(model, audio, **CHUNKED), enhance_waveform(model, audio, pcs=True, **CHUNKED)
    assert np.abs(stretched).max() == pytest.approx(np.abs(plain).max(), rel=1e-6)


def test_on_keeps_every_channel_and_the_rate_of_a_44k_stereo_input() -> None:
    model = tiny_generator()
    left, right = speech_like(1.0, seed=3), 0.5 * speech_like(1.0, seed=4)
    stereo = np.stack([left, right])
    plain = enhance_audio(model, stereo, SAMPLE_RATE, pcs=False)
    stretched = enhance_audio(model, stereo, SAMPLE_RATE, pcs=True)
    assert stretched.shape == stereo.shape and np.isfinite(stretched).all()
    for channel in range(2):
        assert np.abs(stretched[channel]).max() == pytest.approx(np.abs(plain[channel]).max(), rel=1e-6)
    resampled = enhance_audio(model, np.stack([np.interp(np.arange(44100) / 44100, np.arange(16000) / 16000, x)
                                                for x in (left, right)]).astype(np.float32), 44100, pcs=True)
    assert resampled.shape == (2, 44100) and np.isfinite(resampled).all()


# --------------------------------------------------------------------------- the commands
def test_enhance_pcs_end_to_end_on_a_demo_file(run_dir: Path, tmp_path: Path) -> None:
    _, noisy_dir = write_demo_audio(tmp_path / "demo", count=1)
    noisy = next(noisy_dir.iterdir())
    outputs = {}
    for name, extra in (("off", []), ("pcs", ["--pcs"])):
        result = bsrnn("enhance", str(run_dir), str(noisy), "--out", str(tmp_path / name), *extra)
        assert result.returncode == 0, result.stderr
        assert (PCS_ON in result.stdout) == bool(extra)
        written = tmp_path / name / noisy.name
        assert soundfile.info(written).subtype == soundfile.info(noisy).subtype == "PCM_16"
        outputs[name], rate = soundfile.read(written, dtype="float32")
        assert rate == SAMPLE_RATE and outputs[name].shape == soundfile.read(noisy)[0].shape
    audio, _ = soundfile.read(noisy, dtype="float32")
    expected = enhance_audio(tiny_generator(), audio, SAMPLE_RATE, pcs=True)
    assert np.abs(outputs["pcs"] - expected).max() <= 1 / 32768 + 1e-6  # 16-bit PCM rounding
    assert np.abs(outputs["off"] - enhance_audio(tiny_generator(), audio, SAMPLE_RATE)).max() <= 1 / 32768 + 1e-6
    assert snr_db(outputs["off"], outputs["pcs"]) < 30


def test_evaluate_pcs_scores_every_demo_utterance(run_dir: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    csv_path = tmp_path / "scores.csv"
    assert main(["evaluate", str(run_dir), "--demo", "--pcs", "--workers", "1", "--csv", str(csv_path)]) == 0
    printed = capsys.readouterr().out
    assert PCS_ON in printed and "pesq" in printed
    assert len(csv_path.read_text().splitlines()) == 1 + 8  # header + the demo set's 8 test pairs
