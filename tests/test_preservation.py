"""Training state is kept by content and identity, never by name (``checkpoint/preserve.py``, the
lock's identity check): every way a tester destroyed committed work, as a test that fails
without the mechanism."""

from __future__ import annotations

import math
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

from bsrnn import keys
from bsrnn.checkpoint import (
    CheckpointCorruptError,
    CheckpointManager,
    LockLostError,
    StateMismatchError,
    kept_states,
    load_checkpoint,
    write_checkpoint,
)
from bsrnn.checkpoint.fileformat import write_file_durably
from bsrnn.config import Config
from bsrnn.models import BSRNN
from bsrnn.training.progress import TrainingProgress, saved_progress
from bsrnn.training.resume import check_resumable

from e2e import TINY, bsrnn, checkpoint

ARCH = {"num_channel": 4, "num_layer": 1}


def _manager(run_dir: Path, model: torch.nn.Module, **options: Any) -> CheckpointManager:
    manager = CheckpointManager(run_dir, monitor="val_loss", mode="min", **options)
    manager.register("model_state_dict", model)
    return manager


def _files(run_dir: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in run_dir.iterdir() if path.is_file() and path.name != ".lock"}


def _two_states(run_dir: Path) -> tuple[bytes, bytes]:
    """best at step 10 (epoch 0), last at step 40 (epoch 3): the bytes of each."""
    model = torch.nn.Linear(2, 2)
    with _manager(run_dir, model) as manager:
        manager.save(metric=0.3, values={"epoch": 0, "global_step": 10})
        torch.nn.init.zeros_(model.weight)
        manager.save(metric=0.5, values={"epoch": 3, "global_step": 40})
    return (run_dir / "checkpoint_best.pt").read_bytes(), (run_dir / "checkpoint_last.pt").read_bytes()


def _resume_and_save(run_dir: Path, source: Path | str, which: str = "auto", **options: Any) -> CheckpointManager:
    with _manager(run_dir, torch.nn.Linear(2, 2), **options) as manager:
        manager.restore(load_checkpoint(source, which, accept=options.get("accept")))
        manager.save(metric=None, values={"epoch": 1, "global_step": 11})
    return manager


def _rewrite(path: Path, payload: Mapping[str, Any]) -> None:
    """Replace ``path`` with a checkpoint that verifies and holds ``payload`` (an edited file)."""
    path.unlink()
    write_file_durably(path, lambda handle: write_checkpoint(dict(payload), handle))


def _holds(run_dir: Path, data: bytes) -> list[str]:
    """The files other than last and best (which the next save may replace) holding ``data``."""
    return sorted(name for name, content in _files(run_dir).items()
                  if content == data and name not in ("checkpoint_last.pt", "checkpoint_best.pt"))


@pytest.mark.parametrize("copy_name", ["best-epoch0.pt", "checkpoint_last.superseded-step10.pt", "mine"])
def test_resuming_from_a_copy_of_best_under_any_name_keeps_the_newer_last(tmp_path: Path, copy_name: str) -> None:
    best, last = _two_states(tmp_path)
    shutil.copy(tmp_path / "checkpoint_best.pt", tmp_path / copy_name)
    _resume_and_save(tmp_path, tmp_path / copy_name)
    assert _holds(tmp_path, last) == ["checkpoint_last.superseded-step40.pt"]


def test_resuming_from_a_superseded_file_keeps_the_current_last(tmp_path: Path) -> None:
    best, step40 = _two_states(tmp_path)
    _resume_and_save(tmp_path, tmp_path, "best")  # keeps step 40, then commits step 11
    step11 = (tmp_path / "checkpoint_last.pt").read_bytes()
    _resume_and_save(tmp_path, tmp_path / "checkpoint_last.superseded-step40.pt")
    assert _holds(tmp_path, step11) == ["checkpoint_last.superseded-step11.pt"]
    assert _holds(tmp_path, step40) == ["checkpoint_last.superseded-step40.pt"]


