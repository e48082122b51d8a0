"""Reconciling the user's config with the checkpoint being resumed, and the resume summary.

Rules (ARCHITECTURE.md, "life of a resume"):
- The checkpoint's config is the base; the ``--config`` file's values and then the flags
  override it. Only fields the user set explicitly count as overrides.
- Architecture fields (``num_channel``, ``num_layer``, ``ndf``) come from the checkpoint when
  not set; set to a different value they are an error naming every differing field.
- Progress (epoch, step, best value) always comes from the checkpoint; free fields (epochs,
  learning rate, batch size, ...) may change, and every change is logged.
- Invocation fields (``max_steps``, the resume source, device, workers) are never taken from a
  checkpoint.
- The recipe: a recipe's values sit below the checkpoint's config (which already holds the
  run's resolved ingredients), so a resume trains on with the run's recipe. A ``--recipe``
  other than the checkpoint's is refused, naming the fields whose values it would change,
  unless ``allow_recipe_change`` says so; then its values replace the run's (file and flags
  still win). A checkpoint from before recipes is a ``reference`` run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from bsrnn import keys
from bsrnn.checkpoint import KeptState, StateMismatchError, nonfinite_tensor_keys
from bsrnn.config import (
    ARCHITECTURE_FIELDS,
    EXECUTION_FIELDS,
    INVOCATION_FIELDS,
    RECIPE_FIELDS,
    Config,
    field_names,
    halfway_gan_start,
    recipe_values,
)
from bsrnn.errors import ConfigError
from bsrnn.models import BSRNN
from bsrnn.training.progress import LEGACY_EPOCH_KEY, saved_progress
from bsrnn.recipes import DEFAULT_RECIPE

log = logging.getLogger(__name__)


def explicit_fields_of(config: Config) -> set[str]:
    """For the Python API: fields whose value differs from the default count as set.

    The default of an ingredient field is its recipe's value (``Config.from_recipe``), so that
    a resume with ``Config.from_recipe(name, ...)`` keeps the run's own values; a recipe other
    than the reference counts as set.
    """
    default = {**Config().to_dict(), **recipe_values(config.recipe)}
    explicit = {key for key, value in config.to_dict().items() if value != default[key]}
    return explicit | ({"recipe"} if config.recipe != DEFAULT_RECIPE else set())


def recipe_change(config: Config, explicit: set[str], checkpoint_config: Mapping[str, Any], source: str) -> bool:
    """Whether this resume switches the run to another recipe; ConfigError if not allowed.

    Refused unless ``allow_recipe_change``, like an architecture change: the message names
    every ingredient whose value the new recipe would change.
    """
    run_recipe = checkpoint_config.get("recipe", DEFAULT_RECIPE)
    if "recipe" not in explicit or config.recipe == run_recipe:
        return False
    if config.allow_recipe_change:
        return True
    defaults = Config().to_dict()
    new_values = recipe_values(config.recipe)
    differing = [
        f"{name}: checkpoint {checkpoint_config.get(name, defaults[name])!r}, {config.recipe} {new_values[name]!r}"
        for name in RECIPE_FIELDS if checkpoint_config.get(name, defaults[name]) != new_values[name]
    ]
    raise ConfigError(
        f"The checkpoint {source} was trained with recipe {run_recipe!r}, not {config.recipe!r}; the recipes "
        f"differ in:\n  " + ("\n  ".join(differing) or "(no values)")
        + f"\nDrop --recipe to train on with {run_recipe!r}, add --allow-recipe-change to continue this run "
        f"with {config.recipe!r} from here, or start a new run in another --run-dir."
    )


# Top-level entries that the resume code reads as tables or as integers.
_TABLES = (keys.CONFIG, *keys.REGISTERED, "monitor")
_INTEGERS = ("epoch", "global_step", "step_in_epoch", "save_sequence")
_PROGRESS_INTEGERS = ("last_completed_epoch", "global_step", "step_in_epoch", "nonfinite_in_a_row", "nonfinite_skipped",
                      "epoch_count")


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_resumable(path: Path | str, payload: Mapping[str, Any]) -> None:
    """Refuse a verified checkpoint that a trainer cannot resume from, naming every problem.

    The digest proves the file is what was written, not that a bsrnn trainer wrote it, nor that
    it is whole: a file loaded, edited and re-saved with ``write_checkpoint`` verifies too. Such
    a file must be treated like a damaged one (named; ``--load auto`` falls back to the other
    file; ``ckpt verify`` fails; it is quarantined, never resumed into a broken run), not fail
    deep inside the resume or, worse, resume: an empty ``progress`` restarted at step 1 while
    the summary said 25, an empty scheduler state restarted the schedule. Checked: the entries
    the resume reads have their types; the config is there; every state the file registers
    that a run needs is a non-empty table; the generator's tensors are exactly those of the
    architecture its config names; the networks' weights are finite. Raises
    ``StateMismatchError`` (a ``CheckpointError``).
    """
    problems = [
        f"{key} is a {type(payload[key]).__name__}, expected a table"
        for key in _TABLES if payload.get(key) is not None and not isinstance(payload[key], Mapping)
    ]
    problems += [
        f"{key} is {payload[key]!r}, expected an integer"
        for key in _INTEGERS if payload.get(key) is not None and not _is_integer(payload[key])
    ]
    if payload.get(keys.CONFIG) is None:
        problems.append(f"{keys.CONFIG} is missing: the run's settings and architecture are unknown")
    registered = payload.get("registered")
    for name in (name for name in keys.REGISTERED if isinstance(registered, list) and name in registered):
        if isinstance(payload.get(name), Mapping) and not payload[name]:
            problems.append(f"{name} is empty")
    progress = payload.get(keys.PROGRESS)
    if isinstance(progress, Mapping) and progress:
        progress = {"last_completed_epoch": progress.get(LEGACY_EPOCH_KEY), **progress}  # records before the name
        problems += [f"progress.{key} is missing" for key in _PROGRESS_INTEGERS if progress.get(key) is None]
        problems += [
            f"progress.{key} is {progress[key]!r}, expected an integer"
            for key in _PROGRESS_INTEGERS if progress.get(key) is not None and not _is_integer(progress[key])
        ]
        if progress.get("epoch_sums") is not None and not isinstance(progress["epoch_sums"], Mapping):
            problems.append("progress.epoch_sums is not a table")
    if not problems:
        problems += _weights_problems(payload)
    if problems:
        raise StateMismatchError(
            f"Checkpoint {path} cannot be resumed from: {'; '.join(problems)}. It was not applied. It was "
            "edited or written by another program; resume from the other checkpoint (--load best|last)."
        )


def _weights_problems(payload: Mapping[str, Any]) -> list[str]:
    """The generator's tensors against the architecture of the file's own config; non-finite weights."""
    problems = []
    generator = payload.get(keys.GENERATOR)
    architecture = {name: payload[keys.CONFIG].get(name, getattr(Config(), name)) for name in ("num_channel", "num_layer")}
    if isinstance(generator, Mapping) and all(_is_integer(value) and value > 0 for value in architecture.values()):
        with torch.device("meta"):
            expected = {name: tuple(t.shape) for name, t in BSRNN(**architecture).state_dict().items()}
        found = {name: tuple(t.shape) for name, t in generator.items() if isinstance(t, torch.Tensor)}
        if found != expected:
            absent = sorted(set(expected) - set(found))
            extra = sorted(set(found) - set(expected))
            shaped = sorted(name for name in set(found) & set(expected) if found[name] != expected[name])
            detail = [f"{len(names)} {what} (e.g. {names[0]})" for names, what in (
                (absent, "tensor(s) missing"), (extra, "tensor(s) not in the model"),
                (shaped, "tensor(s) of another shape")) if names]
            problems.append(f"{keys.GENERATOR} does not match the BSRNN of its config "
                            f"({', '.join(f'{k} {v}' for k, v in architecture.items())}): {', '.join(detail)}")
    for name in keys.NETWORKS:
        if isinstance(payload.get(name), Mapping):
            bad = nonfinite_tensor_keys(payload[name])
            if bad:
                problems.append(f"{name} holds NaN or inf in {len(bad)} tensor(s) (e.g. {bad[0]})")
    return problems


def reconcile(config: Config, explicit: Iterable[str], checkpoint_config: Mapping[str, Any] | None,
              source: str) -> Config:
    """The config to resume with; raise ``ConfigError`` on architecture conflicts."""
    if not checkpoint_config:
        return config
    explicit = set(explicit)
    current = config.to_dict()
    recorded = {**Config().to_dict(), **checkpoint_config}  # a run from before a field trained with its default
    conflicts = [
        f"{name}: checkpoint {recorded[name]}, config {current[name]}"
        for name in ARCHITECTURE_FIELDS
        if name in explicit and recorded[name] != current[name]
    ]
    if conflicts:
        raise ConfigError(
            f"The checkpoint {source} was trained with a different architecture:\n  "
            + "\n  ".join(conflicts)
            + "\nDrop these settings to take them from the checkpoint, or start a new run in another --run-dir."
        )
    if recipe_change(config, explicit, checkpoint_config, source):
        explicit = explicit | set(RECIPE_FIELDS)  # the new recipe's values (file and flags over them)
        log.info("  recipe change on resume: %r -> %r (--allow-recipe-change)",
                 checkpoint_config.get("recipe", DEFAULT_RECIPE), config.recipe)
    known = set(field_names())
    merged = {key: value for key, value in checkpoint_config.items() if key in known}
    defaults = Config().to_dict()
    for key in (*RECIPE_FIELDS, "recipe"):
        # A checkpoint from before a field existed trained with its reference value.
        if key not in merged and key not in explicit:
            merged[key] = defaults[key]
    if merged.get("gan_start_epoch") is None and isinstance(merged.get("epochs"), int):
        # A run from before the GAN start was recorded: it used half of ITS epochs target.
        merged["gan_start_epoch"] = halfway_gan_start(merged["epochs"])
        checkpoint_config = {**checkpoint_config, "gan_start_epoch": merged["gan_start_epoch"]}
    for key in known:
        if key in explicit or key in INVOCATION_FIELDS or key not in merged:
            merged[key] = current[key]
    changed = [
        f"{key}: {checkpoint_config[key]!r} -> {merged[key]!r}"
        for key in sorted(explicit - set(INVOCATION_FIELDS))
        if key in checkpoint_config and checkpoint_config[key] != merged[key]
    ]
    for change in changed:
        log.info("  config change on resume: %s", change)
    for key in EXECUTION_FIELDS:
        if key in checkpoint_config and checkpoint_config[key] != merged[key]:
            flag = "--" + key.replace("_", "-")
            log.info("  %s: the checkpoint's run had %r, this invocation %r (%s is not taken from the "
                     "checkpoint; pass it to keep it)", key, checkpoint_config[key], merged[key], flag)
    return Config(**merged)


def summary_lines(kind: str, path: str, payload: Mapping[str, Any], config: Config,
                  learning_rates: Mapping[str, float], kept: Sequence[KeptState], validation: str = "",
                  start_batch: int | None = None) -> list[str]:
    """The RESUME SUMMARY block: what was loaded, where training continues, the values that matter.

    ``start_batch``: the batch the plan continues the epoch at, where it is not the saved
    ``step_in_epoch`` (another batch size or process count: ``training/plan.py``)."""
    progress = saved_progress(payload)
    epoch = progress.last_completed_epoch
    step_in_epoch = progress.step_in_epoch if start_batch is None else start_batch
    resuming_epoch = progress.current_epoch
    completed = ("none" if epoch < 0 else "1 (epoch 0)" if epoch == 0
                 else f"{epoch + 1} (epochs 0-{epoch})")
    monitor = payload.get("monitor") or {}
    lines = [
        "=" * 70,
        "RESUME SUMMARY:",
        f"  Checkpoint type: {kind}",
        f"  Checkpoint path: {path}",
        f"  Completed epochs: {completed}",
        f"  Resuming from: epoch {resuming_epoch}, step {step_in_epoch} of that epoch "
        f"(global step {progress.global_step})",
        f"  Target epochs: {config.epochs}",
        f"  Remaining epochs: {max(config.epochs - resuming_epoch, 0)}",
        f"  GAN term from epoch: {config.gan_epoch}",
        f"  Best validation loss: {_fmt(payload.get('best_val_loss'))}",
        f"  Last validation loss: {_fmt(payload.get('val_loss'))}",
        f"  Monitored: {monitor.get('name', config.monitor)} ({monitor.get('mode', config.monitor_mode)}), "
        f"best {_fmt(monitor.get('best'))}",
    ]
    if validation:
        lines.append(f"  {validation}")
    for name, rate in learning_rates.items():
        lines.append(f"  Current learning rate ({name}): {rate:.6g}")
    lines += [f"  {state.describe()}" for state in kept]
    lines.append("=" * 70)
    return lines


def _fmt(value: Any) -> str:
    return f"{value:.6f}" if isinstance(value, (int, float)) else "n/a"
