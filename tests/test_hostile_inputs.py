"""Hostile inputs to enhance, evaluate, score and the dataset scan: named, refused, never garbage."""

from __future__ import annotations

import argparse
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from bsrnn.audio import wav_truncation
from bsrnn.checkpoint import CheckpointManager, CheckpointNotFoundError
from bsrnn.cli.enhance import check_out_dir, collect_audio_files
from bsrnn.data import Corpus, FileSource, Pair
from bsrnn.data.layout import scan_corpus
from bsrnn.data.validate import check_finite_samples
from bsrnn.enhancement import check_input_file, choose_checkpoint, enhance_audio, load_generator, trained_for
from bsrnn.errors import DataError, UserError
from bsrnn.metrics import check_csv_path
from bsrnn.models import BSRNN
from e2e import bsrnn

TINY_CONFIG = {"num_channel": 4, "num_layer": 1}


def speech_like(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))
    return (tone + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def make_run(run_dir: Path, best: bool) -> None:
    """A run directory with a tiny generator: checkpoint_last.pt only (stopped after one step of
    the first epoch) or, with ``best``, both files after one completed epoch."""
    torch.manual_seed(0)
    model = BSRNN(**TINY_CONFIG)
    with CheckpointManager(run_dir) as manager:
        manager.register("model_state_dict", model)
        if best:
            manager.save(metric=0.25, values={"epoch": 0, "step_in_epoch": 0, "config": TINY_CONFIG})
        else:
            manager.save(metric=None, values={"epoch": -1, "step_in_epoch": 1, "config": TINY_CONFIG})


def write_wav_bytes(path: Path, samples: np.ndarray, subtype: str = "PCM_16") -> bytes:
    soundfile.write(path, samples, 16000, subtype=subtype)
    return path.read_bytes()


# ----------------------------------------------------------------------------- input files
def test_a_header_only_wav_is_named_as_truncated(tmp_path: Path) -> None:
    data = write_wav_bytes(tmp_path / "full.wav", speech_like())
    (tmp_path / "header.wav").write_bytes(data[:44])
    with pytest.raises(DataError, match=r"header\.wav: expected a complete WAV file, found a truncated one: "
                                         r"its header promises 16000 samples, the file holds 0"):
        check_input_file(tmp_path / "header.wav")


def test_a_wav_whose_header_claims_more_samples_than_the_file_holds_is_refused(tmp_path: Path) -> None:
    data = write_wav_bytes(tmp_path / "full.wav", speech_like())
    (tmp_path / "cut.wav").write_bytes(data[: 44 + 2 * 9000])
    with pytest.raises(DataError, match="promises 16000 samples, the file holds 9000"):
        check_input_file(tmp_path / "cut.wav")
    check_input_file(tmp_path / "full.wav")  # the intact file passes


def test_a_streamed_wav_with_an_unknown_data_size_is_not_called_truncated(tmp_path: Path) -> None:
    data = bytearray(write_wav_bytes(tmp_path / "full.wav", speech_like()))
    data[40:44] = struct.pack("<I", 0xFFFFFFFF)  # what a writer that cannot seek back leaves
    (tmp_path / "streamed.wav").write_bytes(bytes(data))
    assert wav_truncation(tmp_path / "streamed.wav") is None


def test_a_file_shorter_than_one_stft_frame_is_refused_at_any_rate(tmp_path: Path) -> None:
    soundfile.write(tmp_path / "short.wav", speech_like()[:511], 16000)
    with pytest.raises(DataError, match=r"short\.wav: expected at least 32 ms of audio \(512 samples at 16 kHz, "
                                         r"one STFT frame\), found 511 samples at 16000 Hz"):
        check_input_file(tmp_path / "short.wav")
    soundfile.write(tmp_path / "short44.wav", np.zeros(1400, dtype=np.float32), 44100)  # 31.7 ms
    with pytest.raises(DataError, match="found 1400 samples at 44100 Hz"):
        check_input_file(tmp_path / "short44.wav")
    soundfile.write(tmp_path / "ok.wav", speech_like()[:512], 16000)
    check_input_file(tmp_path / "ok.wav")


def test_enhancing_nan_audio_raises_instead_of_returning_noise() -> None:
    audio = speech_like()
    audio[100] = np.nan
    with pytest.raises(DataError, match="x.wav: expected finite samples, found 1 NaN/inf sample"):
        enhance_audio(BSRNN(**TINY_CONFIG).eval(), audio, 16000, where="x.wav")


class _NanGenerator(torch.nn.Module):
    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        return spec * float("nan")


def test_a_non_finite_enhanced_signal_is_never_returned() -> None:
    with pytest.raises(UserError, match="x.wav: expected a finite enhanced signal"):
        enhance_audio(_NanGenerator(), speech_like(), 16000, where="x.wav")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- outputs
def test_enhance_out_naming_an_existing_file_is_refused(tmp_path: Path) -> None:
    existing = tmp_path / "taken"
    existing.write_text("not a folder")
    with pytest.raises(UserError, match=r"--out .*taken: expected a folder \(created if missing\), found a file"):
        check_out_dir(existing, [])


def test_a_csv_path_that_cannot_be_written_is_refused_and_missing_folders_are_fine(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    with pytest.raises(UserError, match=r"expected a folder to write it in, found that .*notes\.txt is a file"):
        check_csv_path(tmp_path / "notes.txt" / "scores.csv")
    with pytest.raises(UserError, match="expected a file name, found a folder"):
        check_csv_path(tmp_path)
    check_csv_path(tmp_path / "new" / "deeper" / "scores.csv")  # write_csv creates the folders
    assert not (tmp_path / "new").exists()


def test_score_refuses_an_unwritable_csv_before_reading_any_wav(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    result = bsrnn("score", str(tmp_path / "no_clean"), str(tmp_path / "no_enhanced"),
                   "--csv", str(tmp_path / "notes.txt" / "scores.csv"))
    assert result.returncode == 2, result.stderr
    assert "error: --csv" in result.stderr and "is a file" in result.stderr and "Traceback" not in result.stderr


# ----------------------------------------------------------------------------- data files
def test_wav_names_that_differ_only_in_case_are_an_error_naming_both(tmp_path: Path) -> None:
    for side in ("clean", "noisy"):
        folder = tmp_path / "test" / side
        folder.mkdir(parents=True)
        soundfile.write(folder / "p0.wav", speech_like(), 16000)
    soundfile.write(tmp_path / "test" / "noisy" / "p0.WAV", speech_like(seed=1), 16000)
    with pytest.raises(DataError, match=r"differ only in case: .*noisy/p0\.WAV and .*noisy/p0\.wav"):
        scan_corpus(tmp_path, splits=("test",))


def test_enhance_inputs_take_any_case_of_wav_and_refuse_case_twins(tmp_path: Path) -> None:
    soundfile.write(tmp_path / "a.WAV", speech_like(), 16000)
    assert collect_audio_files([tmp_path]) == [tmp_path / "a.WAV"]
    soundfile.write(tmp_path / "a.wav", speech_like(), 16000)
    with pytest.raises(UserError, match=r"share one \(ignoring case\)"):
        collect_audio_files([tmp_path])


def test_enhance_inputs_are_the_folder_audio_files_of_every_format(tmp_path: Path) -> None:
    for name in ("b.flac", "a.wav", "c.ogg", "notes.txt", "._a.wav"):
        (tmp_path / name).write_bytes(b"")
    assert collect_audio_files([tmp_path]) == [tmp_path / "a.wav", tmp_path / "b.flac", tmp_path / "c.ogg"]


def run_enhance(argv: list[str]) -> int:
    """``bsrnn enhance`` in this process, as the dispatcher would call it."""
    from bsrnn.cli import enhance

    parser = argparse.ArgumentParser(prog="bsrnn enhance")
    enhance.add_arguments(parser)
    return enhance.run(parser.parse_args(argv))


def test_enhanced_outputs_keep_the_input_name_and_format(tmp_path: Path) -> None:
    run_dir, inputs, out = tmp_path / "run", tmp_path / "in", tmp_path / "out"
    make_run(run_dir, best=True)
    inputs.mkdir()
    soundfile.write(inputs / "x.flac", speech_like(), 16000, subtype="PCM_24")
    soundfile.write(inputs / "y.ogg", speech_like(seed=1), 16000)
    soundfile.write(inputs / "z.WAV", speech_like(seed=2), 16000, subtype="FLOAT")
    soundfile.write(inputs / "w.wav", speech_like(seed=3), 16000, format="FLAC")  # a FLAC named .wav

    assert run_enhance([str(run_dir), str(inputs), "--out", str(out)]) == 0
    written = {path.name: soundfile.info(str(path)) for path in out.iterdir()}
    assert {name: (info.format, info.subtype) for name, info in written.items()} == {
        "x.flac": ("FLAC", "PCM_16"), "y.ogg": ("OGG", "VORBIS"), "z.WAV": ("WAV", "PCM_16"), "w.wav": ("FLAC", "PCM_16")}
    assert written["x.flac"].frames == 16000 and written["x.flac"].samplerate == 16000


def noisy_and_clean(tmp_path: Path) -> tuple[Path, Path, Path, dict[str, bytes]]:
    """A run, and inp/noisy and inp/clean holding files of the same names; the clean files' bytes."""
    run_dir, noisy, clean = tmp_path / "run", tmp_path / "inp" / "noisy", tmp_path / "inp" / "clean"
    make_run(run_dir, best=True)
    for folder in (noisy, clean):
        folder.mkdir(parents=True)
    for seed, name in enumerate(("a.wav", "b.wav")):
        soundfile.write(noisy / name, speech_like(seed=seed) + 0.05 * speech_like(seed=seed + 7), 16000)
        soundfile.write(clean / name, speech_like(seed=seed), 16000)
    return run_dir, noisy, clean, {path.name: path.read_bytes() for path in clean.iterdir()}


def test_enhance_into_a_folder_of_other_files_refuses_to_replace_them_until_overwrite(tmp_path: Path) -> None:
    """The reproduction: `bsrnn enhance RUN inp/noisy --out inp/clean` replaced every clean reference."""
    run_dir, noisy, clean, before = noisy_and_clean(tmp_path)
    with pytest.raises(UserError, match=r"--out: expected no file where outputs go, found 2 that exist already: "
                                        r".*clean/a\.wav, .*clean/b\.wav\. Fix: pass --overwrite"):
        run_enhance([str(run_dir), str(noisy), "--out", str(clean)])
    assert {path.name: path.read_bytes() for path in clean.iterdir()} == before  # no temporary either

    assert run_enhance([str(run_dir), str(noisy), "--out", str(clean), "--overwrite"]) == 0
    after = {path.name: path.read_bytes() for path in clean.iterdir()}
    assert after.keys() == before.keys() and all(after[name] != before[name] for name in before)


def test_enhance_checks_every_output_before_writing_the_first(tmp_path: Path) -> None:
    run_dir, noisy, clean, _ = noisy_and_clean(tmp_path)
    (clean / "a.wav").unlink()  # a.wav could be written, b.wav could not: neither is
    with pytest.raises(UserError, match=r"found 1 that exist already: .*b\.wav"):
        run_enhance([str(run_dir), str(noisy), "--out", str(clean)])
    assert sorted(os.listdir(clean)) == ["b.wav"]


@pytest.mark.parametrize("link", [os.symlink, os.link], ids=["symbolic link", "hard link"])
def test_enhance_never_replaces_an_input_through_a_link_in_out(tmp_path: Path, link) -> None:
    """The reproduction: a symbolic link in --out that pointed at an input had the input replaced."""
    run_dir, noisy, _, _ = noisy_and_clean(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    link(noisy / "a.wav", out / "a.wav")
    inputs = {path: path.read_bytes() for path in noisy.iterdir()}
    with pytest.raises(UserError, match="symbolic link|that are inputs"):
        run_enhance([str(run_dir), str(noisy), "--out", str(out), "--overwrite"])
    assert {path: path.read_bytes() for path in noisy.iterdir()} == inputs
    assert sorted(os.listdir(out)) == ["a.wav"]


def test_evaluate_refuses_an_existing_csv_without_overwrite_before_loading_anything(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bsrnn.cli.main import main

    csv_path = tmp_path / "scores.csv"
    csv_path.write_text("earlier scores\n")
    assert main(["evaluate", str(tmp_path / "no_run"), "--demo", "--csv", str(csv_path)]) == 2
    err = capsys.readouterr().err
    assert "--csv: expected no file where outputs go, found 1 that exist already" in err and "--overwrite" in err
    assert csv_path.read_text() == "earlier scores\n"


def test_an_unreadable_flac_among_good_inputs_is_skipped_naming_it(tmp_path: Path) -> None:
    run_dir, inputs, out = tmp_path / "run", tmp_path / "in", tmp_path / "out"
    make_run(run_dir, best=True)
    inputs.mkdir()
    soundfile.write(inputs / "good.flac", speech_like(), 16000)
    whole = (inputs / "good.flac").read_bytes()
    (inputs / "cut.flac").write_bytes(whole[: len(whole) // 2])
    (inputs / "text.flac").write_text("not audio")
    with pytest.raises(UserError, match=r"skipped 2 of 3 input file\(s\)") as caught:
        run_enhance([str(run_dir), str(inputs), "--out", str(out)])
    assert str(inputs / "cut.flac") in str(caught.value) and str(inputs / "text.flac") in str(caught.value)
    assert sorted(path.name for path in out.iterdir()) == ["good.flac"]


def test_a_test_set_with_nan_samples_is_refused_by_file_before_any_enhancing(tmp_path: Path) -> None:
    clean, noisy = speech_like(), speech_like(seed=1)
    noisy[7] = np.inf
    soundfile.write(tmp_path / "c.wav", clean, 16000, subtype="FLOAT")
    soundfile.write(tmp_path / "n.wav", noisy, 16000, subtype="FLOAT")
    corpus = Corpus(test=[Pair("p0", FileSource(tmp_path / "c.wav"), FileSource(tmp_path / "n.wav"))])
    with pytest.raises(DataError, match=r"n\.wav: 1 NaN/inf samples"):
        check_finite_samples(corpus, splits=("test",))


# ----------------------------------------------------------------------------- checkpoints
def test_epochs_are_printed_as_completed_epochs_never_epoch_minus_one() -> None:
    assert trained_for(-1) == "after 0 completed epoch(s)"
    assert trained_for(2) == "after 3 completed epoch(s)"
    assert trained_for(-1, 1) == "after 0 completed epoch(s) and 1 step(s) of the next"


def test_auto_prefers_a_verified_best_and_falls_back_to_last(tmp_path: Path) -> None:
    make_run(tmp_path / "both", best=True)
    loaded, reason = choose_checkpoint(tmp_path / "both")
    assert loaded.path.name == "checkpoint_best.pt" and reason.startswith("auto: checkpoint_best.pt verifies")

    (tmp_path / "both" / "checkpoint_best.pt").write_bytes(b"damaged")
    loaded, reason = choose_checkpoint(tmp_path / "both")
    assert loaded.path.name == "checkpoint_last.pt" and "checkpoint_best.pt is unusable" in reason

    make_run(tmp_path / "last_only", best=False)
    generator = load_generator(tmp_path / "last_only")
    assert generator.path.name == "checkpoint_last.pt"
    assert generator.describe() == (
        f"Using {tmp_path / 'last_only' / 'checkpoint_last.pt'} (auto: no checkpoint_best.pt in the run yet, "
        "so the last), after 0 completed epoch(s) and 1 step(s) of the next"
    )


def test_load_best_and_last_take_exactly_that_file(tmp_path: Path) -> None:
    make_run(tmp_path, best=False)
    with pytest.raises(CheckpointNotFoundError, match="checkpoint_best.pt"):
        choose_checkpoint(tmp_path, "best")
    loaded, reason = choose_checkpoint(tmp_path, "last")
    assert loaded.path.name == "checkpoint_last.pt" and reason == "--load last"
    loaded, reason = choose_checkpoint(tmp_path / "checkpoint_last.pt", "best")
    assert loaded.path.name == "checkpoint_last.pt" and reason == "the file given"


def test_a_run_without_checkpoints_lists_both_paths(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError) as raised:
        choose_checkpoint(tmp_path)
    assert "checkpoint_best.pt" in str(raised.value) and "checkpoint_last.pt" in str(raised.value)


# ----------------------------------------------------------------------------- the real CLI
def test_enhance_skips_bad_inputs_enhances_the_rest_and_exits_2(tmp_path: Path) -> None:
    run_dir, inputs, out = tmp_path / "run", tmp_path / "in", tmp_path / "out"
    make_run(run_dir, best=True)
    inputs.mkdir()
    soundfile.write(inputs / "good.wav", speech_like(), 16000)
    poisoned = speech_like()
    poisoned[::1000] = np.nan
    soundfile.write(inputs / "nan.wav", poisoned, 16000, subtype="FLOAT")
    soundfile.write(inputs / "short.wav", speech_like()[:300], 16000)
    (inputs / "header.wav").write_bytes((inputs / "good.wav").read_bytes()[:44])

    result = bsrnn("enhance", str(run_dir), str(inputs), "--out", str(out))
    assert result.returncode == 2, result.stderr
    assert sorted(path.name for path in out.iterdir()) == ["good.wav"]
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: skipped 3 of 4 input file(s)"), result.stderr
    for name in ("nan.wav", "short.wav", "header.wav"):
        assert name in last_line
    assert "Traceback" not in result.stderr
    assert "checkpoint_best.pt (auto: checkpoint_best.pt verifies" in result.stdout

    alone = bsrnn("enhance", str(run_dir), str(inputs / "nan.wav"), "--out", str(tmp_path / "out2"))
    assert alone.returncode == 2
    assert alone.stderr.strip().splitlines()[-1].startswith(f"error: {inputs / 'nan.wav'}: expected finite samples")
    assert not (tmp_path / "out2" / "nan.wav").exists()


def test_evaluate_works_on_a_run_with_only_the_last_checkpoint_and_checks_the_csv_first(tmp_path: Path) -> None:
    run_dir, data = tmp_path / "run", tmp_path / "data"
    make_run(run_dir, best=False)
    for side in ("clean", "noisy"):
        (data / "test" / side).mkdir(parents=True)
    clean = speech_like(1.0)
    soundfile.write(data / "test" / "clean" / "p0.wav", clean, 16000)
    soundfile.write(data / "test" / "noisy" / "p0.wav", clean + speech_like(1.0, seed=2) * 0.1, 16000)

    (tmp_path / "notes.txt").write_text("a file, not a folder")
    csv_path = tmp_path / "notes.txt" / "s.csv"
    refused = bsrnn("evaluate", str(run_dir), "--data-dir", str(data), "--csv", str(csv_path))
    assert refused.returncode == 2 and f"error: --csv {csv_path}: expected a folder" in refused.stderr
    assert "Using" not in refused.stdout  # refused before the checkpoint, let alone scoring

    result = bsrnn("evaluate", str(run_dir), "--data-dir", str(data), "--workers", "1")
    assert result.returncode == 0, result.stderr
    assert "checkpoint_last.pt (auto: no checkpoint_best.pt in the run yet, so the last)" in result.stdout
    assert "after 0 completed epoch(s)" in result.stdout and "epoch -1" not in result.stdout
    assert "pesq" in result.stdout


def test_evaluate_and_score_name_rows_alike_so_compare_pairs_them_across_suffixes(tmp_path: Path) -> None:
    run_dir, data, enhanced = tmp_path / "run", tmp_path / "data", tmp_path / "enhanced"
    make_run(run_dir, best=False)
    for side in ("clean", "noisy"):
        (data / "test" / side).mkdir(parents=True)
    for index in range(2):
        clean = speech_like(1.0, seed=index)
        soundfile.write(data / "test" / "clean" / f"p{index}.flac", clean, 16000)
        soundfile.write(data / "test" / "noisy" / f"p{index}.WAV", clean + speech_like(1.0, seed=9) * 0.1, 16000,
                        format="WAV")
    evaluated = bsrnn("evaluate", str(run_dir), "--data-dir", str(data), "--workers", "1", "--csv",
                      str(tmp_path / "evaluate.csv"))
    assert evaluated.returncode == 0, evaluated.stderr
    assert bsrnn("enhance", str(run_dir), str(data / "test" / "noisy"), "--out", str(enhanced)).returncode == 0
    scored = bsrnn("score", str(data / "test" / "clean"), str(enhanced), "--workers", "1", "--csv",
                   str(tmp_path / "score.csv"))
    assert scored.returncode == 0, scored.stderr
    compared = bsrnn("compare", str(tmp_path / "evaluate.csv"), str(tmp_path / "score.csv"))
    assert compared.returncode == 0, compared.stderr
    assert "2 files in both" in compared.stdout


def test_train_config_errors_are_one_exit_2_message_without_a_traceback(tmp_path: Path) -> None:
    result = bsrnn("train", "--config", str(tmp_path), "--demo", "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"error: Config file {tmp_path}: expected a TOML file, found a folder" in result.stderr
    config = tmp_path / "c.toml"
    config.write_text("data_dir = 5\n")
    result = bsrnn("train", "--config", str(config), "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "data_dir: expected a dataset folder path (a non-empty string) or unset, found 5" in result.stderr


def test_an_input_far_beyond_full_scale_is_told_to_scale_down_not_to_blame_the_checkpoint() -> None:
    torch.manual_seed(0)
    with pytest.raises(UserError, match="far beyond full scale .* scale it down"):
        enhance_audio(BSRNN(**TINY_CONFIG).eval(), speech_like() * 1e30, 16000, where="loud.wav")


def test_a_fifo_given_as_input_is_named_as_not_a_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "stream.wav"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match=r"found a FIFO, not a regular file"):
        collect_audio_files([fifo])
    with pytest.raises(UserError, match="found nothing there"):  # and a missing path is still that
        collect_audio_files([tmp_path / "missing.wav"])


# ----------------------------------------------------------------------------- names that are not UTF-8
def _write_with_byte_name(folder: Path, stem: bytes, samples: np.ndarray) -> None:
    """A 16 kHz WAV whose file name holds a byte that is not UTF-8 (``stem + b".wav"``)."""
    folder.mkdir(parents=True, exist_ok=True)
    soundfile.write(folder / "tmp.wav", samples, 16000)
    os.rename(folder / "tmp.wav", os.fsencode(folder) + b"/" + stem + b".wav")


def test_enhance_and_score_handle_file_names_that_are_not_utf8(tmp_path: Path) -> None:
    run_dir, inputs, out = tmp_path / "run", tmp_path / "in", tmp_path / "out"
    make_run(run_dir, best=True)
    inputs.mkdir()
    soundfile.write(inputs / "good.wav", speech_like(), 16000)
    _write_with_byte_name(inputs, b"bad\xfd", speech_like(seed=1))
    result = bsrnn("enhance", str(run_dir), str(inputs), "--out", str(out))
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "Enhancing 2 file(s)" in result.stdout and "Wrote 2 file(s)" in result.stdout
    assert sorted(os.listdir(os.fsencode(out))) == [b"bad\xfd.wav", b"good.wav"]  # the names kept, byte for byte

    csv_path = tmp_path / "scores.csv"
    scored = bsrnn("score", str(inputs), str(out), "--csv", str(csv_path), "--workers", "2")
    assert scored.returncode == 0 and "Traceback" not in scored.stderr, scored.stderr
    rows = csv_path.read_bytes().decode("utf-8").splitlines()  # UTF-8 text, the odd byte spelt out
    assert [row.split(",")[0] for row in rows[1:]] == ["bad\\udcfd.wav", "good.wav"]


def test_train_on_a_corpus_with_a_file_name_that_is_not_utf8(tmp_path: Path) -> None:
    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for index in range(6):
            clean = speech_like(seed=index)
            noisy = clean + 0.05 * rng.standard_normal(len(clean))
            for side, samples in (("clean", clean), ("noisy", noisy)):
                stem = f"p22{index % 2 + 6}_00{index}".encode() + (b"\xfd" if index == 0 else b"")
                _write_with_byte_name(data / split / side, stem, samples)
    run_dir = tmp_path / "run"
    result = bsrnn("train", "--data-dir", str(data), "--run-dir", str(run_dir), "--valid-speakers", "p226",
                   "--max-steps", "1", "--num-channel", "4", "--num-layer", "1", "--batch-size", "2",
                   "--cut-len", "8000", "--pesq-workers", "0", "--validation-length", "crops")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert (run_dir / "checkpoint_last.pt").is_file()
