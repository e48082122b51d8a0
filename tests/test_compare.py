"""The paper table (``score``/``evaluate``), its formats, the CSV's settings file, and ``bsrnn compare``."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from bsrnn.audio import SAMPLE_RATE
from bsrnn.cli import score
from bsrnn.cli.main import main
from bsrnn.errors import UserError
from bsrnn.metrics import METRICS, FileScore, format_table, read_scores, settings_path, write_csv
from bsrnn.metrics.comparison import compare, format_comparison
from bsrnn.metrics.stats import paired_difference
from signals import speech_like

OLD_COLUMNS = ["file", "pesq", "csig", "cbak", "covl", "ssnr", "stoi", "duration_s", "error"]


def file_score(name: str, base: float, error: str = "") -> FileScore:
    """A row whose metrics are ``base`` plus a different offset each (ssnr and si_sdr in dB), at
    the 6 decimals of the CSV, so that a row read back is equal to it."""
    values = {"pesq": base, "csig": base + 0.5, "cbak": base + 0.2, "covl": base + 0.3, "ssnr": 4 * base,
              "stoi": base / 5, "si_sdr": 5 * base}
    return FileScore(name, **{key: round(value, 6) for key, value in values.items()}, duration_s=2.0, error=error)


def system(values: list[float], prefix: str = "p232_") -> list[FileScore]:
    return [file_score(f"{prefix}{index:03d}.wav", value) for index, value in enumerate(values)]


NOISY = [1.10, 1.20, 1.05, 1.30, 1.15, 1.25]
ENHANCED = [2.00, 2.40, 1.90, 2.10, 2.60, 1.10]
BETTER = [2.10, 2.30, 2.00, 2.50, 2.50, 1.50]


# ------------------------------------------------------------------------ the paper table
def test_the_text_table_has_noisy_enhanced_improvement_interval_and_files_improved():
    table = format_table(system(ENHANCED), system(NOISY)).splitlines()
    assert table[0].split() == ["metric", "noisy", "enhanced", "improvement", "(95%", "CI)", "improved", "files"]
    change = paired_difference(NOISY, ENHANCED)
    expected = ["pesq", f"{np.mean(NOISY):.3f}", f"{np.mean(ENHANCED):.3f}", f"{change.mean:+.3f}", "±",
                f"{change.ci_half_width:.3f}", "5/6", "6"]
    assert table[1].split() == expected
    assert any("P.862.2" in line and "not mapped" in line for line in table)


def test_without_a_baseline_the_table_has_only_the_enhanced_means():
    table = format_table(system(ENHANCED)).splitlines()
    assert table[0].split() == ["metric", "enhanced", "files"]
    assert [line.split()[0] for line in table[1:1 + len(METRICS)]] == list(METRICS)


def test_markdown_parses_as_one_table_with_a_row_per_metric():
    lines = format_table(system(ENHANCED), system(NOISY), "markdown").splitlines()
    table = lines[:lines.index("")]
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in table]
    assert all(line.startswith("| ") and line.endswith(" |") for line in table)
    assert {len(row) for row in cells} == {6} and cells[1] == ["---", "---:", "---:", "---:", "---:", "---:"]
    assert [row[0] for row in cells[2:]] == ["PESQ", "CSIG", "CBAK", "COVL", "SSNR (dB)", "STOI", "SI-SDR (dB)"]


def test_latex_is_a_booktabs_tabular_with_escaped_cells():
    text = format_table(system(ENHANCED), system(NOISY), "latex")
    body = text[text.index(r"\begin{tabular}{lrrrrr}"):].splitlines()
    assert body[1] == r"\toprule" and body[3] == r"\midrule" and body[-2:] == [r"\bottomrule", r"\end{tabular}"]
    rows = body[4:-2]
    assert len(rows) == len(METRICS) and all(row.count("&") == 5 and row.endswith(r"\\") for row in rows)
    assert r"$\pm$" in rows[0] and "95\\%" in body[2]
    assert all(line.startswith("% ") for line in text.splitlines()[:text.splitlines().index(body[0])])


def test_json_holds_every_number_at_full_precision_and_nan_as_null():
    noisy = system(NOISY)
    noisy[0] = file_score(noisy[0].file, math.nan, error="PESQ failed")
    data = json.loads(format_table(system(ENHANCED), noisy, "json"))
    pesq = data["metrics"]["pesq"]
    change = paired_difference([math.nan, *NOISY[1:]], ENHANCED)
    assert pesq["enhanced"] == pytest.approx(np.mean(ENHANCED), rel=1e-12)
    assert pesq["improvement"]["files"] == 5 and pesq["improvement"]["mean"] == pytest.approx(change.mean)
    assert pesq["improvement"]["ci_low"] == pytest.approx(change.ci_low)
    assert data["files"] == 6 and data["noisy_baseline"] is True and data["settings"]["sample_rate"] == 16000
    no_pairs = json.loads(format_table(system([math.nan]), system([1.0]), "json"))
    assert no_pairs["metrics"]["pesq"]["enhanced"] is None


# ------------------------------------------------------------------ the CSV and its settings
def test_the_csv_round_trips_with_its_noisy_columns_and_settings(tmp_path):
    path = tmp_path / "scores.csv"
    write_csv(system(ENHANCED), path, noisy=system(NOISY), source={"command": "score", "scored": "score of x"})
    with path.open(newline="") as handle:
        header = next(csv.reader(handle))
    assert header[:10] == [*OLD_COLUMNS[:7], "si_sdr", "duration_s", "error"]
    assert header[10:] == [f"noisy_{name}" for name in METRICS] + ["noisy_error"]
    read = read_scores(path)
    assert read.scores == system(ENHANCED) and read.noisy == system(NOISY) and read.missing == ()
    assert read.settings is not None and read.settings["sample_rate"] == 16000 and read.unknown == ""
    assert read.source["scored"] == "score of x" and read.versions["pesq"] != "unknown"


def write_old_csv(path: Path, scores: list[FileScore]) -> None:
    """A CSV as bsrnn wrote it before SI-SDR and the settings file."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(OLD_COLUMNS)
        for score in scores:
            writer.writerow([score.file, *(f"{getattr(score, name):.6f}" for name in OLD_COLUMNS[1:8]), ""])


