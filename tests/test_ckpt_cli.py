"""`bsrnn ckpt inspect|verify|export` on real files, through the real entry point."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bsrnn.checkpoint import CheckpointManager
from bsrnn.cli.main import main


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    model = torch.nn.Linear(3, 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    with CheckpointManager(tmp_path / "run") as manager:
        manager.register("model_state_dict", model)
        manager.register("optimizer_state_dict", optimizer)
        manager.save(metric=0.4, values={"epoch": 3, "global_step": 40, "val_loss": 0.4, "config": {"num_channel": 16}})
    return tmp_path / "run"


def test_inspect_prints_progress_learning_rates_contents_and_integrity(run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["ckpt", "inspect", str(run_dir)]) == 0
    out = capsys.readouterr().out
    for expected in ("integrity: OK", "epoch: 3", "global_step: 40", "learning rate (optimizer_state_dict): 0.001",
                     "model_state_dict", "num_channel = 16", "lineage: 0 resume(s)", "monitor: val_loss (min)"):
        assert expected in out, expected


def test_inspect_json_is_machine_readable(run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["ckpt", "inspect", str(run_dir / "checkpoint_best.pt"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["progress"]["epoch"] == 3
    assert summary["contents"]["model_state_dict"] == {"tensors": 2, "bytes": 48}
    assert summary["kind"] == "best"


def test_verify_exits_zero_when_all_verify_and_nonzero_naming_the_damaged_file(run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["ckpt", "verify", str(run_dir)]) == 0
    last = run_dir / "checkpoint_last.pt"
    data = bytearray(last.read_bytes())
    data[200] ^= 0x10
    last.write_bytes(bytes(data))
    assert main(["ckpt", "verify", str(run_dir)]) != 0
    out = capsys.readouterr().out
    assert f"FAIL {last}" in out


def test_inspect_of_a_missing_path_exits_2_with_checkpoint_not_found(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bsrnn", "ckpt", "inspect", str(tmp_path / "nope")],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 2
    assert "Checkpoint not found" in result.stderr and "Traceback" not in result.stderr


def test_export_writes_the_generator_weights_as_safetensors(run_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    out = tmp_path / "g.safetensors"
    assert main(["ckpt", "export", str(run_dir), "--out", str(out)]) == 0
    weights = load_file(str(out))
    assert set(weights) == {"weight", "bias"}


def test_export_replaces_an_existing_bundle_only_with_overwrite(run_dir: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "g.safetensors"
    out.write_bytes(b"an earlier bundle")
    assert main(["ckpt", "export", str(run_dir), "--out", str(out)]) == 2
    assert "found 1 that exist already" in capsys.readouterr().err and out.read_bytes() == b"an earlier bundle"
    assert main(["ckpt", "export", str(run_dir), "--out", str(out), "--overwrite"]) == 0
    assert out.read_bytes() != b"an earlier bundle"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["g.safetensors", "run"]


def test_verify_says_ok_once_and_lists_superseded_files_that_inspect_also_lists(
    run_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    import shutil

    kept = run_dir / "checkpoint_last.superseded-step40.pt"
    shutil.copy(run_dir / "checkpoint_last.pt", kept)
    assert main(["ckpt", "verify", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert f"OK   {kept}: xxh3-128:" in out and "OK xxh3-128" not in out
    assert main(["ckpt", "inspect", str(run_dir)]) == 0
    assert f"superseded (kept, never overwritten): {kept}" in capsys.readouterr().out


def test_an_exported_model_is_readable_like_a_checkpoint(run_dir: Path, tmp_path: Path) -> None:
    import os
    import stat

    out = tmp_path / "g.safetensors"
    assert main(["ckpt", "export", str(run_dir), "--out", str(out)]) == 0
    mode = stat.S_IMODE(os.stat(out).st_mode)
    assert mode == stat.S_IMODE(os.stat(run_dir / "checkpoint_last.pt").st_mode) == 0o644 & ~_umask()


def test_migrate_into_a_directory_in_use_is_refused_before_anything_is_checked(tmp_path: Path) -> None:
    from bsrnn.checkpoint import RunDirectoryBusyError, RunDirectoryLock
    from bsrnn.migrate import migrate_legacy_run

    legacy = tmp_path / "legacy"
    legacy.mkdir()
    from bsrnn.models import BSRNN

    torch.save(BSRNN(num_channel=4, num_layer=1).state_dict(), legacy / "gene_epoch_0_0.5")
    out = tmp_path / "out"
    with RunDirectoryLock(out):
        with pytest.raises(RunDirectoryBusyError):
            migrate_legacy_run(legacy, out)
    migrate_legacy_run(legacy, out)
    assert (out / "checkpoint_last.pt").exists()


def test_migrate_refuses_a_torch_with_an_unsafe_loader_before_unpickling_anything(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """The legacy pickles get the torch floor of every other loader (check_torch_loader)."""
    from bsrnn.checkpoint import reading
    from bsrnn.models import BSRNN

    legacy = tmp_path / "legacy"
    legacy.mkdir()
    torch.save(BSRNN(num_channel=4, num_layer=1).state_dict(), legacy / "gene_epoch_0_0.5")
    monkeypatch.setattr(reading, "SAFE_LOADER_TORCH", (99, 0))  # this torch is now "too old"

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch.load ran on a torch below the floor")

    monkeypatch.setattr(torch, "load", never)
    assert main(["ckpt", "migrate", str(legacy), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "needs torch >= 99.0" in err and "CVE-2025-32434" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_an_exported_bundle_describes_itself_and_enhances_like_its_checkpoint(tmp_path: Path) -> None:
    import json

    import numpy as np

    from bsrnn.bundle import SIGNAL, read_bundle
    from bsrnn.enhancement import enhance_waveform, load_generator
    from bsrnn.models import BSRNN

    run = tmp_path / "run"
    with CheckpointManager(run) as manager:
        manager.register("model_state_dict", BSRNN(num_channel=4, num_layer=1))
        manager.save(metric=0.4, values={"epoch": 2, "global_step": 30, "config": {"num_channel": 4, "num_layer": 1}})
    out = tmp_path / "model.safetensors"
    assert main(["ckpt", "export", str(run), "--out", str(out)]) == 0
    model, metadata = read_bundle(out)
    assert json.loads(metadata["model"]) == {"class": "BSRNN", "num_channel": 4, "num_layer": 1, "causal": False}
    assert json.loads(metadata["signal"]) == SIGNAL and metadata["global_step"] == "30"
    audio = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    from_bundle = load_generator(out)
    assert from_bundle.epoch == 2 and "bundle" in from_bundle.describe()
    assert np.array_equal(enhance_waveform(from_bundle.model, audio), enhance_waveform(load_generator(run).model, audio))


def test_export_of_a_run_takes_the_checkpoint_enhance_and_evaluate_use(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture) -> None:
    """A run whose last state is newer than its best: every inference command takes best."""
    from bsrnn.bundle import read_bundle
    from bsrnn.enhancement import load_generator
    from bsrnn.models import BSRNN

    run = tmp_path / "run"
    config = {"num_channel": 4, "num_layer": 1}
    with CheckpointManager(run, monitor="val_loss", mode="min") as manager:
        manager.register("model_state_dict", BSRNN(**config))
        manager.save(metric=0.2, values={"epoch": 0, "global_step": 10, "config": config})
        manager.save(metric=0.9, values={"epoch": 1, "global_step": 20, "config": config})  # last, not best
    out = tmp_path / "model.safetensors"
    assert main(["ckpt", "export", str(run), "--out", str(out)]) == 0
    assert "checkpoint_best.pt" in capsys.readouterr().out
    _, metadata = read_bundle(out)
    assert metadata["source"] == str(load_generator(run).path) == str(run / "checkpoint_best.pt")
    assert metadata["global_step"] == "10"
    assert main(["ckpt", "export", str(run), "--out", str(tmp_path / "last.safetensors"), "--load", "last"]) == 0
    assert read_bundle(tmp_path / "last.safetensors")[1]["global_step"] == "20"


def test_every_inference_command_explains_load_the_same_way(capsys: pytest.CaptureFixture) -> None:
    helps = []
    for command in (["enhance"], ["evaluate"], ["ckpt", "export"]):
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        helps.append(" ".join(capsys.readouterr().out.split()))
    for text in helps:
        assert "auto (default) takes checkpoint_best.pt if it verifies, else checkpoint_last.pt" in text


def test_a_safetensors_file_that_is_not_a_bundle_is_refused_clearly(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from bsrnn.enhancement import load_generator
    from bsrnn.errors import UserError

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(UserError, match="without bsrnn's metadata"):
        load_generator(other)


def test_inspect_and_verify_name_the_digest_algorithm_of_new_and_format_1_files(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import re
    import shutil

    old = tmp_path / "old" / "checkpoint_last.pt"
    old.parent.mkdir()
    shutil.copy(Path(__file__).parent / "fixtures" / "checkpoint_v1_sha256.pt", old)  # format 1 (SHA-256)
    for path, algorithm, digits in ((run_dir / "checkpoint_last.pt", "xxh3-128", 32), (old, "sha256", 64)):
        assert main(["ckpt", "verify", str(path)]) == 0
        out = capsys.readouterr().out
        assert re.search(rf"^OK   {re.escape(str(path))}: {algorithm}:[0-9a-f]{{16}}\.\.\. epoch", out, re.MULTILINE)
        assert main(["ckpt", "inspect", str(path)]) == 0
        assert re.search(rf"integrity: OK \({algorithm}:[0-9a-f]{{{digits}}}\)", capsys.readouterr().out)
        assert main(["ckpt", "inspect", str(path), "--json"]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["digest"].startswith(f"{algorithm}:") and summary["digest"] in summary["integrity"]
    assert summary["format_version"] == 1


def test_verify_lists_a_checkpoint_whose_name_is_not_utf8_even_when_stdout_is_strict(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tools/torture.py adversary: under a UTF-8 locale such as en_US.UTF-8 (stdout ``strict``),
    a copy named ``checkpoint_last\\xfd.pt`` beside the run's checkpoints made `ckpt verify` die
    with a UnicodeEncodeError traceback; the name is now printed escaped."""
    shutil.copy(run_dir / "checkpoint_last.pt", os.path.join(os.fsencode(run_dir), b"checkpoint_last\xfd.pt"))
    out = io.BytesIO()
    strict = io.TextIOWrapper(out, encoding="utf-8", errors="strict", write_through=True)
    monkeypatch.setattr(sys, "stdout", strict)
    assert main(["ckpt", "verify", str(run_dir)]) == 0
    assert b"OK   " + os.fsencode(run_dir) + b"/checkpoint_last\\udcfd.pt: " in out.getvalue()
