"""Everyday deviations from the README's scenarios, through the real CLI: a mistyped resume, a
second trainer on the same run directory, train more after the GAN switch, a script's logging."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from e2e import STEPS_PER_EPOCH, TINY, bsrnn, checkpoint, env, events, start

pytestmark = pytest.mark.slow


def test_resume_best_on_a_mistyped_run_directory_is_checkpoint_not_found_and_creates_nothing(tmp_path: Path) -> None:
    typo = tmp_path / "ab55"
    result = bsrnn("train", *TINY, "--run-dir", str(typo), "--resume", "--load", "best")
    assert result.returncode == 2, result.stderr
    assert "Checkpoint not found" in result.stderr and str(typo / "checkpoint_best.pt") in result.stderr
    assert "Traceback" not in result.stderr and not typo.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    result = bsrnn("train", *TINY, "--resume", str(empty))
    assert result.returncode == 2 and "Checkpoint not found" in result.stderr
    assert str(empty / "checkpoint_last.pt") in result.stderr and not (empty / "metrics.jsonl").exists()


def _wait_for_lock(run_dir: Path, pid: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        lock = run_dir / ".lock"
        if lock.exists() and lock.read_text().strip() == str(pid):
            return
        assert process.poll() is None, process.stdout.read()
        time.sleep(0.01)
    raise AssertionError("the first trainer never took the lock")


@pytest.mark.parametrize("resume", [True, False], ids=["both_resume", "both_fresh"])
def test_a_second_trainer_started_before_the_first_saves_is_refused_at_once(tmp_path: Path, resume: bool) -> None:
    run_dir = tmp_path / "run"
    base_steps = 0
    extra = ["--resume"] if resume else []
    if resume:
        assert bsrnn("train", *TINY, "--epochs", "2", "--run-dir", str(run_dir), "--max-steps", "1").returncode == 0
        base_steps = 1
    command = ["train", *TINY, "--epochs", "2", "--run-dir", str(run_dir), "--max-steps", "3",
               "--save-every-steps", "1", *extra]
    first = start(*command)
    try:
        _wait_for_lock(run_dir, first.pid, first)  # A holds the lock; it has not saved anything yet
        started = time.monotonic()
        second = bsrnn(*command)
        assert time.monotonic() - started < 60  # refused at once, not after waiting for A
        assert second.returncode == 2, second.stderr
        assert f"PID {first.pid}" in second.stderr and "Traceback" not in second.stderr
        assert first.wait(timeout=240) == 0
    finally:
        first.kill()
        first.wait()
    assert checkpoint(run_dir)["global_step"] == base_steps + 3  # A's progress, never replaced by B's


def test_train_more_keeps_the_gan_start_of_the_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    first = bsrnn("train", *TINY, "--epochs", "3", "--run-dir", str(run_dir), "--max-steps", str(STEPS_PER_EPOCH))
    assert first.returncode == 0, first.stderr
    assert "GAN term from epoch 2" in first.stderr
    assert checkpoint(run_dir)["config"]["gan_start_epoch"] == 2
    more = bsrnn("train", *TINY, "--epochs", "8", "--run-dir", str(run_dir), "--resume", "--max-steps", "1")
    assert more.returncode == 0, more.stderr
    assert "GAN term from epoch: 2" in more.stderr and "epochs: 3 -> 8" in more.stderr
    assert checkpoint(run_dir)["config"]["gan_start_epoch"] == 2
    moved = bsrnn("train", *TINY, "--epochs", "8", "--run-dir", str(run_dir), "--resume", "--max-steps", "1",
                  "--gan-start-epoch", "4")
    assert moved.returncode == 0 and "gan_start_epoch: 2 -> 4" in moved.stderr
    assert [e["event"] for e in events(run_dir, "resume")] == ["resume", "resume"]
    assert events(run_dir, "start")[0]["gan_start_epoch"] == 2


def test_the_python_api_logs_like_the_command_and_train_log_holds_it(tmp_path: Path) -> None:
    script = tmp_path / "train_script.py"
    run_dir = tmp_path / "run"
    script.write_text(textwrap.dedent(f"""
        from bsrnn import Config, train

        if __name__ == "__main__":
            train(Config(demo=True, num_channel=4, num_layer=1, batch_size=8, cut_len=8000, epochs=1,
                         pesq_workers=1, log_interval=1000, log_seconds=0.001, seed=3,
                         save_model_dir={str(run_dir)!r}))
    """))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env(), timeout=300)
    assert result.returncode == 0, result.stderr
    for line in ("GAN term from epoch", "VALID - Generator loss", "Training complete", "steps/s, ETA"):
        assert line in result.stderr
        assert line in (run_dir / "train.log").read_text()
    # Logged by time although log_interval was never reached; the records carry the rate.
    steps = events(run_dir, "step")
    assert len(steps) == STEPS_PER_EPOCH and all(step["steps_per_s"] > 0 for step in steps)
    assert result.stderr.index("Saved checkpoint_last.pt (epoch 0") < result.stderr.index("Training complete")


def test_training_validates_on_held_out_training_pairs_and_never_reads_the_test_split(tmp_path: Path) -> None:
    from bsrnn.data import demo_corpus, write_corpus

    data = write_corpus(demo_corpus(seed=0, num_train=20, num_test=2, num_valid=0), tmp_path / "data")
    broken = next((data / "test" / "noisy").iterdir())
    broken.write_bytes(b"not audio at all")  # only a command that reads the test split can notice
    run_dir = tmp_path / "run"
    tiny = [arg for arg in TINY if arg != "--demo"]
    result = bsrnn("train", "--data-dir", str(data), *tiny, "--valid-fraction", "0.2", "--epochs", "1",
                   "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr
    assert "of the training split held out (by a hash of each name) (--valid-fraction)" in result.stderr
    assert "best val_loss so far: this epoch" in result.stderr
    saved = checkpoint(run_dir)
    held_out = saved["validation"]["items"]
    assert saved["validation"]["rule"] == {"kind": "fraction", "fraction": 0.2, "source": "--valid-fraction"}
    assert 1 <= held_out < 20 and saved["global_step"] == (20 - held_out) // 8
    # status.json, for `cat` on a login node: where the run stands, its rate and ETA, its best.
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "completed" and status["global_step"] == saved["global_step"]
    assert status["eta"].count(":") == 2
    assert status["best"]["epoch"] == 0 and status["best"]["metric"]["name"] == "val_loss"
    # A resume that would validate on other pairs is refused unless told.
    result = bsrnn("train", "--data-dir", str(data), *tiny, "--valid-fraction", "0.5", "--epochs", "2",
                   "--run-dir", str(run_dir), "--resume")
    assert result.returncode == 2 and "validation set changed" in result.stderr, result.stderr
    # evaluate is the command that reads the test split, and it names the broken file.
    result = bsrnn("evaluate", str(run_dir), "--data-dir", str(data))
    assert result.returncode == 2 and broken.name in result.stderr, result.stderr
