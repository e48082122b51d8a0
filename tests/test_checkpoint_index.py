"""The engine's read side: latest and best steps and metrics from a small verified index."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from bsrnn.checkpoint import CheckpointManager
from bsrnn.checkpoint.index import INDEX_NAME, read_index


def _manager(run_dir: Path) -> CheckpointManager:
    manager = CheckpointManager(run_dir, monitor="val_loss", mode="min")
    manager.register("model_state_dict", torch.nn.Linear(2, 2))
    return manager


def test_latest_and_best_are_known_after_each_save_and_after_a_restart(tmp_path: Path) -> None:
    with _manager(tmp_path) as manager:
        assert manager.latest_step() is None and manager.best_step() is None
        manager.save(metric=0.5, values={"epoch": 0, "global_step": 10})
        manager.save(metric=0.7, values={"epoch": 1, "global_step": 20})
        assert (manager.latest_step(), manager.best_step(), manager.best_metric()) == (20, 10, 0.5)
    with _manager(tmp_path) as manager:  # a new process: from the index alone
        assert (manager.latest_step(), manager.best_step(), manager.best_metric()) == (20, 10, 0.5)
        assert manager.latest().epoch == 1 and manager.latest().save_sequence == 2


def test_the_index_is_a_hint_checked_against_each_files_size_and_trailer_digest(tmp_path: Path) -> None:
    with _manager(tmp_path) as manager:
        manager.save(metric=0.5, values={"epoch": 0, "global_step": 10})
    last = tmp_path / "checkpoint_last.pt"
    data = bytearray(last.read_bytes())
    data[100] ^= 0xFF  # the content changes, the trailer does not: the index still names the file
    last.write_bytes(bytes(data))
    assert read_index(tmp_path)["last"].global_step == 10
    last.write_bytes(bytes(data[:-1]))  # another size: the entry no longer describes the file
    assert "last" not in read_index(tmp_path)


def test_a_stale_or_edited_index_falls_back_to_the_checkpoints_themselves(tmp_path: Path) -> None:
    with _manager(tmp_path) as manager:
        manager.save(metric=0.5, values={"epoch": 0, "global_step": 10})
    index = tmp_path / INDEX_NAME
    body = json.loads(index.read_text())
    body["last"]["global_step"] = 999  # edited without its digest
    index.write_text(json.dumps(body))
    assert read_index(tmp_path) == {}
    with _manager(tmp_path) as manager:
        assert manager.latest_step() == 10
    index.unlink()
    with _manager(tmp_path) as manager:
        assert manager.latest_step() == 10 and manager.best_metric() == 0.5
