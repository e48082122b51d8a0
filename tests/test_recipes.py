"""Recipes: named presets of the ingredient fields, their place in the precedence, resume across
recipes, optimizer settings on resume, and (end to end) the improved recipe and the best
checkpoint across the GAN start."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bsrnn.checkpoint import CheckpointManager, load_checkpoint
from bsrnn.cli.main import build_parser
from bsrnn.cli.train import config_of, given_values
from bsrnn.config import RECIPE_FIELDS, Config, recipe_values
from bsrnn.errors import ConfigError, UserError
from bsrnn.recipes import read_recipe, recipe_names
from bsrnn.training.resume import explicit_fields_of, reconcile
from bsrnn.training.builders import apply_optimizer_settings, build_networks, make_optimizer

from e2e import TINY, TINY_DEFAULT_MONITOR, bsrnn, checkpoint, events

IMPROVED_CHANGES = {key: value for key, value in recipe_values("improved").items() if value != getattr(Config(), key)}


def _given(*argv: str) -> dict:
    return given_values(build_parser().parse_args(["train", *argv]))


def test_the_reference_recipe_is_todays_default_config_exactly() -> None:
    assert Config.from_recipe("reference") == Config()
    assert config_of({}) == Config()
    assert config_of({"recipe": "reference"}) == Config()
    # Every ingredient is written out, except the GAN start, whose reference value is "unset".
    assert set(read_recipe("reference")) == set(RECIPE_FIELDS) - {"gan_start_epoch"}


def test_the_shipped_recipes_are_reference_and_improved_and_improved_sets_every_ingredient() -> None:
    assert recipe_names() == ("improved", "reference")
    assert set(read_recipe("improved")) == set(RECIPE_FIELDS)
    assert IMPROVED_CHANGES, "the improved recipe must change something"


def test_the_recipe_sits_below_the_config_file_and_the_flags(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("time_loss_weight = 0.5\nepochs = 4\n")
    values = _given("--recipe", "improved", "--config", str(path), "--consistency-loss-weight", "0")
    config = config_of(values)
    assert (config.recipe, config.time_loss_weight, config.consistency_loss_weight, config.epochs) == ("improved", 0.5, 0.0, 4)
    assert config.complex_loss == "compressed_mse" and config.optimizer == "adamw"
    # The recipe's own values are not "set by the user": on resume the checkpoint's win over them.
    assert set(values) == {"recipe", "time_loss_weight", "epochs", "consistency_loss_weight"}
    assert config.recipe_overrides() == ["time_loss_weight: 0.5", "consistency_loss_weight: 0.0"]
    # A recipe's unset GAN start ("half of the epochs") is the recipe's own, not an override.
    assert Config.from_recipe("reference", epochs=4).recipe_overrides() == []


def test_an_unknown_recipe_is_a_config_error_naming_the_recipes() -> None:
    with pytest.raises(ConfigError, match="recipe: expected 'improved' or 'reference', found 'fancy'"):
        Config.from_recipe("fancy")
    with pytest.raises(ConfigError, match="recipe: expected"):
        Config(recipe="fancy")
    with pytest.raises(UserError, match="--recipe: invalid choice: 'fancy'"):
        build_parser().parse_args(["train", "--recipe", "fancy"])


def test_a_resume_keeps_the_runs_own_values_over_any_preset() -> None:
    run = Config.from_recipe("improved", phase_loss_weight=0.1).to_dict()
    for values in ({}, {"recipe": "improved"}):
        resumed = reconcile(config_of(values), set(values), run, "ckpt")
        assert resumed.recipe == "improved" and resumed.phase_loss_weight == 0.1
        assert resumed.complex_loss == "compressed_mse"


def test_a_resume_with_another_recipe_is_refused_naming_the_differing_fields() -> None:
    run = Config().to_dict()
    with pytest.raises(ConfigError) as raised:
        reconcile(config_of({"recipe": "improved"}), {"recipe"}, run, "runs/x/checkpoint_last.pt")
    message = str(raised.value)
    assert "recipe 'reference', not 'improved'" in message and "--allow-recipe-change" in message
    for name in IMPROVED_CHANGES:
        assert f"{name}: checkpoint " in message, name
    assert "complex_loss: checkpoint 'linear_l1', improved 'compressed_mse'" in message
    assert "epochs" not in message


def test_an_explicit_recipe_change_on_resume_takes_the_new_recipe_below_the_flags() -> None:
    run = Config(epochs=10).to_dict()
    values = {"recipe": "improved", "allow_recipe_change": True, "time_loss_weight": 0.0}
    resumed = reconcile(config_of(values), set(values), run, "ckpt")
    assert resumed.recipe == "improved" and resumed.epochs == 10
    assert resumed.complex_loss == "compressed_mse" and resumed.optimizer == "adamw" and resumed.time_loss_weight == 0.0
    back = reconcile(config_of({"recipe": "reference", "allow_recipe_change": True}),
                     {"recipe", "allow_recipe_change"}, resumed.to_dict(), "ckpt")
    assert back.replace(gan_start_epoch=None) == Config(epochs=10, allow_recipe_change=True)


def test_a_checkpoint_from_before_recipes_resumes_as_a_reference_run() -> None:
    old = {key: value for key, value in Config(monitor="val_loss").to_dict().items()
           if key not in (*RECIPE_FIELDS, "recipe", "allow_recipe_change") or key in (
               "loss_weights", "init_lr", "decay_epoch", "lr_decay", "grad_clip", "gan_start_epoch")}
    resumed = reconcile(config_of({}), set(), old, "ckpt")
    assert resumed.replace(gan_start_epoch=None) == Config(monitor="val_loss")  # the run's monitor is kept
    with pytest.raises(ConfigError, match="recipe 'reference', not 'improved'"):
        reconcile(config_of({"recipe": "improved"}), {"recipe"}, old, "ckpt")


def test_the_python_api_counts_only_what_differs_from_the_recipe_as_set() -> None:
    assert explicit_fields_of(Config.from_recipe("improved", epochs=9)) == {"recipe", "epochs"}
    assert explicit_fields_of(Config(epochs=9)) == {"epochs"}


def test_a_restored_optimizer_takes_the_configs_betas_weight_decay_and_kind() -> None:
    model = torch.nn.Linear(2, 2)
    reference, improved = Config(), Config.from_recipe("improved")
    saved = make_optimizer(model.parameters(), reference).state_dict()
    optimizer = make_optimizer(model.parameters(), improved)
    optimizer.load_state_dict(saved)  # brings back the checkpoint's hyper-parameters...
    changes = apply_optimizer_settings(optimizer, improved)  # ...which the config then replaces
    group = optimizer.param_groups[0]
    assert (group["betas"], group["weight_decay"], group["decoupled_weight_decay"]) == ((0.8, 0.99), 0.01, True)
    assert any(change.startswith("betas") for change in changes)
    assert apply_optimizer_settings(optimizer, improved) == []


def test_the_reference_optimizer_is_torchs_default_adam() -> None:
    nets = build_networks(Config(num_channel=4, num_layer=1, ndf=4), torch.device("cpu"))
    default = torch.optim.Adam(nets.generator.parameters(), lr=1e-3).param_groups[0]
    group = nets.optimizer_g.param_groups[0]
    assert type(nets.optimizer_g) is torch.optim.Adam
    assert {k: v for k, v in group.items() if k != "params"} == {k: v for k, v in default.items() if k != "params"}


# ----------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_the_improved_recipe_trains_and_its_run_records_every_ingredient(tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = bsrnn("train", "--demo", "--recipe", "improved", "--num-channel", "4", "--num-layer", "1",
                   "--batch-size", "8", "--cut-len", "8000", "--epochs", "2", "--max-steps", "3", "--pesq-workers", "1",
                   "--log-interval", "1", "--run-dir", str(run))
    assert result.returncode == 0, result.stderr
    saved = checkpoint(run)["config"]
    assert saved["recipe"] == "improved"
    assert {key: saved[key] for key in IMPROVED_CHANGES} == IMPROVED_CHANGES
    assert 'recipe = "improved"' in (run / "config.toml").read_text()
    step = events(run, "step")[-1]
    assert {"loss_time", "loss_consistency", "loss_gan"} <= set(step)
    assert all(isinstance(step[key], float) and step[key] == step[key] for key in ("loss", "loss_time", "disc_loss"))


def test_a_pesq_monitor_moves_past_the_gan_start_where_a_loss_monitor_freezes(tmp_path: Path) -> None:
    """Why PESQ is the default monitor, as values a trainer hands the manager: the validation
    loss jumps when the GAN term joins at epoch 1, so a val_loss monitor keeps epoch 0 forever,
    while validation PESQ, which means the same thing in every epoch, moves the best on."""
    val_loss = [0.30, 0.42, 0.40]  # epoch 1: the GAN term joins, the loss jumps
    val_pesq = [1.30, 1.36, 1.41]
    bests = {}
    for name, metrics in (("val_loss", val_loss), ("pesq", val_pesq)):
        model = torch.nn.Linear(2, 2)
        with CheckpointManager(tmp_path / name, monitor=name, mode=Config(monitor=name).monitor_mode) as manager:
            manager.register("model_state_dict", model)
            for epoch, metric in enumerate(metrics):
                manager.save(metric=metric, values={"epoch": epoch})
        bests[name] = load_checkpoint(tmp_path / name, "best").payload["epoch"]
    assert bests == {"val_loss": 0, "pesq": 2}


@pytest.mark.slow
def test_the_best_checkpoint_follows_validation_pesq_across_the_gan_start(tmp_path: Path) -> None:
    """End to end, on facts that hold on any CPU (no assertion on where training goes): the GAN
    term joins at the epoch fixed for the run, it is in the validation loss only from then on,
    and checkpoint_best.pt is the epoch with the highest validation PESQ, before or after it."""
    run = tmp_path / "run"
    result = bsrnn("train", *TINY_DEFAULT_MONITOR, "--epochs", "3", "--gan-start-epoch", "1", "--run-dir", str(run))
    assert result.returncode == 0, result.stderr
    epochs = events(run, "epoch")
    assert [e["use_gan"] for e in epochs] == [False, True, True]
    assert epochs[0]["val_loss"] == pytest.approx(epochs[0]["val_recon"], rel=1e-6)  # no GAN term before its start
    assert all(e["val_loss"] > e["val_recon"] for e in epochs[1:])  # the GAN term (a squared error) from the start
    best = checkpoint(run, "checkpoint_best.pt")
    assert best["monitor"]["name"] == "pesq" and best["monitor"]["mode"] == "max"
    pesq = [e["val_pesq"] for e in epochs]
    assert best["epoch"] == pesq.index(max(pesq)), f"checkpoint_best.pt is epoch {best['epoch']}: {json.dumps(epochs)}"
    assert best["val_pesq"] == max(pesq)
    assert "best_val_loss" in best and "val_loss" in best  # old names kept


@pytest.mark.slow
def test_resuming_with_another_recipe_is_refused_unless_explicit(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert bsrnn("train", *TINY, "--epochs", "2", "--max-steps", "2", "--run-dir", str(run)).returncode == 0
    refused = bsrnn("train", "--run-dir", str(run), "--resume", "--recipe", "improved", "--max-steps", "1")
    assert refused.returncode == 2
    assert "complex_loss: checkpoint 'linear_l1', improved 'compressed_mse'" in refused.stderr
    assert "--allow-recipe-change" in refused.stderr
    assert checkpoint(run)["global_step"] == 2  # nothing trained
    same = bsrnn("train", "--run-dir", str(run), "--resume", "--recipe", "reference", "--max-steps", "1")
    assert same.returncode == 0, same.stderr
    switched = bsrnn("train", "--run-dir", str(run), "--resume", "--recipe", "improved", "--allow-recipe-change",
                     "--max-steps", "1")
    assert switched.returncode == 0, switched.stderr
    saved = checkpoint(run)
    assert saved["global_step"] == 4 and saved["config"]["recipe"] == "improved"
    assert saved["config"]["complex_loss"] == "compressed_mse" and saved["config"]["num_channel"] == 4
    assert saved["optimizer_state_dict"]["param_groups"][0]["betas"] == (0.8, 0.99)