def test_a_requeued_resume_from_last_keeps_nothing(tmp_path: Path) -> None:
    _two_states(tmp_path)
    _resume_and_save(tmp_path, tmp_path, "last")
    _resume_and_save(tmp_path, tmp_path, "auto")
    assert kept_states(tmp_path) == []


def test_a_best_that_the_continued_state_does_not_own_is_kept(tmp_path: Path) -> None:
    """Branch 1 reaches step 40; a resume from best (step 10) starts branch 2, with a best of
    its own at step 20 and a last at step 30. Resuming branch 1 again keeps both of branch 2's
    states before branch 1's next best could replace checkpoint_best.pt."""
    _two_states(tmp_path)
    with _manager(tmp_path, torch.nn.Linear(2, 2)) as manager:
        manager.restore(manager.find("best"))
        manager.save(metric=0.2, values={"epoch": 1, "global_step": 20})
        manager.save(metric=0.9, values={"epoch": 2, "global_step": 30})
    branch2_best = (tmp_path / "checkpoint_best.pt").read_bytes()
    branch2_last = (tmp_path / "checkpoint_last.pt").read_bytes()
    _resume_and_save(tmp_path, tmp_path / "checkpoint_last.superseded-step40.pt")
    assert _holds(tmp_path, branch2_best) == ["checkpoint_best.superseded-step20.pt"]
    assert _holds(tmp_path, branch2_last) == ["checkpoint_last.superseded-step30.pt"]


