"""The causal BSRNN: no mask depends on later frames, and ``train --causal`` is an architecture field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from bsrnn.config import Config
from bsrnn.errors import ConfigError
from bsrnn.models.bands import NUM_BINS
from bsrnn.training.resume import reconcile
from e2e import TINY, bsrnn, checkpoint
from tiny_generator import one_torch_thread, tiny_generator  # noqa: F401  (a fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_no_mask_depends_on_later_frames_in_the_causal_model_and_some_do_in_the_reference() -> None:
    spec = torch.randn(2, NUM_BINS, 40, dtype=torch.complex64)
    changed = spec.clone()
    changed[..., 25:] = torch.randn(2, NUM_BINS, 15, dtype=torch.complex64)
    with torch.no_grad():
        causal, reference = tiny_generator(causal=True), tiny_generator()
        assert torch.equal(causal.mask(spec)[:, :, :25], causal.mask(changed)[:, :, :25])
        assert (reference.mask(spec)[:, :, :25] - reference.mask(changed)[:, :, :25]).abs().max() > 1e-3


def test_a_run_from_before_the_field_resumed_with_causal_is_refused_as_an_architecture_change() -> None:
    """Its checkpoint's config has no ``causal``: it trained the reference network, whose tensors a
    causal model would load without a word."""
    saved = Config(num_channel=8, num_layer=1).to_dict()
    del saved["causal"]
    with pytest.raises(ConfigError, match="causal: checkpoint False, config True"):
        reconcile(Config(num_channel=8, num_layer=1, causal=True), {"causal"}, saved, "ckpt")
    assert reconcile(Config(num_channel=8, num_layer=1), set(), saved, "ckpt").causal is False


def test_the_causal_model_has_the_reference_tensors_and_the_reference_is_unchanged() -> None:
    causal, reference = tiny_generator(causal=True), tiny_generator()
    assert {k: v.shape for k, v in causal.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}
    assert causal.config()["causal"] is True and reference.config()["causal"] is False


@pytest.fixture(scope="module")
def causal_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``train --causal`` on the demo set, stopped after 2 steps (shared: tests copy it to change it)."""
    run = tmp_path_factory.mktemp("causal") / "run"
    first = bsrnn("train", *TINY, "--causal", "--max-steps", "2", "--run-dir", str(run))
    assert first.returncode == 0, first.stdout + first.stderr
    return run


@pytest.mark.slow
def test_train_causal_records_it_and_a_resume_without_the_flag_takes_it_from_the_checkpoint(
        causal_run: Path, tmp_path: Path) -> None:
    assert checkpoint(causal_run)["config"]["causal"] is True
    run = tmp_path / "run"
    shutil.copytree(causal_run, run)
    resumed = bsrnn("train", *TINY, "--max-steps", "2", "--run-dir", str(run), "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    saved = checkpoint(run)
    assert saved["config"]["causal"] is True and saved["global_step"] == 4


@pytest.mark.slow
def test_a_resume_that_asks_for_the_other_architecture_is_refused(causal_run: Path) -> None:
    conflict = bsrnn("train", *TINY, "--no-causal", "--max-steps", "2", "--run-dir", str(causal_run), "--resume")
    assert conflict.returncode == 2
    assert "causal: checkpoint True, config False" in conflict.stderr
    assert checkpoint(causal_run)["global_step"] == 2
