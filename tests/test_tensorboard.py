"""``bsrnn train --tensorboard``: what lands in RUN_DIR/tensorboard/, at which steps; nothing
without the flag (and the same training); a resume appends; a missing package fails at once."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bsrnn.errors import UserError
from bsrnn.models import BSRNN, Discriminator
from bsrnn.training.steps import Networks
from bsrnn.training.tensorboard import (
    TENSORBOARD_DIR,
    Example,
    TensorBoardLog,
    TensorBoardMissingError,
    require_tensorboard,
    spectrogram_image,
)
from e2e import TINY_DEFAULT_MONITOR, assert_same_training_state, bsrnn, checkpoint, events, losses_by_step

# Two epochs of 6 steps, stopped after 8: an epoch's validation (step 6), then two steps of the next.
RUN = [*TINY_DEFAULT_MONITOR, "--epochs", "2", "--max-steps", "8"]
EXAMPLES = 3


def read_events(run_dir: Path) -> Any:
    """Everything TensorBoard shows for the run (all event files, purges applied)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir / TENSORBOARD_DIR),
                                   size_guidance={"scalars": 0, "audio": 0, "images": 0})
    accumulator.Reload()
    return accumulator


def steps(records: list[Any]) -> list[int]:
    return [record.step for record in records]


