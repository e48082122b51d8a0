"""The config tree: TOML + flags, every invalid field named at once, resume reconciliation."""

from __future__ import annotations

from pathlib import Path

import pytest

from bsrnn.cli.main import build_parser
from bsrnn.cli.train import explicit_values
from bsrnn.config import Config, config_from_dict, read_toml, to_toml
from bsrnn.errors import ConfigError
from bsrnn.training.resume import explicit_fields_of, reconcile


def test_defaults_follow_the_reference_recipe() -> None:
    config = Config()
    assert (config.epochs, config.batch_size, config.init_lr, config.decay_epoch, config.cut_len) == (120, 6, 1e-3, 10, 32000)
    assert config.loss_weights == [0.5, 0.5, 1.0]
    assert (config.num_channel, config.num_layer, config.ndf, config.grad_clip, config.lr_decay) == (64, 5, 16, 5.0, 0.98)
    assert config.gan_epoch == 60
    # The best checkpoint is chosen by validation PESQ: the validation loss gains the GAN term at epoch 60.
    assert (config.monitor, config.monitor_mode) == ("pesq", "max")


def test_every_invalid_field_is_reported_together_by_name() -> None:
    with pytest.raises(ConfigError) as raised:
        Config(epochs=0, batch_size=-1, monitor="accuracy", loss_weights=[1.0], load_checkpoint_type="newest")
    message = str(raised.value)
    for field in ("epochs", "batch_size", "monitor", "loss_weights", "load_checkpoint_type"):
        assert f"{field}: expected" in message


