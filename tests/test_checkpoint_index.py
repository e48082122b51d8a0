"""The engine's read side: latest and best steps and metrics from a small verified index."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from bsrnn.checkpoint import CheckpointManager
from bsrnn.checkpoint.index import INDEX_NAME, read_index, trailer_digest

FORMAT_1_FILE = Path(__file__).parent / "fixtures" / "checkpoint_v1_sha256.pt"  # see test_checkpoint_integrity
_V1_ENTRY = {"created": "2026-12-01T19:05:25+00:00", "epoch": 2, "global_step": 7, "save_sequence": 1, "size": 4200,
             "metric": {"best": 0.25, "mode": "min", "name": "val_loss", "value": 0.25},
             "sha256": "9409eae52b06e026a5466f3ddd5a9fc195360bd120c9defa3dd1e8516e6be420"}
FORMAT_1_INDEX = {  # what the format-1 engine wrote beside FORMAT_1_FILE (as last and best)
    "format": "bsrnn-checkpoint-index", "version": 1,
    "last": {**_V1_ENTRY, "file": "checkpoint_last.pt"}, "best": {**_V1_ENTRY, "file": "checkpoint_best.pt"},
    "digest": "3db4601c628a2a7c299519f34b7c184c433c4704c678088cdf7d10a0f17e378a",
}


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


def test_an_index_and_checkpoints_of_format_1_are_read_through_the_files_then_indexed_anew(tmp_path: Path) -> None:
    import shutil

    for name in ("checkpoint_last.pt", "checkpoint_best.pt"):
        shutil.copy(FORMAT_1_FILE, tmp_path / name)
    (tmp_path / INDEX_NAME).write_text(json.dumps(FORMAT_1_INDEX))
    assert read_index(tmp_path) == {}  # another version: not used, the files decide
    assert trailer_digest(tmp_path / "checkpoint_last.pt") == (
        "sha256:9409eae52b06e026a5466f3ddd5a9fc195360bd120c9defa3dd1e8516e6be420")
    with _manager(tmp_path) as manager:
        assert (manager.latest_step(), manager.best_step(), manager.best_metric()) == (7, 7, 0.25)
    with _manager(tmp_path) as manager:
        manager.save(values={"epoch": 3, "global_step": 8})  # a step save: last only
    entries = read_index(tmp_path)
    assert entries["last"].global_step == 8 and entries["last"].digest.startswith("xxh3-128:")
    with _manager(tmp_path) as manager:  # best (still format 1) from its file when the index lacks it
        best = manager.best()
        assert best is not None and best.global_step == 7 and best.digest.startswith("sha256:")


@pytest.mark.timeout(30)  # the bug was a hang
def test_a_fifo_named_like_the_index_is_no_index_and_does_not_block_its_reader(tmp_path: Path) -> None:
    """tools/torture.py adversary: `train --resume` hung when status.json read a FIFO named
    checkpoint_index.json; the index is only a hint, so anything but a regular file is none."""
    with _manager(tmp_path) as manager:
        manager.save(metric=0.5, values={"epoch": 0, "global_step": 1})
    (tmp_path / INDEX_NAME).unlink()
    os.mkfifo(tmp_path / INDEX_NAME)
    assert read_index(tmp_path) == {}
    with _manager(tmp_path) as manager:  # the next commit replaces the FIFO with an index
        manager.save(metric=0.4, values={"epoch": 1, "global_step": 2})
    assert read_index(tmp_path)["last"].global_step == 2