def test_an_old_csv_is_read_with_unknown_settings_and_si_sdr_missing(tmp_path, caplog):
    old, new = tmp_path / "old.csv", tmp_path / "new.csv"
    write_old_csv(old, system(ENHANCED))
    write_csv(system(BETTER), new)
    read = read_scores(old)
    assert read.missing == ("si_sdr",) and math.isnan(read.scores[0].si_sdr) and read.settings is None
    assert "no old.csv.settings.json beside it" in read.unknown
    with caplog.at_level(logging.WARNING):
        assert main(["compare", str(old), str(new)]) == 0
    assert "old.csv: scoring settings unknown" in caplog.text
    comparison = compare(read, read_scores(new))
    si_sdr = next(row for row in comparison.metrics if row.metric == "si_sdr")
    assert si_sdr.difference is None and si_sdr.missing_in == "A"
    assert "not in A" in format_comparison(comparison)


def test_a_settings_file_that_does_not_match_its_csv_is_ignored(tmp_path):
    path = tmp_path / "scores.csv"
    write_csv(system(ENHANCED), path)
    path.write_text(path.read_text().replace("2.000000", "2.100000", 1))
    read = read_scores(path)
    assert read.settings is None and "SHA-256 differs" in read.unknown


def test_compare_refuses_two_csvs_scored_on_different_files(tmp_path, capsys):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    write_csv(system(ENHANCED), a)
    write_csv(system(BETTER)[:4] + system([2.0], prefix="p257_"), b)
    with pytest.raises(UserError, match=r"different files: 2 only in .*a\.csv \(p232_004\.wav, p232_005\.wav\); "
                                        r"1 only in .*b\.csv \(p257_000\.wav\)"):
        compare(read_scores(a), read_scores(b))
    assert main(["compare", str(a), str(b)]) == 2
    assert "scored on different files" in capsys.readouterr().err


