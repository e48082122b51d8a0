"""evaluate, enhance, plot, ckpt migrate and inspect through the real CLI, on real runs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from e2e import TINY, bsrnn, checkpoint

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    result = bsrnn("train", *TINY, "--epochs", "1", "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr
    return run_dir


def test_evaluate_prints_the_metric_table_and_writes_one_csv_row_per_utterance(trained_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval.csv"
    result = bsrnn("evaluate", str(trained_run), "--demo", "--csv", str(out), "--workers", "2")
    assert result.returncode == 0, result.stderr
    for metric in ("pesq", "csig", "cbak", "covl", "ssnr", "stoi", "si_sdr"):
        assert metric in result.stdout
    assert "noisy  enhanced  improvement (95% CI)  improved" in result.stdout  # the baseline is scored too
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 8
    assert {"file", "pesq", "csig", "cbak", "covl", "ssnr", "stoi", "si_sdr", "noisy_pesq", "noisy_si_sdr"} <= set(rows[0])
    assert all(1.0 <= float(row["pesq"]) <= 4.7 and 1.0 <= float(row["noisy_pesq"]) <= 4.7 for row in rows)
    assert out.with_name("eval.csv.settings.json").is_file()


def test_evaluate_as_json_prints_nothing_else_on_stdout(trained_run: Path) -> None:
    result = bsrnn("evaluate", str(trained_run), "--demo", "--workers", "1", "--format", "json", "--no-baseline")
    assert result.returncode == 0, result.stderr
    table = json.loads(result.stdout)
    assert table["files"] == 8 and table["noisy_baseline"] is False and "improvement" not in table["metrics"]["pesq"]
    assert "Using " in result.stderr and "Evaluating on 8 test utterances (no noisy baseline" in result.stderr


def test_enhance_handles_a_long_mono_file_and_a_44k_stereo_file(trained_run: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    long_audio = (0.1 * rng.standard_normal(16000 * 65)).astype(np.float32)  # three 30 s chunks
    soundfile.write(inputs / "long.wav", long_audio, 16000)
    stereo = (0.1 * rng.standard_normal((44100 * 2, 2))).astype(np.float32)
    soundfile.write(inputs / "stereo.wav", stereo, 44100)
    out = tmp_path / "out"
    result = bsrnn("enhance", str(trained_run), str(inputs), "--out", str(out))
    assert result.returncode == 0, result.stderr
    long_info, stereo_info = soundfile.info(out / "long.wav"), soundfile.info(out / "stereo.wav")
    assert (long_info.samplerate, long_info.channels, long_info.frames) == (16000, 1, 16000 * 65)
    assert (stereo_info.samplerate, stereo_info.channels, stereo_info.frames) == (44100, 2, 44100 * 2)
    enhanced, _ = soundfile.read(out / "stereo.wav")
    assert np.isfinite(enhanced).all() and not np.allclose(enhanced[:, 0], enhanced[:, 1])


def test_enhance_refuses_to_write_over_its_inputs(trained_run: Path, tmp_path: Path) -> None:
    soundfile.write(tmp_path / "a.wav", np.zeros(16000, dtype=np.float32), 16000)
    result = bsrnn("enhance", str(trained_run), str(tmp_path), "--out", str(tmp_path))
    assert result.returncode == 2 and "overwrite the inputs" in result.stderr


def test_plot_writes_a_png_of_the_curves(trained_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "curves.png"
    result = bsrnn("plot", str(trained_run), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_inspect_shows_the_trainer_keys(trained_run: Path) -> None:
    result = bsrnn("ckpt", "inspect", str(trained_run))
    assert result.returncode == 0, result.stderr
    for expected in ("epoch: 0", "optimizer_disc_state_dict", "scheduler_G_state_dict", "learning rate", "rng"):
        assert expected in result.stdout


def _legacy_run(folder: Path) -> dict:
    """A run directory as the old per-epoch scripts left it (bare ``torch.save``d state dicts with
    the reference's parameter names, ``gene_epoch_{epoch}_{loss}`` / ``disc_epoch_{epoch}``), made
    from the reference network weights shipped in tests/fixtures, so every clone runs this test.
    Epoch 2 holds the reference weights; returns their fixture (its ``output_spec`` is what the
    reference network computes from ``input_spec``)."""
    reference = torch.load(Path(__file__).parent / "fixtures" / "reference_small.pt", weights_only=True)
    generator, discriminator = reference["generator_16_2"], reference["discriminator_16"]
    folder.mkdir()
    for epoch, loss in ((0, "0.612"), (1, "0.534"), (2, "0.550")):
        scale = 1.0 if epoch == 2 else 0.5  # earlier epochs: other weights of the same shapes
        torch.save({k: v * scale for k, v in generator["state_dict"].items()}, folder / f"gene_epoch_{epoch}_{loss}")
        torch.save(discriminator["state_dict"], folder / f"disc_epoch_{epoch}")
    return {"input_spec": reference["input_spec"], "output_spec": generator["output_spec"]}


def test_migrate_turns_the_legacy_files_into_a_checkpoint_that_reproduces_the_old_generator(tmp_path: Path) -> None:
    legacy = tmp_path / "legacy_run"
    expected = _legacy_run(legacy)
    before = {path.name: path.stat().st_mtime_ns for path in legacy.iterdir()}
    run_dir = tmp_path / "migrated"
    result = bsrnn("ckpt", "migrate", str(legacy), "--out", str(run_dir))
    assert result.returncode == 0, result.stderr
    assert {path.name: path.stat().st_mtime_ns for path in legacy.iterdir()} == before
    saved = checkpoint(run_dir)
    assert saved["epoch"] == 2 and saved["config"]["num_channel"] == 16 and saved["config"]["num_layer"] == 2

    from bsrnn.models import BSRNN

    model = BSRNN(num_channel=16, num_layer=2)
    model.load_state_dict(saved["model_state_dict"])
    model.eval()
    with torch.no_grad():
        output = torch.view_as_real(model(torch.view_as_complex(expected["input_spec"].contiguous())))
    # The float32 noise floor of this network (see test_models.RELATIVE_TOLERANCE): 1e-6 of the peak.
    assert (output - expected["output_spec"]).abs().max() <= 1e-6 * expected["output_spec"].abs().max()

    inspect = bsrnn("ckpt", "inspect", str(run_dir))
    assert "no optimizer or scheduler state" in inspect.stdout
    resumed = bsrnn("train", "--resume", str(run_dir), "--run-dir", str(run_dir), "--demo", "--epochs", "4",
                    "--batch-size", "8", "--cut-len", "8000", "--max-steps", "1")
    assert resumed.returncode == 0, resumed.stderr
    assert "has no optimizer_state_dict" in resumed.stderr
    assert checkpoint(run_dir)["config"]["num_channel"] == 16


def test_migrate_of_a_folder_without_legacy_files_exits_2(tmp_path: Path) -> None:
    result = bsrnn("ckpt", "migrate", str(tmp_path), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "gene_epoch" in result.stderr
