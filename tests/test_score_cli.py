"""``bsrnn score CLEAN_DIR ENHANCED_DIR``: common files, CSV contract, clear input errors."""

from __future__ import annotations

import argparse
import csv
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
from scipy.signal import resample_poly

from bsrnn.audio import SAMPLE_RATE
from bsrnn.cli import score
from bsrnn.errors import DataError, UserError
from bsrnn.metrics import parallel
from signals import speech_like

CSV_COLUMNS = ["file", "pesq", "csig", "cbak", "covl", "ssnr", "stoi"]


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """Three common files (one enhanced at 48 kHz), plus one name only in each folder."""
    clean_dir, enhanced_dir = tmp_path / "clean", tmp_path / "enhanced"
    clean_dir.mkdir()
    enhanced_dir.mkdir()
    rng = np.random.default_rng(3)
    for index, name in enumerate(["p232_001.wav", "p232_002.wav", "p257_003.wav"]):
        clean = speech_like(index, 1.5)
        enhanced = clean + 0.01 * (index + 1) * rng.standard_normal(len(clean))
        soundfile.write(clean_dir / name, clean, SAMPLE_RATE)
        if name == "p257_003.wav":
            soundfile.write(enhanced_dir / name, resample_poly(enhanced, 3, 1), 48000)
        else:
            soundfile.write(enhanced_dir / name, enhanced, SAMPLE_RATE)
    soundfile.write(clean_dir / "only_clean.wav", speech_like(5, 1.5), SAMPLE_RATE)
    soundfile.write(enhanced_dir / "only_enhanced.wav", speech_like(6, 1.5), SAMPLE_RATE)
    return clean_dir, enhanced_dir


def run_score(argv: list[str]) -> int:
    """The command as the dispatcher would call it, without importing the other commands."""
    parser = argparse.ArgumentParser(prog="bsrnn score")
    score.add_arguments(parser)
    return score.run(parser.parse_args(argv))


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_writes_one_csv_row_per_common_file_with_the_contract_columns(folders, tmp_path, capsys):
    clean_dir, enhanced_dir = folders
    csv_path = tmp_path / "out" / "scores.csv"
    argv = [str(clean_dir), str(enhanced_dir), "--csv", str(csv_path), "--workers", "1"]
    assert run_score(argv) == 0
    rows = read_rows(csv_path)
    assert [row["file"] for row in rows] == ["p232_001.wav", "p232_002.wav", "p257_003.wav"]
    assert list(rows[0])[: len(CSV_COLUMNS)] == CSV_COLUMNS
    assert all(1.0 < float(row["pesq"]) <= 4.65 and 0.0 < float(row["stoi"]) <= 1.0 for row in rows)
    assert float(rows[0]["pesq"]) > float(rows[1]["pesq"])  # less noise, better score
    assert float(rows[2]["duration_s"]) == pytest.approx(1.5, abs=1e-3)  # resampled back to 16 kHz
    table = capsys.readouterr().out
    assert "pesq" in table and "stoi" in table and "3 files" in table


def test_two_workers_give_the_same_rows(folders, tmp_path, monkeypatch):
    clean_dir, enhanced_dir = folders
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    run_score([str(clean_dir), str(enhanced_dir), "--csv", str(one), "--workers", "1"])
    monkeypatch.setattr(parallel, "PARENT_TAKES_JOBS", False)  # the helper reads and scores all
    run_score([str(clean_dir), str(enhanced_dir), "--csv", str(two), "--workers", "2"])
    assert read_rows(one) == read_rows(two)


def test_an_existing_csv_is_refused_before_scoring_and_replaced_with_overwrite(folders, tmp_path):
    clean_dir, enhanced_dir = folders
    csv_path = tmp_path / "scores.csv"
    csv_path.write_text("earlier scores\n")
    argv = [str(clean_dir), str(enhanced_dir), "--csv", str(csv_path), "--workers", "1"]
    with pytest.raises(UserError, match=r"--csv: expected no file where outputs go, found 1 that exist already: "
                                        r".*scores\.csv\. Fix: pass --overwrite to replace it"):
        run_score(argv)
    assert csv_path.read_text() == "earlier scores\n"
    assert run_score([*argv, "--overwrite"]) == 0
    assert len(read_rows(csv_path)) == 3 and sorted(path.name for path in tmp_path.iterdir()) == [
        "clean", "enhanced", "scores.csv", "scores.csv.settings.json"]


def test_the_csv_never_replaces_an_input_or_goes_through_a_link(folders, tmp_path):
    clean_dir, enhanced_dir = folders
    reference = clean_dir / "p232_001.wav"
    before = reference.read_bytes()
    with pytest.raises(UserError, match=r"that are inputs \(the same file\): .*p232_001\.wav"):
        run_score([str(clean_dir), str(enhanced_dir), "--csv", str(reference), "--overwrite", "--workers", "1"])
    (tmp_path / "link.csv").symlink_to(reference)
    with pytest.raises(UserError, match=r"symbolic link\(s\) where outputs would go: .*link\.csv"):
        run_score([str(clean_dir), str(enhanced_dir), "--csv", str(tmp_path / "link.csv"), "--overwrite"])
    assert reference.read_bytes() == before


def test_names_in_only_one_folder_are_warned_about_and_resampling_is_announced(folders, caplog):
    clean_dir, enhanced_dir = folders
    with caplog.at_level(logging.INFO):
        run_score([str(clean_dir), str(enhanced_dir), "--workers", "1"])
    assert "only_clean.wav" in caplog.text and "only_enhanced.wav" in caplog.text
    assert "resampling 1 files to 16 kHz" in caplog.text and "48000 Hz" in caplog.text