def tags_ending(accumulator: Any, kind: str, suffix: str) -> list[str]:
    return sorted(tag for tag in accumulator.Tags()[kind] if tag.endswith(suffix))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same tiny run with and without --tensorboard."""
    pytest.importorskip("tensorboard", reason="install the test extra: pip install -e '.[test]'")
    root = tmp_path_factory.mktemp("tensorboard")
    with_flag, without = root / "with", root / "without"
    for run_dir, extra in ((with_flag, ["--tensorboard"]), (without, [])):
        result = bsrnn("train", *RUN, "--run-dir", str(run_dir), *extra)
        assert result.returncode == 0, result.stdout + result.stderr
    return {"with": with_flag, "without": without}


@pytest.mark.slow
def test_without_the_flag_no_tensorboard_directory_and_the_same_training(runs: dict[str, Path]) -> None:
    assert not (runs["without"] / TENSORBOARD_DIR).exists()
    assert (runs["with"] / TENSORBOARD_DIR).is_dir()
    # Writing the logs (and enhancing the examples) draws no random number and changes no weight.
    for name in ("checkpoint_last.pt", "checkpoint_best.pt"):
        assert_same_training_state(checkpoint(runs["with"], name), checkpoint(runs["without"], name))


@pytest.mark.slow
def test_step_scalars_are_the_step_events_at_their_global_steps(runs: dict[str, Path]) -> None:
    logged = read_events(runs["with"])
    step_events = events(runs["with"], "step")
    assert steps(logged.Scalars("train/loss")) == [event["global_step"] for event in step_events] == list(range(1, 9))
    for key in ("loss", "disc_loss", "pesq", "loss_ri", "loss_mag"):
        assert [record.value for record in logged.Scalars(f"train/{key}")] == pytest.approx(
            [event[key] for event in step_events], rel=1e-6, nan_ok=True), key
    assert steps(logged.Scalars("train/loss_gan")) == [7, 8]  # the GAN term joins at epoch 1
    for tag in ("lr/generator", "lr/discriminator", "speed/steps_per_s", "speed/pesq_wait_share"):
        assert steps(logged.Scalars(tag)) == list(range(1, 9)), tag
    assert [record.value for record in logged.Scalars("lr/generator")] == pytest.approx([1e-3] * 8)
    assert all(0 <= record.value <= 1 for record in logged.Scalars("speed/pesq_wait_share"))


@pytest.mark.slow
def test_each_validation_writes_its_values_and_the_enhanced_examples(runs: dict[str, Path]) -> None:
    logged = read_events(runs["with"])
    (epoch,) = events(runs["with"], "epoch")
    for tag, key in (("valid/pesq", "val_pesq"), ("valid/loss", "val_loss"), ("valid/disc_loss", "val_disc_loss")):
        (record,) = logged.Scalars(tag)
        assert (record.step, record.value) == (6, pytest.approx(epoch[key], rel=1e-6)), tag
    assert steps(logged.Scalars("progress/epoch")) == [6]
    assert steps(logged.Scalars("train_epoch/loss")) == [6]
    for kind, read in (("audio", logged.Audio), ("images", logged.Images)):
        enhanced = tags_ending(logged, kind, "/enhanced")
        assert len(enhanced) == EXAMPLES, enhanced
        assert [steps(read(tag)) for tag in enhanced] == [[6]] * EXAMPLES
        for reference in ("/clean", "/noisy"):  # once, at the start
            tags = tags_ending(logged, kind, reference)
            assert [steps(read(tag)) for tag in tags] == [[0]] * EXAMPLES, reference
    audio = logged.Audio(tags_ending(logged, "audio", "/enhanced")[0])[0]
    assert (audio.sample_rate, audio.length_frames) == (16000, 8000)
    image = logged.Images(tags_ending(logged, "images", "/enhanced")[0])[0]
    assert (image.height, image.width) == (257, 8000 // 128 + 1)  # bins x frames


@pytest.mark.slow
def test_a_resume_appends_to_the_same_directory_and_continues_the_steps(runs: dict[str, Path], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(runs["with"], run_dir)
    # From best (epoch 0, global step 6): steps 7 and 8 of the first invocation are abandoned.
    result = bsrnn("train", "--run-dir", str(run_dir), "--resume", "--load", "best", "--tensorboard")
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(list((run_dir / TENSORBOARD_DIR).iterdir())) == 2  # one event file per invocation
    logged = read_events(run_dir)
    assert steps(logged.Scalars("train/loss")) == list(range(1, 13))  # 7 and 8 once: the resumed run's
    resumed = losses_by_step(run_dir)
    assert [record.value for record in logged.Scalars("train/loss")] == pytest.approx(
        [resumed[step][0] for step in range(1, 13)], rel=1e-6)
    assert steps(logged.Scalars("valid/pesq")) == [6, 12]
    for kind, read in (("audio", logged.Audio), ("images", logged.Images)):
        assert [steps(read(tag)) for tag in tags_ending(logged, kind, "/enhanced")] == [[6, 12]] * EXAMPLES
        assert [steps(read(tag)) for tag in tags_ending(logged, kind, "/clean")] == [[0]] * EXAMPLES


@pytest.mark.slow
def test_a_resume_without_the_flag_writes_nothing_more(runs: dict[str, Path], tmp_path: Path) -> None:
    """``tensorboard`` is an invocation field: never taken from the checkpoint's config."""
    run_dir = tmp_path / "run"
    shutil.copytree(runs["with"], run_dir)
    before = sorted((run_dir / TENSORBOARD_DIR).iterdir())
    result = bsrnn("train", "--run-dir", str(run_dir), "--resume", "--max-steps", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted((run_dir / TENSORBOARD_DIR).iterdir()) == before


def test_the_pesq_wait_share_is_the_wait_over_the_time_since_the_last_point(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="install the test extra: pip install -e '.[test]'")
    now = [100.0]
    board = TensorBoardLog(tmp_path, [], global_step=0, clock=lambda: now[0])
    try:
        for wait in (0.5, 0.5):  # two steps, one second each: half of it waiting
            board.waited_for_pesq(wait)
            now[0] += 1.0
        board.step(2, {"loss": 1.0}, {"generator": 1e-3}, 2.0)
        now[0] += 4.0  # one step of 4 s, no wait
        board.waited_for_pesq(0.0)
        board.step(3, {"loss": 1.0}, {"generator": 1e-3}, 2.0)
    finally:
        board.close()
    logged = read_events(tmp_path)
    assert [(record.step, record.value) for record in logged.Scalars("speed/pesq_wait_share")] == [
        (2, pytest.approx(0.5)), (3, pytest.approx(0.0))]


def test_spectrogram_images_have_low_frequencies_at_the_bottom_on_a_fixed_scale() -> None:
    db = np.full((257, 10), -200.0)
    db[0, :] = 0.0  # the lowest bin, at the top dB of the scale
    image = spectrogram_image(db, top_db=0.0)
    assert image.shape == (257, 10, 3) and image.dtype == np.uint8
    assert image[-1].mean() > image[0].mean()  # bottom row bright, top row dark
    assert (spectrogram_image(db - 20.0, top_db=0.0)[-1].mean() < image[-1].mean())  # quieter looks darker


def test_a_missing_tensorboard_package_is_named_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` now fails
    with pytest.raises(TensorBoardMissingError) as raised:
        require_tensorboard()
    message = str(raised.value)
    assert "--tensorboard" in message and "tensorboard package" in message
    # pip install 'bsrnn[tensorboard]' looks bsrnn up on the package index: from a clone it fails
    assert "pip install tensorboard" in message and "bsrnn[tensorboard]" not in message
    assert "pip install -e '.[tensorboard]'" in message


def test_train_with_tensorboard_missing_exits_2_before_creating_anything(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from bsrnn.cli.main import main

    monkeypatch.setitem(sys.modules, "tensorboard", None)
    run_dir = tmp_path / "run"
    assert main(["train", "--demo", "--tensorboard", "--run-dir", str(run_dir)]) == 2
    assert "pip install tensorboard" in capsys.readouterr().err
    assert not run_dir.exists()


def tiny_networks() -> Networks:
    torch.manual_seed(0)
    generator, discriminator = BSRNN(num_channel=4, num_layer=1), Discriminator(ndf=4)
    return Networks(generator, discriminator, torch.optim.SGD(generator.parameters(), lr=0.0),
                    torch.optim.SGD(discriminator.parameters(), lr=0.0))


def test_examples_of_different_lengths_are_each_enhanced_at_their_own_length(tmp_path: Path) -> None:
    """Whole-utterance validation (the default) gives examples of different lengths; stacking
    them crashed the trainer after the VALID line, before the epoch's save."""
    pytest.importorskip("tensorboard", reason="install the test extra: pip install -e '.[test]'")
    lengths = [8000, 12345, 9001]
    generator = torch.Generator().manual_seed(1)
    examples = [Example(f"utt{index}", torch.rand(length, generator=generator) - 0.5,
                        torch.rand(length, generator=generator) - 0.5) for index, length in enumerate(lengths)]
    nets = tiny_networks()
    nets.generator.train()
    board = TensorBoardLog(tmp_path, examples, global_step=0)
    try:
        enhanced = board.enhance(nets, torch.device("cpu"))
        board.validation(6, 0, {"val_loss": 1.0, "val_pesq": 2.0}, {"loss": 1.0}, nets, torch.device("cpu"))
    finally:
        board.close()
    assert [audio.shape[-1] for audio in enhanced] == lengths
    assert nets.generator.training  # eval mode only while enhancing
    logged = read_events(tmp_path)
    tags = tags_ending(logged, "audio", "/enhanced")
    assert [(logged.Audio(tag)[0].step, logged.Audio(tag)[0].length_frames) for tag in tags] == [
        (6, length) for length in lengths]
    assert [logged.Images(tag)[0].width for tag in tags_ending(logged, "images", "/enhanced")] == [
        length // 128 + 1 for length in lengths]


def test_train_with_tensorboard_on_whole_utterances_of_different_lengths_saves_the_epoch(tmp_path: Path) -> None:
    """The real path: ``bsrnn train --tensorboard`` with the default ``--validation-length full``
    on the demo set, whose validation utterances differ in length (2-3 s)."""
    pytest.importorskip("tensorboard", reason="install the test extra: pip install -e '.[test]'")
    options = list(TINY_DEFAULT_MONITOR)
    options[options.index("--validation-length") + 1] = "full"
    run_dir = tmp_path / "run"
    result = bsrnn("train", *options, "--epochs", "1", "--tensorboard", "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stdout + result.stderr
    assert checkpoint(run_dir)["epoch"] == 0  # the epoch is saved
    logged = read_events(run_dir)
    lengths = {logged.Audio(tag)[0].length_frames for tag in tags_ending(logged, "audio", "/enhanced")}
    assert len(lengths) > 1, "the demo's validation utterances should differ in length"
    assert lengths == {logged.Audio(tag)[0].length_frames for tag in tags_ending(logged, "audio", "/noisy")}


def test_a_symlinked_tensorboard_folder_is_refused_not_written_through(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="install the test extra: pip install -e '.[test]'")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = tmp_path / "run"
    run.mkdir()
    (run / TENSORBOARD_DIR).symlink_to(elsewhere)
    with pytest.raises(UserError, match="symbolic link"):
        TensorBoardLog(run, [], global_step=0)
    assert list(elsewhere.iterdir()) == []