@pytest.mark.parametrize("damage", ["flipped byte", "truncated", "newer format"])
def test_a_last_that_cannot_be_read_is_quarantined_byte_for_byte_when_auto_falls_back(
        tmp_path: Path, damage: str) -> None:
    # The reason in the kept file's name comes from the error's type, not its text: the
    # message names the file, and this folder's name holds the words the text once matched.
    tmp_path = tmp_path / "newer runs, not a bsrnn checkpoint, incomplete"
    tmp_path.mkdir()
    _two_states(tmp_path)
    last = tmp_path / "checkpoint_last.pt"
    if damage == "flipped byte":
        data = bytearray(last.read_bytes())
        data[len(data) // 2] ^= 0xFF
        last.write_bytes(bytes(data))
    elif damage == "truncated":
        last.write_bytes(last.read_bytes()[:-100])
    else:
        payload = dict(load_checkpoint(last).payload, format_version=99)
        _rewrite(last, payload)
    damaged = last.read_bytes()
    manager = _resume_and_save(tmp_path, tmp_path, "auto")
    why = {"flipped byte": "damaged", "truncated": "damaged", "newer format": "newer-format"}[damage]
    assert _holds(tmp_path, damaged) == [f"checkpoint_last.pt.quarantined-{why}"]
    assert [path.name for path in kept_states(tmp_path)] == [f"checkpoint_last.pt.quarantined-{why}"]
    assert manager.best_value == 0.3  # resumed from best


def test_a_last_that_verifies_but_cannot_be_resumed_from_falls_back_and_is_quarantined(tmp_path: Path) -> None:
    _two_states(tmp_path)
    last = tmp_path / "checkpoint_last.pt"
    payload = dict(load_checkpoint(last).payload, model_state_dict={})
    _rewrite(last, payload)
    incomplete = last.read_bytes()

    def needs_weights(path: Path, payload: Mapping[str, Any]) -> None:
        if not payload["model_state_dict"]:
            raise StateMismatchError(f"{path}: model_state_dict is empty")

    loaded = load_checkpoint(tmp_path, "auto", accept=needs_weights)
    assert loaded.path.name == "checkpoint_best.pt" and loaded.fell_back
    _resume_and_save(tmp_path, tmp_path, "auto", accept=needs_weights)
    assert _holds(tmp_path, incomplete) == ["checkpoint_last.pt.quarantined-incomplete"]


def test_an_identical_copy_already_kept_is_not_copied_again(tmp_path: Path) -> None:
    _best, last = _two_states(tmp_path)
    (tmp_path / "my-backup").write_bytes(last)
    _resume_and_save(tmp_path, tmp_path, "best")
    assert _holds(tmp_path, last) == ["my-backup"]


def test_a_fresh_manager_keeps_what_its_first_commit_would_replace(tmp_path: Path) -> None:
    _best, last = _two_states(tmp_path)
    with _manager(tmp_path, torch.nn.Linear(2, 2)) as manager:
        manager.save(metric=0.9, values={"epoch": 0, "global_step": 1})
    assert _holds(tmp_path, last) == ["checkpoint_last.superseded-step40.pt"]


def test_a_non_finite_best_value_is_incomplete_not_a_frozen_best(tmp_path: Path) -> None:
    _two_states(tmp_path)
    last = tmp_path / "checkpoint_last.pt"
    payload = load_checkpoint(last).payload
    payload = dict(payload, monitor={**payload["monitor"], "best": math.nan})
    _rewrite(last, payload)
    with pytest.raises(CheckpointCorruptError, match="monitor.best is nan"):
        load_checkpoint(last)


# ------------------------------------------------------------------- what a resume needs
def _trainer_payload() -> dict[str, Any]:
    generator = BSRNN(**ARCH).state_dict()
    return {"config": Config(**ARCH).to_dict(), keys.GENERATOR: generator, keys.PROGRESS: {
        "epoch": 3, "global_step": 25, "step_in_epoch": 0, "nonfinite_in_a_row": 0, "nonfinite_skipped": 0,
        "epoch_count": 0}, keys.GENERATOR_SCHEDULER: {"last_epoch": 3}, "registered": list(keys.REGISTERED)}


@pytest.mark.parametrize("edit,problem", [
    (lambda p: p.update({keys.PROGRESS: {}}), "progress is empty"),
    (lambda p: p[keys.PROGRESS].pop("global_step"), "progress.global_step is missing"),
    (lambda p: p.update({keys.GENERATOR_SCHEDULER: {}}), "scheduler_G_state_dict is empty"),
    (lambda p: p.update({keys.GENERATOR: {}}), "model_state_dict is empty"),
    (lambda p: p.pop("config"), "config is missing"),
    (lambda p: p[keys.GENERATOR].pop(next(iter(p[keys.GENERATOR]))), "1 tensor(s) missing"),
    (lambda p: p[keys.GENERATOR].update({"extra": torch.zeros(1)}), "1 tensor(s) not in the model"),
    (lambda p: p["config"].update({"num_channel": 8}), "of another shape"),
    (lambda p: next(iter(p[keys.GENERATOR].values())).fill_(math.nan), "holds NaN or inf"),
])
def test_a_checkpoint_a_run_cannot_resume_from_is_refused_naming_the_problem(edit: Any, problem: str) -> None:
    payload = _trainer_payload()
    check_resumable("ok.pt", payload)
    edit(payload)
    with pytest.raises(StateMismatchError, match="cannot be resumed from") as raised:
        check_resumable("bad.pt", payload)
    assert problem in str(raised.value)


# ------------------------------------------------------------------------------ the lock
def test_a_deleted_or_replaced_lock_stops_the_save_before_anything_is_written(tmp_path: Path) -> None:
    _two_states(tmp_path)
    before = _files(tmp_path)
    for replace in (False, True):
        with _manager(tmp_path, torch.nn.Linear(2, 2)) as manager:
            (tmp_path / ".lock").unlink()
            if replace:
                (tmp_path / ".lock").write_text("12345\n")
            with pytest.raises(LockLostError, match="another trainer may be writing"):
                manager.save(metric=0.1, values={"epoch": 9, "global_step": 90})
        assert _files(tmp_path) == before


def test_a_lock_taken_away_while_the_checkpoint_is_written_stops_the_save_before_its_renames(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bsrnn.checkpoint import manager as manager_module

    _two_states(tmp_path)
    before = _files(tmp_path)
    real_write = manager_module.write_checkpoint

    def write_while_another_trainer_takes_the_lock(*args: Any, **kwargs: Any) -> Any:
        written = real_write(*args, **kwargs)
        (tmp_path / ".lock").unlink()
        (tmp_path / ".lock").write_text("12345\n")
        return written

    monkeypatch.setattr(manager_module, "write_checkpoint", write_while_another_trainer_takes_the_lock)
    with _manager(tmp_path, torch.nn.Linear(2, 2)) as manager:
        with pytest.raises(LockLostError, match="another trainer may be writing"):
            manager.save(metric=0.1, values={"epoch": 9, "global_step": 90})
    after = _files(tmp_path)
    assert {name: after[name] for name in before} == before  # nothing replaced (kept copies may be added)
    assert not [name for name in after if name.endswith(".partial")]


def test_a_rank_that_reads_other_bytes_at_rank_0s_path_is_refused_by_digest(tmp_path: Path) -> None:
    """DDP: rank 0 decides by path and digest; a node whose run directory is a stale or local
    copy finds the same path with other contents, and must not start from other weights."""
    from bsrnn.checkpoint import load_checkpoint
    from bsrnn.training.plan import Decision, other_state_than_rank_0

    _two_states(tmp_path)
    last, best = load_checkpoint(tmp_path, "last"), load_checkpoint(tmp_path, "best")
    assert other_state_than_rank_0(last, Decision(str(last.path), digest=last.digest), rank=1) is None
    problem = other_state_than_rank_0(last, Decision(str(last.path), digest=best.digest), rank=3)
    assert problem is not None and "rank 3 read another file at" in problem and "than rank 0 did" in problem


# ---------------------------------------------------------------------- through the CLI
@pytest.mark.slow
def test_train_keeps_state_by_content_and_refuses_to_start_beside_kept_state(tmp_path: Path) -> None:
    """The tester's reproduction: resume from a copied best destroyed the step-29 state; a run
    directory holding only kept state started fresh, never naming it."""
    run = tmp_path / "run"
    assert bsrnn("train", *TINY, "--epochs", "2", "--max-steps", "8", "--run-dir", str(run)).returncode == 0
    furthest = (run / "checkpoint_last.pt").read_bytes()
    step = checkpoint(run)["global_step"]
    shutil.copy(run / "checkpoint_best.pt", run / "best-epoch0.pt")
    result = bsrnn("train", "--run-dir", str(run), "--resume", str(run / "best-epoch0.pt"), "--max-steps", "1")
    assert result.returncode == 0, result.stderr
    assert _holds(run, furthest) == [f"checkpoint_last.superseded-step{step}.pt"]
    assert f"kept checkpoint_last.pt as checkpoint_last.superseded-step{step}.pt" in result.stderr

    for name in ("checkpoint_last.pt", "checkpoint_best.pt", "checkpoint_index.json"):
        (run / name).unlink()
    for extra in ([], ["--resume", "auto"]):
        refused = bsrnn("train", *TINY, "--run-dir", str(run), "--max-steps", "1", *extra)
        assert refused.returncode == 2, refused.stderr
        assert f"checkpoint_last.superseded-step{step}.pt" in refused.stderr and "--resume" in refused.stderr
        assert not (run / "checkpoint_last.pt").exists()


def test_one_progress_reader_for_records_old_and_new_and_for_migrated_files() -> None:
    """``last_completed_epoch`` was saved as ``epoch`` before it was named so; a migrated file has
    only the top-level counters. Every reader goes through ``saved_progress``."""
    old, new = _trainer_payload(), _trainer_payload()
    new[keys.PROGRESS] = {**TrainingProgress(last_completed_epoch=3, global_step=25).state_dict()}
    migrated = {keys.EPOCH: 3, keys.GLOBAL_STEP: 25}
    for payload in (old, new, migrated):
        progress = saved_progress(payload)
        assert (progress.last_completed_epoch, progress.global_step, progress.current_epoch) == (3, 25, 4)
    check_resumable("new.pt", new)
    assert set(TrainingProgress().top_level_values()) == {keys.EPOCH, keys.GLOBAL_STEP, keys.STEP_IN_EPOCH,
                                                           keys.VAL_LOSS, keys.BEST_VAL_LOSS, keys.VAL_PESQ}
