"""examples/slurm_requeue.sbatch does what its comments say, run by bash with Slurm's commands stubbed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "slurm_requeue.sbatch"

FAKE_TRAINER = """#!/bin/bash
# Stands in for `bsrnn train`: records its arguments and the signal that stops it, exits 128+signal.
trap 'echo "saved on USR1" >> trainer.log; exit 138' USR1
trap 'echo "saved on TERM" >> trainer.log; exit 143' TERM
echo "started $*" >> trainer.log
while true; do sleep 0.05; done
"""


def _sbatch_option(name: str) -> str:
    match = re.search(rf"^#SBATCH --{name}=(\S+)", SCRIPT.read_text(), re.MULTILINE)
    assert match, f"no #SBATCH --{name}"
    return match.group(1)


def test_the_log_goes_to_a_folder_that_exists_at_submission() -> None:
    """Slurm creates no folder for --output: a path into runs/ab5/ failed the job before it ran."""
    assert "/" not in _sbatch_option("output")


@pytest.fixture
def job(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A submission folder with a .venv whose activation puts a fake bsrnn and scontrol on PATH."""
    fake_bin = tmp_path / "fake-bin"
    fake_bin.mkdir()
    (fake_bin / "bsrnn").write_text(FAKE_TRAINER)
    (fake_bin / "scontrol").write_text('#!/bin/bash\necho "$*" >> scontrol.log\n')
    for tool in fake_bin.iterdir():
        tool.chmod(0o755)
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "activate").write_text(
        f'echo activated >> activate.log\nexport PATH="{fake_bin}:$PATH"\n')
    environment = {key: value for key, value in os.environ.items() if key != "VIRTUAL_ENV"}
    environment.update(SLURM_JOB_ID="4242")
    return tmp_path, environment


def _run_until_signal(folder: Path, environment: dict[str, str], sig: signal.Signals) -> None:
    job = subprocess.Popen(["bash", str(SCRIPT)], cwd=folder, env=environment,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 30
    while not (folder / "trainer.log").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (folder / "trainer.log").exists(), job.communicate(timeout=5)[0] if job.poll() is not None else ""
    job.send_signal(sig)  # to the batch script only, as --signal=B: and `scancel --batch` do
    output = job.communicate(timeout=30)[0]
    assert job.returncode is not None, output


def test_the_time_limit_signal_saves_then_requeues(job: tuple[Path, dict[str, str]]) -> None:
    folder, environment = job
    _run_until_signal(folder, environment, signal.SIGUSR1)
    assert (folder / "activate.log").read_text() == "activated\n"  # the environment was activated
    trainer = (folder / "trainer.log").read_text()
    assert "--resume auto" in trainer and "saved on USR1" in trainer
    assert (folder / "scontrol.log").read_text() == "requeue 4242\n"


def test_scancel_saves_and_does_not_requeue(job: tuple[Path, dict[str, str]]) -> None:
    """scancel sends SIGTERM: a cancelled job must stay cancelled (the old trap requeued it)."""
    folder, environment = job
    _run_until_signal(folder, environment, signal.SIGTERM)
    assert "saved on TERM" in (folder / "trainer.log").read_text()
    assert not (folder / "scontrol.log").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_a_signal_before_the_trainer_started_is_forwarded_once_it_has(job: tuple[Path, dict[str, str]],
                                                                       sig: signal.Signals) -> None:
    """The trap once forwarded to an empty PID and the script then waited for the trainer forever."""
    folder, environment = job
    script = subprocess.Popen(["bash", str(SCRIPT)], cwd=folder, env=environment,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    while not (folder / "activate.log").exists():  # the traps are set right after the activation
        time.sleep(0.01)
    time.sleep(0.05)
    script.send_signal(sig)
    output = script.communicate(timeout=30)[0]
    requeued = (folder / "scontrol.log").exists()
    assert requeued == (sig == signal.SIGUSR1), output
