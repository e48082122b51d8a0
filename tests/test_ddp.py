"""Two gloo processes under torchrun: sharded training, rank-0 saves, identical resume."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from e2e import TINY_DEFAULT_MONITOR, assert_same_training_state, bsrnn, checkpoint, env, losses_by_step

pytestmark = pytest.mark.slow


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "bsrnn", "train", *TINY_DEFAULT_MONITOR, "--device", "cpu", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env(), check=False)


def test_two_process_ddp_stopped_and_resumed_matches_the_uninterrupted_ddp_run(tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    result = _torchrun("--epochs", "2", "--run-dir", str(straight))
    assert result.returncode == 0, result.stderr[-3000:]
    steps_per_epoch = 48 // 2 // 8
    assert checkpoint(straight)["global_step"] == 2 * steps_per_epoch

    resumed = tmp_path / "resumed"
    first = _torchrun("--epochs", "2", "--run-dir", str(resumed), "--max-steps", str(steps_per_epoch + 1))
    assert first.returncode == 0, first.stderr[-3000:]
    assert checkpoint(resumed)["step_in_epoch"] == 1
    second = _torchrun("--epochs", "2", "--run-dir", str(resumed), "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "RESUME SUMMARY" in second.stderr

    assert_same_training_state(checkpoint(resumed), checkpoint(straight))
    assert losses_by_step(resumed) == losses_by_step(straight)
    assert sorted(p.name for p in resumed.glob("*.pt")) == ["checkpoint_best.pt", "checkpoint_last.pt"]


def test_a_single_process_run_requeued_mid_epoch_on_two_processes_continues_after_its_items(
        tmp_path: Path) -> None:
    """3 batches of 8 on one process are the epoch's first 24 items: on two processes (16 items a
    step) the epoch goes on at batch 1, 8 items of which train again, and ends at batch 3."""
    run_dir = tmp_path / "run"
    first = bsrnn("train", *TINY_DEFAULT_MONITOR, "--epochs", "1", "--run-dir", str(run_dir), "--max-steps", "3")
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = _torchrun("--epochs", "1", "--run-dir", str(run_dir), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert ("batch size 8 x 1 process(es) -> 8 x 2: the 24 items already trained in this epoch are the first 1 "
            "batch(es) of the new size and 8 item(s) of the next, which train again") in resumed.stderr
    assert "Resuming from: epoch 0, step 1 of that epoch" in resumed.stderr
    final = checkpoint(run_dir)
    assert (final["epoch"], final["global_step"]) == (0, 3 + (48 // 2 // 8 - 1))

