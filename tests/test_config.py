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
    assert config.gan_epoch == 60 and config.monitor_mode == "min"


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


def test_flags_override_the_file_and_only_given_flags_count_as_set(tmp_path: Path) -> None:
    args = build_parser().parse_args(["train", "--demo", "--epochs", "9", "--run-dir", "runs/x", "--resume"])
    values = explicit_values(args)
    assert values == {"demo": True, "epochs": 9, "save_model_dir": "runs/x", "resume_from_checkpoint": "auto"}


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
