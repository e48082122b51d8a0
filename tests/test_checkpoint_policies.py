"""Best and last policies, superseded last, stale temporaries, the run directory lock, lineage."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import pytest
import torch

from bsrnn.checkpoint import (
    CheckpointManager,
    RunDirectoryBusyError,
    load_checkpoint,
    superseded_path,
    superseded_paths,
)
from bsrnn.checkpoint.atomic import temporary_path


def _manager(run_dir: Path, model: torch.nn.Module, mode: str = "min") -> CheckpointManager:
    manager = CheckpointManager(run_dir, monitor="val_loss", mode=mode)
    manager.register("model_state_dict", model)
    return manager


@pytest.mark.parametrize(
    "mode,metrics,best_epoch",
    [("min", [0.5, 0.5, 0.4, 0.6], 2), ("max", [2.0, 2.5, 2.5, 1.0], 1)],
)
def test_best_changes_only_on_strict_improvement(tmp_path: Path, mode: str, metrics: list, best_epoch: int) -> None:
    with _manager(tmp_path, torch.nn.Linear(2, 2), mode) as manager:
        results = [manager.save(metric=m, values={"epoch": e}) for e, m in enumerate(metrics)]
    assert [r.is_best for r in results] == [True] + [
        (m < min(metrics[:i]) if mode == "min" else m > max(metrics[:i])) for i, m in enumerate(metrics) if i
    ]
    assert load_checkpoint(tmp_path, "best").payload["epoch"] == best_epoch
    assert load_checkpoint(tmp_path, "last").payload["epoch"] == len(metrics) - 1


def test_non_finite_metrics_and_step_saves_never_become_best(tmp_path: Path) -> None:
    with _manager(tmp_path, torch.nn.Linear(2, 2)) as manager:
        assert not manager.save(metric=math.nan, values={"epoch": 0}).is_best
        assert not manager.save(metric=-math.inf, values={"epoch": 1}).is_best
        assert not manager.save(metric=None, values={"epoch": 2}).is_best
        assert not (tmp_path / "checkpoint_best.pt").exists()
        assert manager.save(metric=0.9, values={"epoch": 3}).is_best


def test_the_best_value_survives_a_reload(tmp_path: Path) -> None:
    model = torch.nn.Linear(2, 2)
    with _manager(tmp_path, model) as manager:
        manager.save(metric=0.3, values={"epoch": 0})
        manager.save(metric=0.5, values={"epoch": 1})
    with _manager(tmp_path, model) as manager:
        manager.restore(manager.find("last"))
        assert manager.best_value == 0.3
        assert not manager.save(metric=0.4, values={"epoch": 2}).is_best
        assert manager.save(metric=0.2, values={"epoch": 3}).is_best
    payload = load_checkpoint(tmp_path, "best").payload
    assert payload["best_val_loss"] == 0.2 and payload["monitor"]["best"] == 0.2


def test_best_and_last_are_independent_copies(tmp_path: Path) -> None:
    with _manager(tmp_path, torch.nn.Linear(2, 2)) as manager:
        manager.save(metric=0.3, values={"epoch": 0})
    last, best = tmp_path / "checkpoint_last.pt", tmp_path / "checkpoint_best.pt"
    assert last.read_bytes() == best.read_bytes()
    assert not last.is_symlink() and not best.is_symlink()
    assert os.stat(last).st_ino != os.stat(best).st_ino and os.stat(last).st_nlink == 1
    with open(last, "r+b") as handle:  # damage one; the other must not change
        handle.seek(100)
        handle.write(b"\xff\xff")
    assert load_checkpoint(best).payload["epoch"] == 0


def test_resuming_from_best_keeps_a_newer_last_as_superseded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = torch.nn.Linear(2, 2)
    with _manager(tmp_path, model) as manager:
        manager.save(metric=0.3, values={"epoch": 0, "global_step": 10})
        manager.save(metric=0.5, values={"epoch": 1, "global_step": 20})
    newer_last = (tmp_path / "checkpoint_last.pt").read_bytes()
    with _manager(tmp_path, model) as manager:
        with caplog.at_level(logging.WARNING):
            result = manager.restore(manager.find("best"))
        assert result.superseded == tmp_path / "checkpoint_last.superseded-step20.pt"
        assert result.superseded.read_bytes() == newer_last
        assert any("superseded" in record.getMessage() for record in caplog.records)
        manager.save(metric=0.6, values={"epoch": 1, "global_step": 20})
    assert load_checkpoint(result.superseded).payload["epoch"] == 1
    lineage = load_checkpoint(tmp_path, "last").payload["lineage"]
    assert lineage[-1]["kind"] == "best" and lineage[-1]["epoch"] == 0


def test_resuming_from_best_twice_never_overwrites_the_furthest_state(tmp_path: Path) -> None:
    model = torch.nn.Linear(2, 2)
    with _manager(tmp_path, model) as manager:
        manager.save(metric=0.3, values={"epoch": 0, "global_step": 10})
        manager.save(metric=0.5, values={"epoch": 3, "global_step": 40})
    furthest = (tmp_path / "checkpoint_last.pt").read_bytes()
    with _manager(tmp_path, model) as manager:  # first resume from best: keeps step 40
        manager.restore(manager.find("best"))
        manager.save(metric=0.6, values={"epoch": 1, "global_step": 20})
    second_branch = (tmp_path / "checkpoint_last.pt").read_bytes()
    with _manager(tmp_path, model) as manager:  # second resume from best: must not destroy step 40
        again = manager.restore(manager.find("best"))
    with _manager(tmp_path, model) as manager:  # and a third, with no save between: no duplicate copy
        repeat = manager.restore(manager.find("best"))
    assert repeat.kept[0].already and repeat.superseded == again.superseded
    kept = superseded_paths(tmp_path)
    assert [path.name for path in kept] == ["checkpoint_last.superseded-step20.pt",
                                            "checkpoint_last.superseded-step40.pt"]
    assert kept[1].read_bytes() == furthest and kept[0].read_bytes() == second_branch


def test_a_superseded_name_already_taken_gets_a_new_name(tmp_path: Path) -> None:
    (tmp_path / "checkpoint_last.superseded-step7.pt").write_bytes(b"other")
    assert superseded_path(tmp_path, 7).name == "checkpoint_last.superseded-step7-2.pt"
    assert superseded_path(tmp_path, 8).name == "checkpoint_last.superseded-step8.pt"


def test_resuming_from_best_when_last_is_the_same_state_keeps_nothing_extra(tmp_path: Path) -> None:
    model = torch.nn.Linear(2, 2)
    with _manager(tmp_path, model) as manager:
        manager.save(metric=0.3, values={"epoch": 0})
    with _manager(tmp_path, model) as manager:
        assert manager.restore(manager.find("best")).superseded is None
    assert not superseded_paths(tmp_path)


def test_stale_temporaries_are_removed_at_start_up_and_never_match_the_pt_glob(tmp_path: Path) -> None:
    stale = temporary_path(tmp_path / "checkpoint_last.pt")
    stale.write_bytes(b"half a checkpoint")
    assert not list(tmp_path.glob("*.pt"))
    unrelated = tmp_path / "notes.txt"
    unrelated.write_text("keep me")
    with _manager(tmp_path, torch.nn.Linear(2, 2)) as manager:
        assert not stale.exists()
        manager.save(metric=0.1, values={"epoch": 0})
    assert unrelated.exists()
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["checkpoint_best.pt", "checkpoint_last.pt"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_a_second_writer_on_the_same_run_directory_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    first = _manager(tmp_path, torch.nn.Linear(2, 2))
    with pytest.raises(RunDirectoryBusyError, match=f"PID {os.getpid()}"):
        CheckpointManager(tmp_path)
    first.close()
    CheckpointManager(tmp_path).close()  # released: the next writer gets it


def test_each_checkpoint_records_lineage_time_and_versions(tmp_path: Path) -> None:
    model = torch.nn.Linear(2, 2)
    with _manager(tmp_path, model) as manager:
        manager.save(metric=0.3, values={"epoch": 0, "global_step": 10})
    with _manager(tmp_path, model) as manager:
        manager.restore(manager.find("auto"))
        manager.save(metric=0.2, values={"epoch": 1, "global_step": 20})
    payload = load_checkpoint(tmp_path, "last").payload
    assert payload["versions"]["torch"] == str(torch.__version__)
    assert payload["created"] and payload["save_sequence"] == 2
    assert [record["global_step"] for record in payload["lineage"]] == [10]
    assert payload["lineage"][0]["path"].endswith("checkpoint_last.pt")
