"""Damaged, foreign and hostile files are detected, named and never applied."""

from __future__ import annotations

import io
import logging
import os
import pickle
import random
import re
import struct
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
from bsrnn.checkpoint.fileformat import (
    DIGEST,
    DIGESTS,
    FORMAT_VERSION,
    digest_algorithm,
    read_verified_bytes,
    write_checkpoint,
)


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


# ------------------------------------------------------------------ digests and format versions
FORMAT_1_FILE = Path(__file__).parent / "fixtures" / "checkpoint_v1_sha256.pt"
"""A ``checkpoint_last.pt`` written by the format-1 engine (commit 65cca01, SHA-256 trailer),
before format 2 existed: ``Linear(4, 3)`` with weight ``arange(12) / 8`` and bias
``(-1, 0.5, 2)`` before one Adam step (lr 1e-3), epoch 2, global step 7, ``val_loss`` 0.25. It proves that
files written before the digest changed stay readable and verifiable."""
FORMAT_1_DIGEST = "sha256:9409eae52b06e026a5466f3ddd5a9fc195360bd120c9defa3dd1e8516e6be420"


def _small_payload() -> dict:
    return {"format": "bsrnn-checkpoint", "format_version": FORMAT_VERSION, "epoch": 3,
            "weight": torch.arange(300, dtype=torch.float32)}


def test_a_format_1_file_written_before_the_digest_changed_loads_and_verifies_as_sha256() -> None:
    loaded = load_checkpoint(FORMAT_1_FILE)
    assert loaded.digest == FORMAT_1_DIGEST
    payload = loaded.payload
    assert payload["format_version"] == 1 and (payload["epoch"], payload["global_step"]) == (2, 7)
    step = 1e-3  # the first Adam step moves every parameter by the learning rate
    weight = torch.arange(12, dtype=torch.float32).reshape(3, 4) / 8 - step
    assert torch.allclose(payload["model_state_dict"]["weight"], weight, atol=1e-6)
    assert torch.allclose(payload["model_state_dict"]["bias"], torch.tensor([-1.0, 0.5, 2.0]) - step, atol=1e-6)
    assert set(payload["optimizer_state_dict"]["state"]) == {0, 1}
    [result] = verify(FORMAT_1_FILE)
    assert result.ok and result.message.startswith("sha256:9409eae52b06e026... epoch 2")
    assert torch.load(FORMAT_1_FILE, weights_only=True)["global_step"] == 7  # plain torch, as before


def test_new_files_are_format_2_with_an_xxh3_128_trailer(tmp_path: Path) -> None:
    _make_run(tmp_path)
    data = (tmp_path / "checkpoint_last.pt").read_bytes()
    assert (FORMAT_VERSION, DIGEST.name) == (2, "xxh3-128")
    assert data[-DIGEST.comment_length - 2 :].startswith(struct.pack("<H", 61) + b"bsrnn-checkpoint v2 xxh3-128=")
    loaded = load_checkpoint(tmp_path / "checkpoint_last.pt")
    assert loaded.payload["format_version"] == 2
    assert re.fullmatch(r"xxh3-128:[0-9a-f]{32}", loaded.digest)
    assert data.endswith(loaded.digest.split(":")[1].encode())


def test_each_digest_gives_the_published_values() -> None:
    # A library that changed its output would make every file of that format unverifiable.
    assert digest_algorithm("xxh3-128").hexdigest(b"abc") == "06b05ab6733a618578af5f94892f3950"
    assert digest_algorithm("xxh3-128").hexdigest(b"") == "99aa06d3014798d86001c324468d497f"
    assert digest_algorithm("sha256").hexdigest(b"abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    assert [algorithm.magic for algorithm in DIGESTS] == [b"bsrnn-checkpoint v1 sha256=",
                                                          b"bsrnn-checkpoint v2 xxh3-128="]
    with pytest.raises(ValueError, match="unknown checkpoint digest 'md5'"):
        write_checkpoint(_small_payload(), io.BytesIO(), digest="md5")


