"""``bsrnn score --no-reference DIR`` (DNSMOS, optional): the message without the package, the
table and CSV with a stand-in for it, and the real models where ``bsrnn[dnsmos]`` is installed."""

from __future__ import annotations

import argparse
import csv
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile

from bsrnn.audio import SAMPLE_RATE
from bsrnn.cli import score
from bsrnn.cli.main import main
from bsrnn.errors import UserError
from bsrnn.metrics.dnsmos import CSV_COLUMNS
from signals import speech_like


def run_score(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bsrnn score")
    score.add_arguments(parser)
    return score.run(parser.parse_args(argv))


@pytest.fixture
def recordings(tmp_path: Path) -> Path:
    """Two clean-ish files, one noisy one, and a float file louder than full scale."""
    folder = tmp_path / "recordings"
    folder.mkdir()
    rng = np.random.default_rng(4)
    soundfile.write(folder / "a.wav", speech_like(0, 1.0), SAMPLE_RATE)
    soundfile.write(folder / "b.flac", speech_like(1, 1.0), SAMPLE_RATE)
    soundfile.write(folder / "c.wav", speech_like(2, 1.0) + 0.2 * rng.standard_normal(SAMPLE_RATE), SAMPLE_RATE)
    soundfile.write(folder / "loud.wav", 3 * speech_like(3, 1.0), SAMPLE_RATE, subtype="FLOAT")  # peaks at 1.5
    return folder


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A ``speechmos`` whose ``dnsmos.run`` rates by level (no models): what bsrnn does around it."""
    calls: list[int] = []

    def run(samples: np.ndarray, rate: int) -> dict[str, float]:
        assert rate == SAMPLE_RATE and samples.ndim == 1 and np.abs(samples).max() <= 1
        calls.append(len(samples))
        level = float(np.sqrt(np.mean(samples**2)))
        return {"ovrl_mos": 1 + level, "sig_mos": 2 + level, "bak_mos": 3 + level, "p808_mos": np.float32(4.0)}

    package, module = types.ModuleType("speechmos"), types.ModuleType("speechmos.dnsmos")
    module.run = run  # type: ignore[attr-defined]
    package.dnsmos = module  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "speechmos", package)
    monkeypatch.setitem(sys.modules, "speechmos.dnsmos", module)
    return calls


def test_without_speechmos_the_command_says_how_to_install_it(recordings, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "speechmos", None)  # import fails, installed or not
    with pytest.raises(UserError, match=r"needs the speechmos package .*Fix: pip install 'bsrnn\[dnsmos\]'"):
        run_score(["--no-reference", str(recordings)])
    assert main(["score", "--no-reference", str(recordings)]) == 2
    assert "pip install 'bsrnn[dnsmos]'" in capsys.readouterr().err


def test_the_table_and_csv_rate_every_file_and_name_the_one_out_of_range(recordings, stand_in, tmp_path, capsys):
    out = tmp_path / "dnsmos.csv"
    assert run_score(["--no-reference", str(recordings), "--csv", str(out), "--workers", "1"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["metric", "mean", "files"]
    assert table[4].split() == ["dnsmos_p808", "4.000", "3"] and "1 not rated" in table[5]
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == CSV_COLUMNS and [row["file"] for row in rows] == ["a.wav", "b.flac", "c.wav", "loud.wav"]
    assert float(rows[2]["dnsmos_ovrl"]) > float(rows[0]["dnsmos_ovrl"])  # the stand-in rates by level
    assert rows[3]["dnsmos_sig"] == "nan" and "within [-1, 1]" in rows[3]["error"]
    assert stand_in == [SAMPLE_RATE] * 3


def test_json_and_the_folders_with_no_reference_are_refused_together(recordings, stand_in, capsys):
    assert run_score(["--no-reference", str(recordings), "--workers", "1", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["files"] == 4 and data["not_rated"] == 1 and data["metrics"]["p808"]["mean"] == 4.0
    with pytest.raises(UserError, match="either CLEAN_DIR ENHANCED_DIR or --no-reference DIR, found both"):
        run_score([str(recordings), str(recordings), "--no-reference", str(recordings)])
    with pytest.raises(UserError, match="expected CLEAN_DIR and ENHANCED_DIR"):
        run_score([str(recordings)])


def test_the_real_models_rate_clean_speech_above_noisy_speech(tmp_path):
    pytest.importorskip("speechmos.dnsmos", reason="bsrnn[dnsmos] is not installed")
    from bsrnn.metrics.dnsmos import score_no_reference

    clean = speech_like(0, 2.0)
    noisy = clean + 0.3 * np.random.default_rng(0).standard_normal(len(clean))
    soundfile.write(tmp_path / "clean.wav", clean, SAMPLE_RATE)
    soundfile.write(tmp_path / "noisy.wav", np.clip(noisy, -1, 1), SAMPLE_RATE)
    rated = score_no_reference([("clean", tmp_path / "clean.wav"), ("noisy", tmp_path / "noisy.wav")], workers=1,
                               progress=False)
    assert all(1.0 <= value <= 5.0 for score in rated for value in (score.sig, score.bak, score.ovrl))
    assert rated[0].bak > rated[1].bak and rated[0].ovrl > rated[1].ovrl
