"""``--amp bf16`` and ``--compile``: they change how forward passes run, never what is saved."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bsrnn.config import Config
from bsrnn.errors import ConfigError, UserError
from bsrnn.metrics.pesq_pool import PesqPool
from bsrnn.training.distributed import DistributedContext
from bsrnn.models.precision import Autocast, bf16_runs_here
from bsrnn.training.steps import Networks, train_step
from bsrnn.training.builders import build_networks
from e2e import TINY, bsrnn, checkpoint

CPU = torch.device("cpu")


def tiny(**changes: object) -> Config:
    return Config(num_channel=4, num_layer=1, ndf=4, cut_len=8000, **changes)


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    t = np.arange(8000) / 16000
    clean = np.stack([0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t) * (1 + np.sin(2 * np.pi * 3 * t))
                      for i in range(2)]).astype(np.float32)
    noisy = (clean + 0.05 * rng.standard_normal(clean.shape)).astype(np.float32)
    return torch.from_numpy(clean), torch.from_numpy(noisy)


def one_step(nets: Networks) -> dict[str, float]:
    clean, noisy = batch()
    torch.manual_seed(1)  # the discriminator's dropout draws from the global stream
    with PesqPool(workers=0) as pool:
        result = train_step(nets, clean, noisy, use_gan=True, loss_weights=[0.5, 0.5, 1.0], grad_clip=5.0,
                            pesq_pool=pool, context=DistributedContext())
    assert not result.nonfinite
    return result.values


def test_amp_accepts_off_and_bf16_and_names_the_field_otherwise() -> None:
    assert tiny(amp="bf16").amp == "bf16"
    with pytest.raises(ConfigError, match="amp: expected 'off' or 'bf16', found 'fp16'"):
        tiny(amp="fp16")
    with pytest.raises(ConfigError, match="compile: expected true or false"):
        tiny(compile="yes")


NO_BF16 = pytest.mark.skipif(not bf16_runs_here("cpu"), reason="this CPU has no bfloat16 LSTM (no AVX512-BF16/AMX)")


def test_amp_bf16_on_a_cpu_without_bfloat16_instructions_is_refused_clearly() -> None:
    if bf16_runs_here("cpu"):
        pytest.skip("this CPU has bfloat16 instructions: nothing to refuse")
    with pytest.raises(UserError, match="expected a processor with bfloat16 instructions"):
        build_networks(tiny(amp="bf16"), CPU)


@NO_BF16
def test_bf16_autocast_runs_both_networks_in_bfloat16_and_keeps_the_saved_state_float32() -> None:
    plain, mixed = build_networks(tiny(), CPU), build_networks(tiny(amp="bf16"), CPU)
    assert isinstance(mixed.run_generator, Autocast) and isinstance(mixed.run_discriminator, Autocast)
    assert plain.run_generator is plain.generator  # the default path is untouched
    spec = torch.stft(batch()[1], 512, 128, window=torch.hann_window(512), return_complex=True)

    with torch.no_grad():
        reference, estimate = plain.run_generator(spec), mixed.run_generator(spec)
    assert estimate.dtype == reference.dtype == torch.complex64
    # Same weights (same seed), a different arithmetic: close, and not equal.
    assert not torch.equal(estimate, reference)
    error = (estimate - reference).abs().max() / reference.abs().max()
    assert 0 < error < 0.05, float(error)

    values = one_step(mixed)
    assert all(np.isfinite(values[key]) for key in ("loss", "disc_loss"))
    for name in ("generator", "discriminator"):
        saved = getattr(mixed, name).state_dict()
        assert saved.keys() == getattr(plain, name).state_dict().keys()
        assert all(tensor.dtype == torch.float32 for tensor in saved.values())
    adam = mixed.optimizer_g.state_dict()["state"]
    assert adam and all(state["exp_avg"].dtype == torch.float32 for state in adam.values())


@pytest.mark.slow
def test_compiled_networks_train_like_the_eager_ones_and_save_plain_state_dicts() -> None:
    eager, compiled = build_networks(tiny(), CPU), build_networks(tiny(compile=True), CPU)
    assert compiled.run_generator is not compiled.generator
    assert compiled.run_discriminator is compiled.discriminator  # see build_networks
    eager_values, compiled_values = one_step(eager), one_step(compiled)

    assert compiled_values["loss"] == pytest.approx(eager_values["loss"], rel=1e-4)
    for name in ("generator", "discriminator"):
        a, b = getattr(eager, name).state_dict(), getattr(compiled, name).state_dict()
        assert a.keys() == b.keys()  # no "_orig_mod." prefix: the file does not know
        for key in a:
            assert torch.allclose(a[key], b[key], rtol=1e-4, atol=1e-5), key


@pytest.mark.slow
@NO_BF16
def test_amp_is_a_flag_of_the_invocation_a_resume_without_it_runs_float32(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    first = bsrnn("train", *TINY, "--run-dir", str(run_dir), "--max-steps", "1", "--amp", "bf16")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Running with bf16 autocast" in first.stdout + first.stderr
    saved = checkpoint(run_dir)
    assert saved["config"]["amp"] == "bf16"  # recorded, for the record
    assert all(t.dtype == torch.float32 for t in saved["model_state_dict"].values())

    resumed = bsrnn("train", *TINY, "--run-dir", str(run_dir), "--resume", "--max-steps", "1")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "Running with" not in resumed.stdout + resumed.stderr
    assert "amp: the checkpoint's run had 'bf16', this invocation 'off'" in resumed.stdout + resumed.stderr
    assert 'amp = "off"' in (run_dir / "config.toml").read_text()
    assert checkpoint(run_dir)["global_step"] == 2
