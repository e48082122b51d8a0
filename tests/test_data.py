"""Corpus discovery, validation messages and training/test items."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from bsrnn.data import (
    ArraySource,
    FixedCrops,
    Pair,
    TestSet,
    TrainSet,
    check_corpus,
    check_data_dir,
    crop_offset,
    find_corpus,
)
from bsrnn.data.layout import Corpus
from bsrnn.errors import DataError

SPLIT_FOLDERS = {
    ("train", "clean"): "train/clean",
    ("train", "noisy"): "train/noisy",
    ("test", "clean"): "test/clean",
    ("test", "noisy"): "test/noisy",
}
VOICEBANK_FOLDERS = {
    ("train", "clean"): "clean_trainset_28spk_wav",
    ("train", "noisy"): "noisy_trainset_28spk_wav",
    ("test", "clean"): "clean_testset_wav",
    ("test", "noisy"): "noisy_testset_wav",
}


def _tone(samples: int = 1024, channels: int = 1) -> np.ndarray:
    wave = 0.3 * np.sin(np.arange(samples) * 0.05).astype(np.float32)
    return wave if channels == 1 else np.stack([wave] * channels, axis=1)


def make_corpus(root: Path, folders: dict = SPLIT_FOLDERS, names: tuple[str, ...] = ("p2_1", "p10_1", "p1_1"),
                suffix: str = ".wav") -> Path:
    subtype = "VORBIS" if suffix == ".ogg" else "PCM_16"
    for folder in folders.values():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            soundfile.write(str(root / folder / f"{name}{suffix}"), _tone(), 16000, subtype=subtype)
    return root


def _error_of(data_dir: Path, deep: bool = False) -> str:
    with pytest.raises(DataError) as caught:
        check_data_dir(data_dir, deep=deep)
    return str(caught.value)


def test_split_folder_layout_is_found_with_pairs_in_natural_order(tmp_path) -> None:
    corpus = find_corpus(make_corpus(tmp_path))
    assert corpus.layout == "split folders"
    assert [pair.name for pair in corpus.train] == ["p1_1", "p2_1", "p10_1"]
    name, clean, noisy = corpus.test[0]
    assert clean.path == tmp_path / "test/clean/p1_1.wav" and noisy.path == tmp_path / "test/noisy/p1_1.wav"


def test_voicebank_layout_is_found(tmp_path) -> None:
    corpus = check_data_dir(make_corpus(tmp_path, VOICEBANK_FOLDERS))
    assert corpus.layout == "VoiceBank+DEMAND"
    assert len(corpus.train) == 3 and len(corpus.test) == 3
    assert corpus.train[0].clean.path.parent.name == "clean_trainset_28spk_wav"


def test_hidden_and_non_wav_files_are_ignored(tmp_path) -> None:
    make_corpus(tmp_path)
    (tmp_path / "train/clean/._p1_1.wav").write_bytes(b"\x00\x05\x16\x07")
    (tmp_path / "train/noisy/notes.txt").write_text("hello")
    assert len(check_data_dir(tmp_path).train) == 3


def test_missing_data_dir_names_it_and_the_layouts(tmp_path) -> None:
    message = _error_of(tmp_path / "nowhere")
    assert "nowhere" in message and "clean_trainset_28spk_wav" in message and "train/clean" in message


def test_missing_split_names_the_folder_and_the_layouts_looked_for(tmp_path) -> None:
    make_corpus(tmp_path)
    for path in (tmp_path / "test/noisy").iterdir():
        path.unlink()
    (tmp_path / "test/noisy").rmdir()
    message = _error_of(tmp_path)
    assert "missing folders (1)" in message and str(tmp_path / "test/noisy") in message
    assert "Layouts looked for" in message and "noisy_testset_wav" in message


def test_name_mismatch_lists_the_unpaired_files(tmp_path) -> None:
    make_corpus(tmp_path)
    (tmp_path / "train/noisy/p2_1.wav").rename(tmp_path / "train/noisy/p2_01.wav")
    message = _error_of(tmp_path)
    assert "name mismatches (2)" in message
    assert str(tmp_path / "train/clean/p2_1.wav") in message and str(tmp_path / "train/noisy/p2_01.wav") in message


def test_empty_wav_is_named(tmp_path) -> None:
    make_corpus(tmp_path)
    (tmp_path / "train/noisy/p1_1.wav").write_bytes(b"")
    message = _error_of(tmp_path)
    assert "empty files (1)" in message and str(tmp_path / "train/noisy/p1_1.wav") in message


def test_a_file_that_is_not_a_wav_is_named(tmp_path) -> None:
    make_corpus(tmp_path)
    (tmp_path / "test/clean/p2_1.wav").write_bytes(b"ID3\x04 this is an mp3, honest")
    message = _error_of(tmp_path)
    assert "not readable audio (1)" in message and str(tmp_path / "test/clean/p2_1.wav") in message


def test_wrong_sample_rate_names_the_file_the_rate_and_how_to_resample(tmp_path) -> None:
    make_corpus(tmp_path)
    soundfile.write(str(tmp_path / "train/clean/p1_1.wav"), _tone(), 48000)
    message = _error_of(tmp_path)
    assert str(tmp_path / "train/clean/p1_1.wav") in message
    assert "48000 Hz" in message and "expected 16000 Hz" in message and "sox" in message and "-r 16000" in message
    # The usual case is an unzipped VoiceBank+DEMAND release: the command that prepares it comes first.
    assert -1 < message.index("bsrnn data prepare vbd SOURCE --out DIR") < message.index("sox")


def test_stereo_training_file_is_named(tmp_path) -> None:
    make_corpus(tmp_path)
    soundfile.write(str(tmp_path / "train/noisy/p10_1.wav"), _tone(channels=2), 16000)
    message = _error_of(tmp_path)
    assert "multi-channel files (1)" in message and "2 channels" in message
    assert str(tmp_path / "train/noisy/p10_1.wav") in message


def test_clip_shorter_than_one_frame_is_named(tmp_path) -> None:
    make_corpus(tmp_path)
    for side in ("clean", "noisy"):
        soundfile.write(str(tmp_path / f"train/{side}/p1_1.wav"), _tone(300), 16000)
    message = _error_of(tmp_path)
    assert "shorter than one frame (2)" in message and "300 samples" in message
    assert str(tmp_path / "train/clean/p1_1.wav") in message


def test_clean_and_noisy_of_different_length_are_named(tmp_path) -> None:
    make_corpus(tmp_path)
    soundfile.write(str(tmp_path / "test/noisy/p1_1.wav"), _tone(2000), 16000)
    message = _error_of(tmp_path)
    assert "length mismatches (1)" in message and str(tmp_path / "test/noisy/p1_1.wav") in message


def test_unreadable_file_is_named(tmp_path) -> None:
    make_corpus(tmp_path)
    path = tmp_path / "train/clean/p2_1.wav"
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as a user (e.g. root) whom file permissions do not stop")
        message = _error_of(tmp_path)
        assert "unreadable files (1)" in message and str(path) in message and "chmod" in message
    finally:
        path.chmod(0o644)


def test_nan_samples_are_named_by_the_deep_scan(tmp_path) -> None:
    make_corpus(tmp_path)
    bad = _tone()
    bad[10] = np.nan
    soundfile.write(str(tmp_path / "train/noisy/p2_1.wav"), bad, 16000, subtype="FLOAT")
    check_data_dir(tmp_path)  # a header scan cannot see samples
    message = _error_of(tmp_path, deep=True)
    assert "NaN/inf samples (1)" in message and str(tmp_path / "train/noisy/p2_1.wav") in message


def test_all_silent_clip_is_named_by_the_deep_scan(tmp_path) -> None:
    make_corpus(tmp_path)
    soundfile.write(str(tmp_path / "test/clean/p10_1.wav"), np.zeros(1024, np.float32), 16000)
    message = _error_of(tmp_path, deep=True)
    assert "all-silent clips (1)" in message and str(tmp_path / "test/clean/p10_1.wav") in message


def test_every_problem_comes_in_one_error_with_counts(tmp_path) -> None:
    names = tuple(f"u{i}" for i in range(8))
    make_corpus(tmp_path, names=names)
    for name in names:
        soundfile.write(str(tmp_path / f"train/clean/{name}.wav"), _tone(), 22050)
    (tmp_path / "test/noisy/u3.wav").write_bytes(b"")
    message = _error_of(tmp_path)
    assert "9 problem(s)" in message
    assert "wrong sample rate (8)" in message and "... and 3 more" in message and "empty files (1)" in message


def test_the_default_scan_reads_headers_only_and_the_deep_scan_decodes_each_file_once(tmp_path, monkeypatch) -> None:
    """What keeps the default check of a 24k-file corpus to seconds: it decodes no sample."""
    names = tuple(f"f{i}" for i in range(20))
    make_corpus(tmp_path, names=names)
    decoded: list[str] = []
    decode = soundfile.SoundFile.read

    def counting_decode(self, *args, **kwargs):
        decoded.append(os.fsdecode(self.name))  # files are opened by their bytes (audio.native_path)
        return decode(self, *args, **kwargs)

    monkeypatch.setattr(soundfile.SoundFile, "read", counting_decode)
    corpus = check_data_dir(tmp_path)
    assert len(corpus.train) == len(corpus.test) == 20
    assert decoded == []
    check_data_dir(tmp_path, deep=True)
    assert sorted(decoded) == sorted(str(tmp_path / folder / f"{name}.wav")
                                     for folder in SPLIT_FOLDERS.values() for name in names)


# ----------------------------------------------------------------------------- formats
@pytest.mark.parametrize("suffix", [".flac", ".ogg", ".aiff"])
def test_a_corpus_in_any_format_libsndfile_reads_is_found_and_checked(tmp_path, suffix: str) -> None:
    make_corpus(tmp_path, suffix=suffix)
    corpus = check_data_dir(tmp_path, deep=True)
    assert [pair.name for pair in corpus.train] == ["p1_1", "p2_1", "p10_1"]
    assert corpus.test[0].clean.path == tmp_path / f"test/clean/p1_1{suffix}"


def test_clean_and_noisy_files_pair_by_name_whatever_their_formats(tmp_path) -> None:
    make_corpus(tmp_path)
    for path in sorted((tmp_path / "train/noisy").iterdir()):
        soundfile.write(str(path.with_suffix(".flac")), soundfile.read(str(path), dtype="int16")[0], 16000)
        path.unlink()
    corpus = check_data_dir(tmp_path, deep=True)
    name, clean, noisy = corpus.train[0]
    assert name == "p1_1" and clean.path.suffix == ".wav" and noisy.path.suffix == ".flac"


def test_training_items_from_a_16_bit_flac_equal_those_from_the_wav_bit_for_bit(tmp_path) -> None:
    wav_corpus, flac_corpus = make_corpus(tmp_path / "wav"), make_corpus(tmp_path / "flac", suffix=".flac")
    rng = np.random.default_rng(0)
    for name, length in (("p1_1", 40000), ("p2_1", 20000)):
        for side in ("clean", "noisy"):
            stored = rng.integers(-20000, 20000, length).astype(np.int16)  # the same 16-bit samples in both
            soundfile.write(str(wav_corpus / f"train/{side}/{name}.wav"), stored, 16000, subtype="PCM_16")
            soundfile.write(str(flac_corpus / f"train/{side}/{name}.flac"), stored, 16000, subtype="PCM_16")
    from_wav = TrainSet(find_corpus(wav_corpus).train, cut_len=32000, seed=3)
    from_flac = TrainSet(find_corpus(flac_corpus).train, cut_len=32000, seed=3)
    for key in [(0, 0), (1, 0), (0, 1)]:  # two crops of p1_1, and p2_1 tiled
        for wav_item, flac_item in zip(from_wav[key], from_flac[key]):
            assert torch.equal(wav_item, flac_item)


def test_one_name_in_two_formats_in_one_folder_is_an_error_naming_both(tmp_path) -> None:
    make_corpus(tmp_path)
    soundfile.write(str(tmp_path / "train/clean/p2_1.flac"), _tone(), 16000)
    message = _error_of(tmp_path)
    assert "one audio file per name" in message and "1 name(s) that are held by files in different formats" in message
    assert f"{tmp_path / 'train/clean/p2_1.flac'} and {tmp_path / 'train/clean/p2_1.wav'}" in message


def test_a_folder_of_other_files_only_is_named_as_without_audio(tmp_path) -> None:
    make_corpus(tmp_path)
    for path in (tmp_path / "test/clean").iterdir():
        path.rename(path.with_suffix(".txt"))
    message = _error_of(tmp_path)
    assert "folders without audio files (1)" in message and ".flac" in message and str(tmp_path / "test/clean") in message


def _pair(length: int, name: str = "x") -> Pair:
    clean = np.arange(length, dtype=np.float32) / length
    return Pair(name, ArraySource(clean, 16000, f"{name}/clean"), ArraySource(clean + 1.0, 16000, f"{name}/noisy"))


def test_same_key_gives_the_same_crop_and_another_epoch_another_crop() -> None:
    data = TrainSet([_pair(40000), _pair(50000)], cut_len=8000, seed=3)
    clean, noisy = data[(2, 1)]
    assert clean.shape == (8000,) and clean.dtype == torch.float32
    assert torch.equal(clean, data[(2, 1)][0])
    assert torch.equal(noisy, clean + 1.0)  # the same offset on both sides
    offsets = {crop_offset(3, epoch, 1, 50000, 8000) for epoch in range(6)}
    assert len(offsets) > 1
    start = round(clean[0].item() * 50000)
    assert start == crop_offset(3, 2, 1, 50000, 8000)
    assert torch.allclose(clean, torch.arange(start, start + 8000, dtype=torch.float32) / 50000)


def test_crop_offsets_cover_both_ends() -> None:
    offsets = {crop_offset(0, epoch, 0, 10, 8) for epoch in range(200)}
    assert offsets == {0, 1, 2}


def test_a_short_clip_is_tiled_whole_then_partially_as_the_reference() -> None:
    data = TrainSet([_pair(3000)], cut_len=8000)
    clean, noisy = data[(0, 0)]
    base = torch.arange(3000, dtype=torch.float32) / 3000
    assert torch.equal(clean, torch.cat([base, base, base[:2000]]))
    assert torch.equal(noisy, clean + 1.0)


def test_test_set_items_are_full_length_with_their_name() -> None:
    clean, noisy, name = TestSet([_pair(12345, "utt")])[0]
    assert clean.shape == noisy.shape == (12345,) and name == "utt"


def test_fixed_crops_are_the_same_every_time() -> None:
    crops = FixedCrops([_pair(40000, "a")], cut_len=8000, seed=1)
    first = crops[0]
    assert first[0].shape == (8000,) and first[2] == "a"
    assert torch.equal(first[0], crops[0][0])


def test_loading_a_clip_with_nan_names_it() -> None:
    samples = np.ones(2000, np.float32)
    samples[5] = np.inf
    noisy = ArraySource(np.ones(2000, np.float32), 16000, "bad/noisy")
    pair = Pair("bad", ArraySource(samples, 16000, "bad/clean"), noisy)
    with pytest.raises(DataError, match="bad/clean"):
        TrainSet([pair], cut_len=1920)[(0, 0)]


def test_items_never_alias_the_in_memory_corpus() -> None:
    pair = _pair(4000)
    clean, _ = TrainSet([pair], cut_len=8000)[(0, 0)]
    clean.zero_()
    assert pair.clean.load()[0][1] > 0


def test_in_memory_corpus_goes_through_the_same_checks() -> None:
    ones = np.ones(600, np.float32)
    at_8k = Pair("r", ArraySource(ones, 8000, "r/c"), ArraySource(ones, 8000, "r/n"))
    corpus = Corpus(train=[_pair(100)], test=[at_8k])
    with pytest.raises(DataError) as caught:
        check_corpus(corpus)
    message = str(caught.value)
    assert "shorter than one frame (2)" in message and "wrong sample rate (2)" in message and "<memory:r/c>" in message


def test_permission_denied_is_reported_as_unreadable_even_when_running_as_root(tmp_path, monkeypatch) -> None:
    import builtins

    from bsrnn.data import sources

    make_corpus(tmp_path)
    locked = tmp_path / "test/noisy/p1_1.wav"

    def guarded_open(path, *args, **kwargs):
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(sources, "open", guarded_open, raising=False)
    message = _error_of(tmp_path)
    assert "unreadable files (1)" in message and str(locked) in message and "permission denied" in message