def test_a_missing_folder_is_a_user_error_naming_the_path(folders, tmp_path):
    clean_dir, _ = folders
    missing = tmp_path / "no_such_folder"
    with pytest.raises(UserError, match="no_such_folder"):
        run_score([str(clean_dir), str(missing)])


def test_folders_without_a_common_name_are_a_user_error(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    soundfile.write(tmp_path / "a" / "x.wav", speech_like(0, 1.5), SAMPLE_RATE)
    soundfile.write(tmp_path / "b" / "y.wav", speech_like(0, 1.5), SAMPLE_RATE)
    with pytest.raises(UserError, match=r"no audio file name \(without its suffix\) is in both folders"):
        run_score([str(tmp_path / "a"), str(tmp_path / "b")])


def test_flac_references_pair_with_enhanced_files_of_any_format_by_name(folders, tmp_path):
    """A row is named by the clean file, so CSVs of systems that write different formats line up."""
    clean_dir, enhanced_dir = folders
    as_wavs = tmp_path / "wavs.csv"
    run_score([str(clean_dir), str(enhanced_dir), "--csv", str(as_wavs), "--workers", "1"])
    flac_dir = tmp_path / "clean_flac"
    flac_dir.mkdir()
    for path in clean_dir.iterdir():
        samples, rate = soundfile.read(path, dtype="int16")
        soundfile.write(flac_dir / f"{path.stem}.flac", samples, rate, subtype="PCM_16")
    (enhanced_dir / "p232_002.wav").rename(enhanced_dir / "p232_002.WAV")
    as_flacs = tmp_path / "flacs.csv"
    assert run_score([str(flac_dir), str(enhanced_dir), "--csv", str(as_flacs), "--workers", "1"]) == 0
    rows = read_rows(as_flacs)
    assert [row["file"] for row in rows] == ["p232_001.flac", "p232_002.flac", "p257_003.flac"]
    strip = [{**row, "file": Path(row["file"]).stem} for row in rows]
    assert strip == [{**row, "file": Path(row["file"]).stem} for row in read_rows(as_wavs)]  # same samples


def test_one_name_in_two_formats_in_one_folder_is_refused_naming_both(folders):
    clean_dir, enhanced_dir = folders
    soundfile.write(enhanced_dir / "p232_001.flac", speech_like(0, 1.5), SAMPLE_RATE)
    with pytest.raises(DataError, match=r"ENHANCED_DIR .*one audio file per name.*p232_001\.flac and .*p232_001\.wav"):
        run_score([str(clean_dir), str(enhanced_dir), "--workers", "1"])


def test_a_stereo_wav_is_refused_naming_the_file(folders):
    clean_dir, enhanced_dir = folders
    stereo = np.stack([speech_like(0, 1.5)] * 2, axis=1)
    soundfile.write(enhanced_dir / "p232_002.wav", stereo, SAMPLE_RATE)
    with pytest.raises(DataError, match=r"p232_002\.wav.*2 channels"):
        run_score([str(clean_dir), str(enhanced_dir), "--workers", "1"])


def test_main_exits_2_with_the_missing_path_on_stderr(folders, tmp_path, capsys):
    from bsrnn.cli.main import main  # an ImportError here is a bug in a command module: it fails

    clean_dir, enhanced_dir = folders
    assert main(["score", str(clean_dir), str(tmp_path / "gone")]) == 2
    assert str(tmp_path / "gone") in capsys.readouterr().err
    csv_path = tmp_path / "main.csv"
    assert main(["score", str(clean_dir), str(enhanced_dir), "--csv", str(csv_path),
                 "--workers", "1"]) == 0
    assert len(read_rows(csv_path)) == 3


def test_python_m_bsrnn_score_runs_in_a_subprocess(folders, tmp_path):
    clean_dir, enhanced_dir = folders
    csv_path, in_process_csv = tmp_path / "sub.csv", tmp_path / "in_process.csv"
    done = subprocess.run(
        [sys.executable, "-m", "bsrnn", "score", str(clean_dir), str(enhanced_dir),
         "--csv", str(csv_path), "--workers", "1"],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "pesq" in done.stdout
    run_score([str(clean_dir), str(enhanced_dir), "--csv", str(in_process_csv), "--workers", "1"])
    assert read_rows(csv_path) == read_rows(in_process_csv)
    assert "only_clean.wav" in done.stderr  # warnings reach the console


def test_scoring_workers_die_with_a_sigkilled_score(tmp_path: Path) -> None:
    """`bsrnn score --workers 2`, SIGKILLed while scoring: no helper process survives it."""
    import time

    from e2e import descendants, env, kill_and_assert_no_survivors

    clean_dir, enhanced_dir = tmp_path / "clean", tmp_path / "enhanced"
    clean_dir.mkdir()
    enhanced_dir.mkdir()
    clean = speech_like(0, 3.0)
    noisy = clean + 0.05 * np.random.default_rng(0).standard_normal(len(clean))
    for index in range(40):  # seconds of scoring
        soundfile.write(clean_dir / f"p232_{index:03d}.wav", clean, SAMPLE_RATE)
        soundfile.write(enhanced_dir / f"p232_{index:03d}.wav", noisy, SAMPLE_RATE)
    process = subprocess.Popen([sys.executable, "-m", "bsrnn", "score", str(clean_dir), str(enhanced_dir),
                                "--workers", "2", "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=env())
    deadline = time.monotonic() + 120
    helpers: set[int] = set()
    while time.monotonic() < deadline and process.poll() is None and len(helpers) < 2:
        helpers = descendants(process.pid)
        time.sleep(0.01)
    time.sleep(0.5)  # past their start: scoring
    helpers |= descendants(process.pid)
    assert process.poll() is None and len(helpers) >= 2, "scoring ended before it could be killed"
    kill_and_assert_no_survivors(process, helpers)
