"""Damaged, foreign and hostile files are detected, named and never applied."""

from __future__ import annotations

import logging
import os
import pickle
import random
from pathlib import Path

import pytest
import torch

from bsrnn.checkpoint import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointForeignError,
    CheckpointManager,
    CheckpointNotFoundError,
    load_checkpoint,
    verify,
)
from bsrnn.checkpoint.fileformat import write_checkpoint


def _make_run(run_dir: Path) -> tuple[bytes, bytes]:
    """A run directory whose best (epoch 0) and last (epoch 1) differ; returns their bytes."""
    model = torch.nn.Linear(16, 16)
    with CheckpointManager(run_dir) as manager:
        manager.register("model_state_dict", model)
        manager.save(metric=0.5, values={"epoch": 0})
        with torch.no_grad():
            model.weight.add_(1)
        manager.save(metric=0.7, values={"epoch": 1})
    return (run_dir / "checkpoint_last.pt").read_bytes(), (run_dir / "checkpoint_best.pt").read_bytes()


def test_every_single_byte_flip_and_truncation_is_detected_and_auto_falls_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good_last, good_best = _make_run(tmp_path)
    last_path = tmp_path / "checkpoint_last.pt"
    rng = random.Random(20261128)
    trials = 0
    for trial in range(240):
        damaged = bytearray(good_last)
        if trial % 2 == 0:
            offset = rng.randrange(len(damaged))
            damaged[offset] ^= rng.randrange(1, 256)
            what = f"flip at {offset}"
        else:
            offset = rng.randrange(len(damaged))
            del damaged[offset:]
            what = f"truncation to {offset}"
        last_path.write_bytes(bytes(damaged))
        with pytest.raises((CheckpointCorruptError, CheckpointForeignError)) as raised:
            load_checkpoint(last_path)
        assert str(last_path) in str(raised.value), what
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            loaded = load_checkpoint(tmp_path, "auto")
        assert loaded.kind == "best" and loaded.fell_back and loaded.payload["epoch"] == 0, what
        assert any("falling back" in record.getMessage() for record in caplog.records), what
        with pytest.raises(CheckpointError):
            load_checkpoint(tmp_path, "last")
        trials += 1
    assert trials >= 200
    assert (tmp_path / "checkpoint_best.pt").read_bytes() == good_best


def test_verify_names_the_damaged_file_and_passes_the_intact_one(tmp_path: Path) -> None:
    good_last, _ = _make_run(tmp_path)
    damaged = bytearray(good_last)
    damaged[len(damaged) // 2] ^= 0x01
    (tmp_path / "checkpoint_last.pt").write_bytes(bytes(damaged))
    results = {result.path.name: result for result in verify(tmp_path)}
    assert results["checkpoint_best.pt"].ok
    assert not results["checkpoint_last.pt"].ok
    assert "hash mismatch" in results["checkpoint_last.pt"].message


def test_both_files_damaged_is_an_error_not_a_silent_fresh_start(tmp_path: Path) -> None:
    _make_run(tmp_path)
    for name in ("checkpoint_last.pt", "checkpoint_best.pt"):
        path = tmp_path / name
        path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CheckpointCorruptError, match="checkpoint_last.pt"):
        load_checkpoint(tmp_path, "auto")
    with pytest.raises(CheckpointCorruptError):
        CheckpointManager(tmp_path).find("auto")


def test_missing_checkpoint_lists_the_paths_tried(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError) as raised:
        load_checkpoint(tmp_path, "auto")
    message = str(raised.value)
    assert "Checkpoint not found" in message
    assert str(tmp_path / "checkpoint_last.pt") in message and str(tmp_path / "checkpoint_best.pt") in message
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere", "best")


class _Payload:
    """A pickle that would create a marker file when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def test_a_malicious_pickle_is_refused_without_running_its_payload(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    target = tmp_path / "checkpoint_last.pt"
    target.write_bytes(pickle.dumps({"epoch": _Payload(marker)}))
    with pytest.raises(CheckpointForeignError, match="checkpoint_last.pt"):
        load_checkpoint(tmp_path, "last")
    assert not marker.exists()


def test_a_malicious_pickle_with_a_valid_digest_is_still_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    target = tmp_path / "checkpoint_last.pt"
    with open(target, "wb") as handle:  # the digest is not a signature: the unpickler must refuse
        write_checkpoint({"format": "bsrnn-checkpoint", "format_version": 1, "x": _Payload(marker)}, handle)
    with pytest.raises(CheckpointForeignError, match="arbitrary code"):
        load_checkpoint(target)
    assert not marker.exists()


def test_foreign_files_are_refused_with_a_clear_reason(tmp_path: Path) -> None:
    plain = tmp_path / "plain.pt"
    torch.save({"model": torch.zeros(2)}, plain)
    with pytest.raises(CheckpointForeignError, match="without a bsrnn integrity trailer"):
        load_checkpoint(plain)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointCorruptError, match="empty"):
        load_checkpoint(empty)
    folder = tmp_path / "checkpoint_last.pt"
    folder.mkdir()
    with pytest.raises(CheckpointForeignError, match="directory"):
        load_checkpoint(tmp_path, "last")
