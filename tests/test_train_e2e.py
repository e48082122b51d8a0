"""The users' scenarios through the real CLI: exact resume, crashes, preemption, train
more, fine-tune, already done, architecture mismatch, superseded last, requeue, NaN guard."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from e2e import (
    STEPS_PER_EPOCH,
    TINY,
    assert_same_training_state,
    bsrnn,
    checkpoint,
    env,
    events,
    losses_by_step,
    preempted_run,
    start,
    wait_for_step,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two epochs, uninterrupted: what every interrupted run must reproduce exactly."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    result = bsrnn("train", *TINY, "--epochs", "2", "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "VALID - Generator loss:" in result.stderr + result.stdout
    return run_dir


def _assert_matches_reference(run_dir: Path, reference: Path) -> None:
    assert_same_training_state(checkpoint(run_dir), checkpoint(reference))
    assert_same_training_state(checkpoint(run_dir, "checkpoint_best.pt"), checkpoint(reference, "checkpoint_best.pt"))
    assert losses_by_step(run_dir) == losses_by_step(reference)


@pytest.mark.parametrize("stop_after", [STEPS_PER_EPOCH, STEPS_PER_EPOCH + 2], ids=["epoch_boundary", "mid_epoch"])
def test_a_run_stopped_by_max_steps_and_resumed_is_bit_identical(tmp_path: Path, reference_run: Path, stop_after: int) -> None:
    run_dir = tmp_path / "run"
    first = bsrnn("train", *TINY, "--epochs", "2", "--run-dir", str(run_dir), "--max-steps", str(stop_after))
    assert first.returncode == 0, first.stderr
    saved = checkpoint(run_dir)
    assert saved["global_step"] == stop_after
    assert saved["step_in_epoch"] == stop_after % STEPS_PER_EPOCH
    if stop_after == STEPS_PER_EPOCH:  # an epoch's last step: validated and saved as an epoch end
        assert saved["epoch"] == 0 and [e["epoch"] for e in events(run_dir, "epoch")] == [0]
    second = bsrnn("train", *TINY, "--epochs", "2", "--run-dir", str(run_dir), "--resume")
    assert second.returncode == 0, second.stderr
    assert "RESUME SUMMARY" in second.stderr
    _assert_matches_reference(run_dir, reference_run)


def test_a_mid_epoch_resume_with_another_batch_size_continues_after_the_items_already_trained(
        tmp_path: Path) -> None:
    """Stopped after 3 batches of 8 (24 items), resumed with batches of 4: the epoch goes on at
    batch 6 of 12, so it ends after 3 + 6 steps (a resume counting 3 batches of 4 would train 12
    items twice; from 4 to 8 it would skip items)."""
    run_dir = tmp_path / "run"
    assert bsrnn("train", *TINY, "--epochs", "1", "--run-dir", str(run_dir), "--max-steps", "3").returncode == 0
    assert checkpoint(run_dir)["step_in_epoch"] == 3
    resumed = bsrnn("train", *TINY, "--epochs", "1", "--run-dir", str(run_dir), "--resume", "--batch-size", "4")
    assert resumed.returncode == 0, resumed.stderr
    assert ("resuming in the middle of epoch 0: batch size 8 x 1 process(es) -> 4 x 1: the 24 items already "
            "trained in this epoch are the first 6 batch(es) of the new size") in resumed.stderr
    assert "Resuming from: epoch 0, step 6 of that epoch" in resumed.stderr  # the summary says the same
    final = checkpoint(run_dir)
    assert (final["epoch"], final["global_step"]) == (0, 3 + (48 // 4 - 6))
    assert final["progress"]["epoch_geometry"]["batch_size"] == 4


def test_sigkill_after_a_step_save_then_resume_is_bit_identical(tmp_path: Path, reference_run: Path) -> None:
    run_dir = tmp_path / "run"
    process = start("train", *TINY, "--epochs", "2", "--run-dir", str(run_dir), "--save-every-steps", "1")
    wait_for_step(run_dir, STEPS_PER_EPOCH + 1, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (run_dir / "checkpoint_last.pt").exists()
    # Resumed with data-loading worker processes: crops are a pure function of (seed, epoch,
    # index), so the worker count cannot change the result either.
    resumed = bsrnn("train", *TINY, "--epochs", "2", "--run-dir", str(run_dir), "--resume", "--workers", "2")
    assert resumed.returncode == 0, resumed.stderr
    _assert_matches_reference(run_dir, reference_run)


def test_sigterm_saves_the_mid_epoch_position_and_exits_143(tmp_path: Path, reference_run: Path) -> None:
    run_dir = tmp_path / "run"
    output = preempted_run(run_dir, 2, *TINY, "--epochs", "2")
    assert "Preempted by SIGTERM: saved checkpoint_last.pt" in output
    saved = checkpoint(run_dir)
    assert 0 < saved["step_in_epoch"] < STEPS_PER_EPOCH and saved["epoch"] == -1
    resumed = bsrnn("train", *TINY, "--epochs", "2", "--run-dir", str(run_dir), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    _assert_matches_reference(run_dir, reference_run)


def test_train_more_continues_from_two_to_three_epochs(tmp_path: Path, reference_run: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(reference_run, run_dir)
    result = bsrnn("train", "--run-dir", str(run_dir), "--resume", "--epochs", "3")
    assert result.returncode == 0, result.stderr
    assert "Target epochs: 3" in result.stderr and "Remaining epochs: 1" in result.stderr
    saved = checkpoint(run_dir)
    assert saved["epoch"] == 2 and saved["global_step"] == 3 * STEPS_PER_EPOCH
    assert saved["config"]["epochs"] == 3 and saved["config"]["num_channel"] == 4


def test_fine_tune_from_best_with_a_lower_lr_uses_it_in_both_optimizers(tmp_path: Path, reference_run: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(reference_run, run_dir)
    result = bsrnn("train", "--run-dir", str(run_dir), "--resume", "--load", "best", "--epochs", "3",
                   "--init-lr", "1e-4", "--max-steps", "1")
    assert result.returncode == 0, result.stderr
    assert "Current learning rate (generator): 0.0001" in result.stderr
    assert "Current learning rate (discriminator): 0.0001" in result.stderr
    saved = checkpoint(run_dir)
    for key in ("optimizer_state_dict", "optimizer_disc_state_dict"):
        assert [group["lr"] for group in saved[key]["param_groups"]] == [1e-4]
    for key in ("scheduler_G_state_dict", "scheduler_D_state_dict"):
        assert saved[key]["base_lrs"] == [1e-4]


def test_resume_when_the_target_is_already_reached_says_so_and_exits_0(tmp_path: Path, reference_run: Path) -> None:
    before = checkpoint(reference_run)
    result = bsrnn("train", "--run-dir", str(reference_run), "--resume", "--epochs", "2")
    assert result.returncode == 0
    assert "Resume epoch >= target epochs" in result.stderr and "--epochs" in result.stderr
    assert_same_training_state(checkpoint(reference_run), before)


def test_an_explicit_architecture_that_differs_from_the_checkpoint_exits_2_naming_the_fields(
    tmp_path: Path, reference_run: Path
) -> None:
    result = bsrnn("train", "--run-dir", str(reference_run), "--resume", "--epochs", "3",
                   "--num-channel", "8", "--num-layer", "2")
    assert result.returncode == 2
    assert "num_channel: checkpoint 4, config 8" in result.stderr
    assert "num_layer: checkpoint 1, config 2" in result.stderr
    assert "Traceback" not in result.stderr


def test_resuming_from_best_keeps_the_newer_last_as_superseded(tmp_path: Path, reference_run: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(reference_run, run_dir)  # TINY monitors val_loss: its best is epoch 0, its last epoch 1
    newer_last = (run_dir / "checkpoint_last.pt").read_bytes()
    if newer_last == (run_dir / "checkpoint_best.pt").read_bytes():
        pytest.skip("in this seed the last epoch was also the best; nothing to supersede")
    result = bsrnn("train", "--run-dir", str(run_dir), "--resume", "--load", "best", "--epochs", "3", "--max-steps", "1")
    assert result.returncode == 0, result.stderr
    superseded = run_dir / f"checkpoint_last.superseded-step{2 * STEPS_PER_EPOCH}.pt"
    assert superseded.read_bytes() == newer_last
    assert superseded.name in result.stderr
    again = bsrnn("train", "--run-dir", str(run_dir), "--resume", "--load", "best", "--epochs", "3", "--max-steps", "1")
    assert again.returncode == 0, again.stderr
    assert superseded.read_bytes() == newer_last  # the furthest state survives a second resume from best
    assert len(list(run_dir.glob("checkpoint_last.superseded*.pt"))) == 2


def test_resume_auto_on_an_empty_directory_starts_fresh_and_again_resumes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    first = bsrnn("train", *TINY, "--epochs", "1", "--run-dir", str(run_dir), "--resume", "auto", "--max-steps", "2")
    assert first.returncode == 0, first.stderr
    assert "starting a fresh run" in first.stderr
    second = bsrnn("train", *TINY, "--epochs", "1", "--run-dir", str(run_dir), "--resume", "auto", "--max-steps", "2")
    assert second.returncode == 0, second.stderr
    assert "RESUME SUMMARY" in second.stderr
    assert checkpoint(run_dir)["global_step"] == 4


def test_a_fresh_run_refuses_a_directory_with_checkpoints(reference_run: Path) -> None:
    result = bsrnn("train", *TINY, "--epochs", "2", "--run-dir", str(reference_run))
    assert result.returncode == 2 and "already holds checkpoints" in result.stderr


def test_nonfinite_losses_are_skipped_counted_and_stop_training_after_the_limit(tmp_path: Path) -> None:
    injector = Path(__file__).resolve().parents[1] / "tools" / "nonfinite_bsrnn.py"
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, str(injector), "1,3,4,5", "train", *TINY, "--max-nonfinite-steps", "3", "--epochs", "1",
         "--run-dir", str(run_dir), "--save-every-steps", "1"],
        capture_output=True, text=True, timeout=300, env=env(), check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "3 consecutive steps had a NaN/inf loss" in result.stderr and "Traceback" not in result.stderr
    saved = checkpoint(run_dir)  # the last save before the limit: after 0-based steps 0..4
    assert saved["global_step"] == 5 and saved["progress"]["nonfinite_skipped"] == 3
    assert not (run_dir / "checkpoint_best.pt").exists()
    for tensor in saved["model_state_dict"].values():
        assert torch.isfinite(tensor).all()


def test_training_without_data_is_a_usage_error_naming_both_options(tmp_path: Path) -> None:
    result = bsrnn("train", "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2
    assert "--data-dir" in result.stderr and "--demo" in result.stderr


def test_resume_dir_alone_continues_a_moved_run_in_that_directory(tmp_path: Path, reference_run: Path) -> None:
    moved = tmp_path / "moved"
    shutil.copytree(reference_run, moved)
    result = bsrnn("train", "--resume", str(moved), "--epochs", "3", "--max-steps", "1")
    assert result.returncode == 0, result.stderr
    assert checkpoint(moved)["global_step"] == 2 * STEPS_PER_EPOCH + 1
    assert checkpoint(reference_run)["global_step"] == 2 * STEPS_PER_EPOCH  # the original is untouched


def test_until_step_is_a_total_a_requeue_loop_can_repeat(tmp_path: Path) -> None:
    """The same command, run again and again by a requeue loop, stops at the same global step;
    --max-steps, which counts per invocation, would go further on every restart."""
    run = tmp_path / "run"
    command = ["train", *TINY, "--epochs", "3", "--run-dir", str(run), "--resume", "auto", "--until-step", "4"]
    for _ in range(2):
        result = bsrnn(*command)
        assert result.returncode == 0, result.stderr
        assert checkpoint(run)["global_step"] == 4
    assert "Nothing to train" in result.stderr
    assert checkpoint(run)["config"]["until_step"] == 4
    assert events(run, "stopped")[0]["reason"] == "until_step"
    more = bsrnn("train", "--run-dir", str(run), "--resume", "auto", "--until-step", "8")
    assert more.returncode == 0, more.stderr
    saved = checkpoint(run)
    assert saved["global_step"] == 8 and saved["config"]["until_step"] == 8