def test_unknown_toml_keys_are_rejected_with_their_names(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("epochs = 3\nlearning_rate = 0.1\nnum_chanel = 8\n")
    with pytest.raises(ConfigError, match="learning_rate, num_chanel"):
        read_toml(path)


def test_the_resolved_config_round_trips_through_toml(tmp_path: Path) -> None:
    config = Config(epochs=7, loss_weights=[0.3, 0.3, 1.0], data_dir="/data/vbd")
    path = tmp_path / "config.toml"
    path.write_text(to_toml(config))
    assert config_from_dict(read_toml(path)) == config


def test_only_given_flags_count_as_set() -> None:
    args = build_parser().parse_args(["train", "--demo", "--epochs", "9", "--run-dir", "runs/x", "--resume"])
    values = explicit_values(args)
    assert values == {"demo": True, "epochs": 9, "save_model_dir": "runs/x", "resume_from_checkpoint": "auto"}


def test_flags_override_the_file_and_the_file_overrides_the_defaults(tmp_path: Path) -> None:
    from bsrnn.cli.train import given_values

    path = tmp_path / "c.toml"
    path.write_text("epochs = 3\nbatch_size = 4\n")
    args = build_parser().parse_args(["train", "--config", str(path), "--epochs", "9"])
    values = given_values(args)
    assert values == {"epochs": 9, "batch_size": 4}
    assert config_from_dict(values).init_lr == Config().init_lr


def test_resume_takes_the_architecture_from_the_checkpoint_unless_set() -> None:
    saved = Config(num_channel=32, num_layer=3, epochs=120, init_lr=1e-3).to_dict()
    resumed = reconcile(Config(epochs=200), {"epochs"}, saved, "ckpt")
    assert (resumed.num_channel, resumed.num_layer, resumed.epochs) == (32, 3, 200)


def test_resume_with_a_different_explicit_architecture_names_every_field() -> None:
    saved = Config(num_channel=64, num_layer=5).to_dict()
    with pytest.raises(ConfigError) as raised:
        reconcile(Config(num_channel=32, num_layer=2), {"num_channel", "num_layer"}, saved, "ckpt")
    assert "num_channel: checkpoint 64, config 32" in str(raised.value)
    assert "num_layer: checkpoint 5, config 2" in str(raised.value)


def test_invocation_fields_never_come_from_the_checkpoint() -> None:
    saved = Config(max_steps=5, save_model_dir="old/place", device="cuda").to_dict()
    resumed = reconcile(Config(save_model_dir="new/place"), {"save_model_dir"}, saved, "ckpt")
    assert resumed.max_steps is None and resumed.save_model_dir == "new/place" and resumed.device == "auto"


def test_the_python_api_treats_non_default_fields_as_set() -> None:
    assert explicit_fields_of(Config(epochs=200, data_dir="/d")) == {"epochs", "data_dir"}


# ----------------------------------------------------------------------------- ranges and types
@pytest.mark.parametrize("changes", [
    {"init_lr": float("inf")}, {"init_lr": float("nan")}, {"init_lr": 0.0},
    {"lr_decay": 0.0}, {"lr_decay": 1.5}, {"lr_decay": float("nan")},
    {"grad_clip": float("inf")}, {"grad_clip": 0},
    {"loss_weights": [0.5, float("inf"), 1.0]}, {"loss_weights": [0.5, float("nan"), 1.0]},
    {"loss_weights": [0.5, -0.1, 1.0]}, {"loss_weights": [True, 0.5, 1.0]},
    {"loss_weights": [0, 0, 0]}, {"loss_weights": [0.0, 0.0, 0.0]},  # nothing to learn from
    {"seed": -1}, {"seed": 2**63}, {"seed": 2**64},  # beyond TOML's integers and torch's seeds
])
def test_non_finite_and_out_of_range_numbers_are_refused_by_name(changes: dict) -> None:
    (name,) = changes
    with pytest.raises(ConfigError, match=f"{name}: expected"):
        Config(**changes)


def test_the_edges_of_the_ranges_are_accepted() -> None:
    config = Config(lr_decay=1.0, init_lr=1, loss_weights=[0, 0, 1], grad_clip=1e-6, seed=2**63 - 1)
    assert config.lr_decay == 1.0


def test_every_field_is_type_checked() -> None:
    """A value of no sensible type must be refused for every field, by name (no traceback later)."""
    from dataclasses import fields

    for spec in fields(Config):
        with pytest.raises(ConfigError, match=f"{spec.name}: expected"):
            Config(**{spec.name: object()})


def test_wrong_types_in_a_toml_file_are_reported_together(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('data_dir = 5\nsave_model_dir = 1\ndevice = 3\nmonitor = ["pesq"]\nepochs = true\n'
                    'resume_from_checkpoint = 2.5\nseed = 1.0\ninit_lr = inf\n')
    with pytest.raises(ConfigError) as raised:
        config_from_dict(read_toml(path), str(path))
    message = str(raised.value)
    for expected in ("data_dir: expected a dataset folder path (a non-empty string) or unset, found 5",
                     "save_model_dir: expected a run directory path", "device: expected", "monitor: expected",
                     "epochs: expected a positive integer, found True", "resume_from_checkpoint: expected",
                     "seed: expected an integer from 0 to 9223372036854775807 (2**63 - 1), found 1.0", "init_lr: expected a finite number > 0"):
        assert expected in message


def test_cut_len_below_the_minimum_is_refused() -> None:
    from bsrnn.config import MIN_CUT_LEN

    with pytest.raises(ConfigError, match=f"cut_len: expected an integer >= {MIN_CUT_LEN}"):
        Config(cut_len=MIN_CUT_LEN - 1)


def test_the_minimum_cut_len_trains_one_step_and_one_sample_less_cannot() -> None:
    """The documented minimum is what really trains: the discriminator's four stride-2 convolutions."""
    import numpy as np
    import torch

    from bsrnn.config import MIN_CUT_LEN
    from bsrnn.metrics.pesq_pool import PesqPool
    from bsrnn.training.distributed import DistributedContext
    from bsrnn.training.steps import train_step, validate
    from bsrnn.training.builders import build_networks

    nets = build_networks(Config(num_channel=4, num_layer=1, ndf=4, cut_len=MIN_CUT_LEN), torch.device("cpu"))
    rng = np.random.default_rng(0)

    def crops(length: int) -> tuple[torch.Tensor, torch.Tensor]:
        clean = (0.3 * rng.standard_normal((2, length))).astype(np.float32)
        noise = (0.05 * rng.standard_normal((2, length))).astype(np.float32)
        return torch.from_numpy(clean), torch.from_numpy(clean + noise)

    with PesqPool(workers=0) as pool:
        clean, noisy = crops(MIN_CUT_LEN)
        result = train_step(nets, clean, noisy, use_gan=True, loss_weights=[0.5, 0.5, 1.0], grad_clip=5.0,
                            pesq_pool=pool, context=DistributedContext())
        assert not result.nonfinite and np.isfinite(result.values["loss"])
        sums = validate(nets, [crops(MIN_CUT_LEN)], use_gan=True, loss_weights=[0.5, 0.5, 1.0], pesq_pool=pool,
                        device=torch.device("cpu"))
        assert np.isfinite(sums["loss"])
        with pytest.raises(RuntimeError, match="Kernel size can't be greater"):
            train_step(nets, *crops(MIN_CUT_LEN - 1), use_gan=True, loss_weights=[0.5, 0.5, 1.0], grad_clip=5.0,
                       pesq_pool=pool, context=DistributedContext())


# ----------------------------------------------------------------------------- keys and files
def test_unknown_keys_get_did_you_mean_suggestions(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('num_chanel = 8\nrun_dir = "runs/x"\ninit-lr = 0.1\nbatchsize = 4\n[train]\nepochs = 3\n')
    with pytest.raises(ConfigError) as raised:
        read_toml(path)
    message = str(raised.value)
    assert "unknown config key(s) batchsize, init-lr, num_chanel, run_dir, train." in message
    for hint in ("num_chanel -> num_channel", "run_dir -> save_model_dir", "init-lr -> init_lr",
                 "batchsize -> batch_size", "[train] is a table: write its keys at the top level"):
        assert hint in message
    assert "\n" not in message


def test_a_config_path_that_is_a_folder_or_binary_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected a TOML file, found a folder"):
        read_toml(tmp_path)
    binary = tmp_path / "checkpoint_last.pt"
    binary.write_bytes(b"PK\x03\x04\x14\x00\x00\x00\x08\x00\x9c\xff\xfe")
    with pytest.raises(ConfigError, match=r"expected a TOML text file \(UTF-8\), found binary data"):
        read_toml(binary)
    with pytest.raises(ConfigError, match="found nothing at that path"):
        read_toml(tmp_path / "missing.toml")
    with_bom = tmp_path / "bom.toml"
    with_bom.write_bytes("\ufeffepochs = 3\n".encode())
    assert read_toml(with_bom) == {"epochs": 3}


def test_a_config_is_a_frozen_value() -> None:
    import dataclasses

    config = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 3  # type: ignore[misc]
    assert config.replace(epochs=3).epochs == 3 and config.epochs == 120


def test_an_old_runs_config_toml_with_a_retired_key_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("epochs = 3\ninject_nonfinite_steps = []\n")
    assert config_from_dict(read_toml(path)).epochs == 3
    assert "inject" not in to_toml(Config())


def test_every_config_field_is_a_train_flag_whose_help_shows_its_default(capsys: pytest.CaptureFixture) -> None:
    from bsrnn.config import field_names

    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    help_text = capsys.readouterr().out
    for name in field_names():
        flag = {"save_model_dir": "--run-dir", "resume_from_checkpoint": "--resume",
                "load_checkpoint_type": "--load", "async_save": "--sync-save"}.get(name, "--" + name.replace("_", "-"))
        assert flag in help_text, name
    for shown in ("(default: 0.98)", "(default: 5.0)", "(default: 0.5 0.5 1.0)", "(default: 10)"):
        assert shown in help_text
