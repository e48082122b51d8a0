"""`bsrnn ckpt inspect|verify|export` on real files, through the real entry point."""

from __future__ import annotations

import json
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