@pytest.mark.parametrize("digest", [algorithm.name for algorithm in DIGESTS])
def test_every_writing_path_gives_the_same_file_and_the_digest_the_reader_reports(tmp_path: Path, digest: str) -> None:
    payload = _small_payload()
    stream = io.BytesIO()
    returned = {"stream": write_checkpoint(payload, stream, digest=digest)}
    files = {}
    for verified in (False, True):
        path = tmp_path / f"verified-{verified}.pt"
        with open(path, "xb+") as handle:
            returned[path.name] = write_checkpoint(payload, handle, verify=verified, digest=digest)
        files[path.name] = path.read_bytes()
    assert set(files.values()) == {stream.getvalue()}
    reported = read_verified_bytes(tmp_path / "verified-True.pt").digest
    assert set(returned.values()) == {reported} and reported.startswith(f"{digest}:")


@pytest.mark.parametrize("source", ["format 1 fixture (sha256)", "format 2 (xxh3-128)"])
def test_byte_changes_and_truncations_of_either_format_are_detected(tmp_path: Path, source: str) -> None:
    """Every offset of the last 160 bytes (trailer, EOCD, end of the central directory) and of
    the first 32, and 150 random offsets elsewhere: each changed, and each a truncation point."""
    if source.startswith("format 1"):
        data = FORMAT_1_FILE.read_bytes()
    else:
        payload = load_checkpoint(FORMAT_1_FILE).payload
        with open(tmp_path / "new.pt", "xb+") as handle:
            write_checkpoint({**payload, "format_version": FORMAT_VERSION}, handle, verify=True)
        data = (tmp_path / "new.pt").read_bytes()
    target = tmp_path / "damaged.pt"
    rng = random.Random(20261201)
    offsets = sorted({*range(32), *range(len(data) - 160, len(data)), *rng.sample(range(len(data)), 150)})
    for offset in offsets:
        damaged = bytearray(data)
        damaged[offset] ^= rng.randrange(1, 256)
        target.write_bytes(bytes(damaged))
        with pytest.raises(CheckpointError):
            read_verified_bytes(target)
        target.write_bytes(data[:offset])
        with pytest.raises(CheckpointError):
            read_verified_bytes(target)


@pytest.mark.parametrize("digest", [algorithm.name for algorithm in DIGESTS])
def test_damage_to_the_trailer_of_either_format_is_named(tmp_path: Path, digest: str) -> None:
    algorithm = digest_algorithm(digest)
    other = next(candidate for candidate in DIGESTS if candidate != algorithm)
    good = tmp_path / "good.pt"
    with open(good, "xb+") as handle:
        write_checkpoint(_small_payload(), handle, verify=True, digest=digest)
    data = good.read_bytes()
    body = data[: -algorithm.comment_length - 2]  # up to the comment-length field
    recorded = data[-algorithm.hex_length :].decode()
    cases = [
        (body + b"\0\0", CheckpointForeignError, "without a bsrnn integrity trailer"),  # comment stripped
        (data[: -algorithm.trailer_size], CheckpointCorruptError, "not a checkpoint trailer"),
        (data[:-1], CheckpointCorruptError, "cut short"),
        (data[:-1] + bytes([data[-1] ^ 0x20]), CheckpointCorruptError, "content hash mismatch"),  # 'a' -> 'A'
        # the other version's magic before this digest (a trailer of the wrong length for both)
        (body + struct.pack("<H", len(other.magic) + algorithm.hex_length) + other.magic + recorded.encode(),
         CheckpointCorruptError, "of no format this bsrnn reads"),
        (body + struct.pack("<H", 40) + b"bsrnn-checkpoint v3 blake5=" + b"0" * 13, CheckpointCorruptError,
         "newer than format 2"),
        # a well-formed trailer of the other version whose digest does not match
        (body + other.comment_field("0" * other.hex_length), CheckpointCorruptError, f"recorded {other.name}:0000"),
    ]
    for damaged, error, message in cases:
        target = tmp_path / "damaged.pt"
        target.write_bytes(damaged)
        with pytest.raises(error, match=message):
            load_checkpoint(target)
    assert read_verified_bytes(good).digest == f"{digest}:{recorded}"