def test_compare_refuses_two_csvs_scored_with_different_settings(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    write_csv(system(ENHANCED), a)
    write_csv(system(BETTER), b)
    record = json.loads(settings_path(b).read_text())
    record["settings"]["stoi"] = "extended"
    settings_path(b).write_text(json.dumps(record))
    with pytest.raises(UserError, match=r"different settings: stoi: 'classic, pystoi extended=False' in A, "
                                        r"'extended' in B"):
        compare(read_scores(a), read_scores(b))


def test_compare_gives_paired_statistics_and_the_files_where_b_loses_most(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    baseline = [2.0, 2.5, 3.0, 1.5, 2.2, 2.8, 3.1, 1.9]
    changed = [1.0, 2.4, 3.5, 1.2, 2.0, 2.75, 3.1, 1.88]  # 6 losses (5 shown), one tie, one win
    write_csv(system(baseline), a)
    write_csv(system(changed), b)
    comparison = compare(read_scores(a), read_scores(b))
    pesq = comparison.metrics[0]
    assert pesq.difference == paired_difference(baseline, changed)
    assert (pesq.mean_a, pesq.mean_b) == pytest.approx((np.mean(baseline), np.mean(changed)))
    assert [loss.file for loss in comparison.worst] == [
        "p232_000.wav", "p232_003.wav", "p232_004.wav", "p232_001.wav", "p232_005.wav"]
    assert [loss.difference for loss in comparison.worst] == pytest.approx([-1.0, -0.3, -0.2, -0.1, -0.05])
    assert comparison.warnings == []
    data = json.loads(format_comparison(comparison, "json"))
    assert data["metrics"]["pesq"]["difference"]["better"] == 1 and data["metrics"]["pesq"]["difference"]["ties"] == 1
    assert [row["file"] for row in data["worst_by_pesq"]][:2] == ["p232_000.wav", "p232_003.wav"]
    markdown = format_comparison(comparison, "markdown")
    assert "| p232\\_000.wav" not in markdown and "| p232_000.wav | 2.000 | 1.000 | -1.000 |" in markdown
    latex = format_comparison(comparison, "latex")
    assert latex.count(r"\begin{tabular}") == 2 and r"p232\_000.wav & 2.000 & 1.000 & -1.000 \\" in latex


# --------------------------------------------------------------------- through the command
def write_folders(root: Path) -> dict[str, Path]:
    """Three clean files, their noisy inputs, and two systems' outputs (B removes more noise)."""
    folders = {name: root / name for name in ("clean", "noisy", "a", "b")}
    for folder in folders.values():
        folder.mkdir()
    rng = np.random.default_rng(11)
    for index in range(3):
        clean = speech_like(index, 1.2)
        noise = rng.standard_normal(len(clean))
        for name, level in (("clean", 0.0), ("noisy", 0.1), ("a", 0.03), ("b", 0.01)):
            soundfile.write(folders[name] / f"u{index}.wav", clean + level * noise, SAMPLE_RATE)
    return folders


def test_score_with_noisy_and_compare_through_python_m_bsrnn(tmp_path):
    folders = write_folders(tmp_path)
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    scored = subprocess.run(
        [sys.executable, "-m", "bsrnn", "score", str(folders["clean"]), str(folders["a"]), "--noisy",
         str(folders["noisy"]), "--csv", str(a), "--workers", "1", "--format", "json"],
        capture_output=True, text=True, timeout=120)
    assert scored.returncode == 0, scored.stderr
    table = json.loads(scored.stdout)  # stdout is the JSON alone
    assert table["metrics"]["pesq"]["improvement"]["better"] == 3 and table["files"] == 3
    assert table["metrics"]["si_sdr"]["noisy"] < table["metrics"]["si_sdr"]["enhanced"]
    assert read_scores(a).noisy is not None
    assert main(["score", str(folders["clean"]), str(folders["b"]), "--csv", str(b), "--workers", "1"]) == 0
    compared = subprocess.run([sys.executable, "-m", "bsrnn", "compare", str(a), str(b)],
                              capture_output=True, text=True, timeout=60)
    assert compared.returncode == 0, compared.stderr
    lines = compared.stdout.splitlines()
    assert lines[0].split()[:3] == ["metric", "A", "B"] and lines[1].split()[0] == "pesq"
    assert lines[1].split()[6:8] == ["3", "0"]  # B better on all 3 files, worse on none
    assert "(B's PESQ is below A's on no file)" in compared.stdout

    (folders["b"] / "u2.wav").unlink()
    main(["score", str(folders["clean"]), str(folders["b"]), "--csv", str(b), "--workers", "1", "--overwrite"])
    refused = subprocess.run([sys.executable, "-m", "bsrnn", "compare", str(a), str(b)],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "1 only in" in refused.stderr and "u2.wav" in refused.stderr


def test_score_refuses_a_noisy_folder_that_lacks_a_scored_file(tmp_path):
    folders = write_folders(tmp_path)
    (folders["noisy"] / "u1.wav").unlink()
    parser = argparse.ArgumentParser()
    score.add_arguments(parser)
    args = parser.parse_args([str(folders["clean"]), str(folders["a"]), "--noisy", str(folders["noisy"])])
    with pytest.raises(UserError, match=r"--noisy .*expected the noisy input of every file scored, found 1 of 3 "
                                        r"missing: u1\.wav"):
        score.run(args)
