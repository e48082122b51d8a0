"""Every torture campaign of tools/torture.py at a small count (RELIABILITY.md has the big runs).

The campaigns share one workspace, so the uninterrupted reference run is made once. Each test
fails with the campaign's one-line result and its failures.

Time: a campaign is mostly Python + torch start-ups of single-threaded processes, so the ``ddp``
campaign (three 2-rank launches, the most expensive) runs in a background thread from the first
test on, using the second core while the others run; its test only collects the result. The
``diskfull`` test comes after it: it starts children with ``preexec_fn``, which must not run
while other threads exist. So does ``adversary``: it forks its commands from this (warm) process,
which is safe only while no other thread runs (else it falls back to 4x slower ``python -m bsrnn``
children).
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

from torture.cli import run_campaign  # noqa: E402  (tools/ is not an installed package)
from torture.common import Outcome, Workspace  # noqa: E402

pytestmark = pytest.mark.slow
SEED = 20261128
ADVERSARY_SAMPLE = 40
"""29 s on this machine at a load average of 0.6: the base run about 12 s, then 0.4 s a combination."""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("torture"))


class Background:
    """A campaign running in a thread, with its own workspace (workspaces are not thread-safe)."""

    def __init__(self, name: str, root: Path, trials: int) -> None:
        self.outcome: Outcome | None = None
        self.thread = threading.Thread(target=self._run, args=(name, Workspace(root), trials), daemon=True)
        self.thread.start()

    def _run(self, name: str, workspace: Workspace, trials: int) -> None:
        self.outcome = run_campaign(name, workspace, trials, SEED)

    def result(self, timeout: float) -> Outcome:
        self.thread.join(timeout)
        assert self.outcome is not None, f"the background campaign did not finish within {timeout:.0f} s"
        return self.outcome


@pytest.fixture(scope="module")
def ddp_campaign(tmp_path_factory: pytest.TempPathFactory) -> Background:
    return Background("ddp", tmp_path_factory.mktemp("torture-ddp"), 1)


def _check(outcome: Outcome) -> None:
    """Fail with the campaign's one-line result and its failures unless it passed."""
    print(outcome.line())
    assert outcome.ok, "\n".join([outcome.line(), *outcome.failures])


def test_sigkill_at_random_instants_loses_no_step_beyond_the_save_order_and_ends_bit_identical(
    workspace: Workspace, ddp_campaign: Background
) -> None:
    _check(run_campaign("kill", workspace, 3, SEED))


def test_preemption_signals_at_random_instants_exit_128_plus_signal_and_end_bit_identical(
    workspace: Workspace,
) -> None:
    _check(run_campaign("signals", workspace, 3, SEED))


def test_every_byte_flip_and_truncation_of_either_checkpoint_is_detected_named_and_fallen_back_from(
    workspace: Workspace,
) -> None:
    _check(run_campaign("corrupt", workspace, 50, SEED, cli_checks=1))


def test_hostile_files_are_refused_with_exit_2_and_their_payload_never_runs(workspace: Workspace) -> None:
    _check(run_campaign("hostile", workspace, 1, SEED, cli_checks=1))


def test_every_kind_of_broken_dataset_exits_2_naming_the_file_before_the_first_step(workspace: Workspace) -> None:
    _check(run_campaign("baddata", workspace, 1, SEED, cli_checks=1))


def test_injected_nonfinite_losses_are_skipped_counted_and_stop_the_run_at_the_limit(workspace: Workspace) -> None:
    _check(run_campaign("nan", workspace, 1, SEED))


def test_a_second_trainer_on_a_busy_run_directory_is_refused_and_a_stale_lock_is_taken_over(
    workspace: Workspace,
) -> None:
    _check(run_campaign("concurrency", workspace, 1, SEED))


def test_two_identical_trainers_at_random_offsets_never_move_the_committed_step_backwards(
    workspace: Workspace,
) -> None:
    _check(run_campaign("race", workspace, 4, SEED))


def test_a_sigkilled_ddp_rank_ends_both_ranks_quickly_and_the_resume_is_bit_identical(
    ddp_campaign: Background,
) -> None:
    _check(ddp_campaign.result(timeout=540))


def test_a_save_into_a_full_disk_fails_clearly_keeps_the_files_and_resumes_bit_identical(
    workspace: Workspace,
) -> None:
    _check(run_campaign("diskfull", workspace, 1, SEED))


def test_adversary_every_run_file_in_every_hostile_form_under_every_command_loses_no_byte_or_hangs(
    workspace: Workspace,
) -> None:
    """A seeded random sample of the (file, form, command) matrix; the whole matrix, 1,596
    combinations, runs from the command line (``--trials all``, RELIABILITY.md)."""
    _check(run_campaign("adversary", workspace, ADVERSARY_SAMPLE, SEED))
