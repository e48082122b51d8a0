"""Refusals found by tools/torture.py (hostile, diskfull, signals): clear, early, and clean.

A file made or edited to hurt, or a layout no save can use, is refused with a message naming
the file before any training step, with exit status 2 and no traceback; a refusal leaves
nothing held (the run directory's lock); the preemption guard covers the last save.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from bsrnn.checkpoint import CheckpointError, CheckpointManager, CheckpointWriteError, StateMismatchError
from bsrnn.cli.main import main
from bsrnn.config import Config
from bsrnn.data import demo_corpus, write_corpus
from bsrnn.training import train
from bsrnn.training.resume import check_resumable
from bsrnn.training.builders import build_networks
from bsrnn.training.trainer import Trainer

TINY = {"num_channel": 4, "num_layer": 1, "batch_size": 8, "cut_len": 8000, "pesq_workers": 0, "epochs": 2}


class _State:
    """Anything with a state dict: lets a test write a checkpoint with chosen contents."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state

    def state_dict(self) -> dict[str, Any]:
        return self.state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state = state


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    corpus = demo_corpus(seed=0, num_train=8, num_test=2, train_seconds=(0.6, 0.8), test_seconds=(0.6, 0.8))
    return write_corpus(corpus, tmp_path_factory.mktemp("data") / "corpus")


def _write_run(run_dir: Path, config: Config, **sections: dict[str, Any]) -> None:
    """A mid-epoch checkpoint holding ``sections`` (e.g. an edited model_state_dict)."""
    with CheckpointManager(run_dir) as manager:
        for name, state in sections.items():
            manager.register(name, _State(state))
        manager.save(values={"epoch": -1, "global_step": 1, "step_in_epoch": 1, "config": config.to_dict()})


def _resume_config(run_dir: Path, data_dir: Path) -> Config:
    return Config(**TINY, data_dir=str(data_dir), save_model_dir=str(run_dir), resume_from_checkpoint="auto")


def test_a_checkpoint_refused_during_resume_leaves_the_run_directory_unlocked_for_the_next_call(
    tmp_path: Path, data_dir: Path
) -> None:
    config = _resume_config(tmp_path, data_dir)
    weights = build_networks(config, torch.device("cpu")).generator.state_dict()
    name = next(iter(weights))
    weights[name] = torch.zeros(weights[name].numel() + 1)
    _write_run(tmp_path, config, model_state_dict=weights)
    for _ in range(2):  # the second call used to be refused as "in use by another bsrnn process"
        with pytest.raises(StateMismatchError, match=f"(?s)model_state_dict.*{name}"):
            train(config)


def test_adam_moments_of_the_wrong_shape_are_refused_before_the_first_step_naming_the_file(
    tmp_path: Path, data_dir: Path
) -> None:
    config = _resume_config(tmp_path, data_dir)
    nets = build_networks(config, torch.device("cpu"))
    sum(parameter.sum() for parameter in nets.generator.parameters()).backward()
    nets.optimizer_g.step()
    state = nets.optimizer_g.state_dict()
    state["state"][0]["exp_avg"] = torch.zeros(state["state"][0]["exp_avg"].numel() + 1)
    _write_run(tmp_path, config, model_state_dict=nets.generator.state_dict(), optimizer_state_dict=state)
    with pytest.raises(StateMismatchError, match="checkpoint_last.pt: cannot restore 'optimizer_state_dict'.*exp_avg"):
        train(config)
    assert not (tmp_path / "metrics.jsonl").exists() or "step" not in (tmp_path / "metrics.jsonl").read_text()


def test_a_malformed_checkpoint_is_refused_naming_each_bad_entry() -> None:
    payload = {"config": "not a table", "epoch": "seven", "progress": {"global_step": 1.5}}
    with pytest.raises(StateMismatchError) as raised:
        check_resumable("runs/x/checkpoint_last.pt", payload)
    message = str(raised.value)
    assert "runs/x/checkpoint_last.pt cannot be resumed from" in message
    assert "config is a str" in message and "epoch is 'seven'" in message and "progress.global_step is 1.5" in message


def test_resuming_a_malformed_checkpoint_exits_2_without_a_traceback(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with CheckpointManager(tmp_path) as manager:
        manager.save(values={"epoch": "seven", "config": "not a table"})
    code = main(["train", "--data-dir", str(data_dir), "--run-dir", str(tmp_path), "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot be resumed from" in err and "Traceback" not in err


def test_a_run_directory_that_is_a_file_is_a_usage_error_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "run"
    a_file.write_text("not a folder")
    code = main(["train", "--demo", "--run-dir", str(a_file)])
    err = capsys.readouterr().err
    assert code == 2 and f"{a_file} is a file, not a directory" in err and "Traceback" not in err


@pytest.mark.parametrize("name", ["checkpoint_last.pt", "checkpoint_best.pt"])
def test_a_directory_where_a_checkpoint_belongs_is_refused_before_any_work(tmp_path: Path, name: str) -> None:
    (tmp_path / name).mkdir()
    with pytest.raises(CheckpointError, match=f"{name} is a directory"):
        CheckpointManager(tmp_path)
    CheckpointManager(tmp_path, writer=False)  # readers are not concerned


def test_a_save_that_finds_no_room_exits_1_as_an_environment_failure(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import bsrnn.cli.train

    def full_disk(args: object) -> int:
        raise CheckpointWriteError("Could not save runs/x/checkpoint_last.pt: No space left on device.")

    monkeypatch.setattr(bsrnn.cli.train, "run", full_disk)
    assert main(["train", "--demo"]) == 1
    assert "No space left on device" in capsys.readouterr().err


def test_the_preemption_guard_stays_installed_until_the_last_save_has_committed() -> None:
    """``close`` waits for the last asynchronous save; a SIGTERM then must not kill the process."""
    handlers = []
    fake = SimpleNamespace(
        config=SimpleNamespace(epochs=1), progress=SimpleNamespace(current_epoch=1, last_completed_epoch=0, global_step=6),
        files=SimpleNamespace(event=lambda *args, **values: None),
        close=lambda: handlers.append(signal.getsignal(signal.SIGTERM)),
        _result=lambda code, how: (code, how), manager=SimpleNamespace(wait_until_finished=lambda: None),
    )
    before = signal.getsignal(signal.SIGTERM)
    assert Trainer.run(fake, None) == (0, "completed")  # type: ignore[arg-type]
    assert getattr(handlers[0], "__self__", None).__class__.__name__ == "PreemptionGuard"
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_job_wide_sigusr1_does_not_kill_the_pesq_pools_resource_tracker(tmp_path: Path) -> None:
    """SLURM signals every process of a job step; the tracker used to die of SIGUSR1."""
    script = """
import os, signal, sys, time
from multiprocessing import resource_tracker
from bsrnn.training.builders import start_pesq_pool
pool = start_pesq_pool(1)
tracker = resource_tracker._resource_tracker._pid
assert tracker is not None, "no resource tracker was started"
assert signal.SIGUSR1 not in signal.pthread_sigmask(signal.SIG_BLOCK, []), "the mask leaked into the trainer"
os.kill(tracker, signal.SIGUSR1)
time.sleep(0.5)
assert os.waitpid(tracker, os.WNOHANG) == (0, 0), "the resource tracker died of SIGUSR1"
pool.close()
print("tracker alive")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0 and "tracker alive" in result.stdout, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
