"""The run configuration: one dataclass tree, read from TOML, overridden by flags, saved in
every checkpoint as a plain dict and in ``RUN_DIR/config.toml``.

Defaults follow the reference recipe. Every field has a docstring-like ``help`` that the
command line shows (``bsrnn train --help`` and the README's table are generated from it).
Validation reports every invalid field at once, by name.

A named recipe (``bsrnn.recipes``: ``reference``, ``improved``) is a preset of the fields in
``RECIPE_FIELDS``. Its values sit between the defaults and what the user gives:
defaults < recipe < the checkpoint's config (on resume) < the ``--config`` file < flags. The
resolved config records the recipe's name and every ingredient's value, so a run says exactly
what it trained with, and an ablation is a config change.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bsrnn.audio import MIN_CUT_LEN, SAMPLE_RATE
from bsrnn.errors import ConfigError
from bsrnn.recipes import DEFAULT_RECIPE, read_recipe, recipe_names
from bsrnn.text import printable_name

AMP_CHOICES = ("off", "bf16")
MONITOR_CHOICES = ("pesq", "val_loss")




def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# Field annotation (as written, without "| None") -> what a value must be, and the test.
_TYPE_CHECKS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "int": ("an integer", _is_integer),
    "float": ("a finite number", _is_number),
    "bool": ("true or false", lambda value: isinstance(value, bool)),
    "str": ("a string", lambda value: isinstance(value, str)),
    "list[float]": ("a list of finite numbers", lambda value: isinstance(value, list) and all(map(_is_number, value))),
    "list[int]": ("a list of integers", lambda value: isinstance(value, list) and all(map(_is_integer, value))),
    "list[str]": ("a list of strings", lambda value: isinstance(value, list)
                  and all(isinstance(item, str) for item in value)),
}


def _type_problem(annotation: str, value: Any) -> str | None:
    """What ``value`` should have been for a field annotated ``annotation``, or None if it fits.

    An annotation missing from ``_TYPE_CHECKS`` is not checked here (a test requires every
    field's annotation to be listed, so a new kind of field cannot slip through unnoticed).
    """
    base = annotation.removesuffix(" | None")
    if (base != annotation and value is None) or base not in _TYPE_CHECKS:
        return None
    expected, fits = _TYPE_CHECKS[base]
    return None if fits(value) else expected + (" or unset" if base != annotation else "")


ROLES: dict[str, str] = {
    "architecture": "defines the networks' shapes: on resume it must agree with the checkpoint",
    "invocation": "describes one invocation, never taken from (or meaningful in) a checkpoint; the run "
                  "directory is where this invocation writes, so a copied or moved run resumes in place, and "
                  "tensorboard says how this invocation reports, like workers",
    "execution": "an invocation field that says how this machine computes, like device and workers: a run "
                 "trained on a GPU with --amp bf16 may be resumed on a CPU without it (a resume that differs "
                 "says so)",
    "recipe": "the training objective and optimisation: what a recipe may set (everything else, data, budget, "
              "architecture, machine, is the user's)",
}
"""What a field's ``role`` means. A field without one is a run field: the checkpoint's value
unless given again."""

Check = tuple[Callable[[Any], bool], str]
"""A range or form check of a value of the right type, and the expectation its message states."""
POSITIVE: Check = (lambda value: value > 0, "a positive integer")
POSITIVE_OR_UNSET: Check = (lambda value: value > 0, "a positive integer or unset")
NON_NEGATIVE: Check = (lambda value: value >= 0, "an integer >= 0")
WEIGHT: Check = (lambda value: value >= 0, "a finite number >= 0 (0: off)")


def _field(default: Any, help: str, *, choices: tuple[str, ...] | None = None, role: str | None = None,
           check: Check | None = None, metavar: str | None = None, flag: str | None = None) -> Any:
    """A config field and every fact about it, in one place: its default, help text, allowed
    values (``choices``) or range (``check``), its ``role`` (``ROLES``), and how its flag is
    spelt (``flag``: a name other than the field's; ``metavar``). Everything else (the role
    tuples, the range checks, the command line, the README table) is derived from these."""
    if role is not None and role not in ROLES:
        raise ValueError(f"role {role!r}: expected one of {', '.join(ROLES)}")
    metadata: dict[str, Any] = {"help": help, "role": role, "check": check, "metavar": metavar, "flag": flag}
    if choices is not None:
        metadata["choices"] = choices
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def halfway_gan_start(epochs: int) -> int:
    """The reference recipe's GAN start: the first epoch of the second half of ``epochs``.

    A run fixes it when it starts (``Config.with_gan_start_fixed``); a checkpoint from before the
    start was recorded used this of its own ``epochs`` (``resume.reconcile``).
    """
    return (epochs + 1) // 2


MAX_SEED = 2**63 - 1
"""The largest seed: a TOML integer (``config.toml``) is 64-bit signed, and torch's seeds stop at 2**64 - 1."""


@dataclass(kw_only=True, frozen=True)
class Config:
    """Everything that defines a training run. Field names are the TOML keys and flags.

    Frozen: a config is a value. ``replace`` makes a changed copy, so no code can change a
    run's config behind the checkpoint that records it.
    """

    recipe: str = _field(
        DEFAULT_RECIPE, "training recipe (RECIPES.md): a preset of the loss, GAN and optimizer fields, "
        "below the config file and flags", choices=recipe_names(),
        metavar="NAME",
    )
    allow_recipe_change: bool = _field(
        False, "on resume, accept a --recipe other than the checkpoint's: its values replace the run's",
        role="invocation",
    )
    epochs: int = _field(
        120, "total number of epochs to reach (a target, not a count to add)",
        check=POSITIVE, metavar="N",
    )
    batch_size: int = _field(6, "training batch size (per process under DDP)", check=POSITIVE, metavar="N")
    log_interval: int = _field(500, "print and log training losses every N steps", check=POSITIVE)
    log_seconds: float = _field(
        60.0, "also print and log training losses, steps/s and ETA at least every N seconds (0: by steps only)",
        check=(lambda value: value >= 0, "a finite number >= 0 (0: log by steps only)"),
    )
    tensorboard: bool = _field(
        False, "also write TensorBoard logs to RUN_DIR/tensorboard/: the logged training values, learning "
        "rates, steps/s, PESQ wait, each epoch's validation values, and audio and spectrograms of 3 fixed "
        "validation utterances (needs the tensorboard package: pip install tensorboard; not kept on resume: pass it again)",
        role="invocation",
    )
    lr_schedule: str = _field(
        "step", "learning-rate schedule of both optimizers, stepped every epoch: 'step' (x lr_decay every "
        "decay_epoch epochs) or 'cosine' (half cosine from init_lr to 0 at epochs)", choices=("step", "cosine"),
        role="recipe",
    )
    decay_epoch: int = _field(
        10, "StepLR step size in epochs, for both optimizers (lr_schedule 'step')",
        role="recipe", check=POSITIVE,
    )
    lr_decay: float = _field(
        0.98, "StepLR gamma, for both optimizers (lr_schedule 'step')",
        role="recipe", check=(lambda value: 0 < value <= 1, "a finite number in (0, 1] (e.g. 0.98; 1: no decay)"),
    )
    init_lr: float = _field(
        1e-3, "initial learning rate of the generator and the discriminator",
        role="recipe", check=(lambda value: value > 0, "a finite number > 0 (e.g. 1e-3)"), metavar="LR",
    )
    cut_len: int = _field(2 * SAMPLE_RATE, f"training crop length in samples at 16 kHz (at least {MIN_CUT_LEN})",
        check=(lambda value: value >= MIN_CUT_LEN, f"an integer >= {MIN_CUT_LEN} (0.12 s: 16 STFT frames, the fewest the discriminator's "
                   f"four stride-2 convolutions take; 32000 is 2 s)"), metavar="SAMPLES",
    )
    loss_weights: list[float] = _field([0.5, 0.5, 1.0], "weights of [complex L1, magnitude L1, GAN] losses",
        role="recipe", check=(lambda value: len(value) == 3 and all(weight >= 0 for weight in value) and any(value),
           "three finite numbers >= 0, not all 0 (a generator with no loss learns nothing), for complex L1, "
           "magnitude L1 and GAN (e.g. [0.5, 0.5, 1.0])"), metavar="W",
    )
    gan_start_epoch: int | None = _field(
        None, "epoch (0-based) from which the generator loss includes the GAN term (default: half of "
        "epochs, fixed when the run starts: raising epochs later never moves it)",
        role="recipe", check=(lambda value: value >= 0, "an integer >= 0 or unset"), metavar="EPOCH",
    )
    grad_clip: float = _field(
        5.0, "gradient norm clipping of both networks",
        role="recipe", check=(lambda value: value > 0, "a finite number > 0 (e.g. 5.0)"),
    )
    complex_loss: str = _field(
        "linear_l1", "complex spectrum loss (weight loss_weights[0]): 'linear_l1' or 'compressed_mse' "
        "(on spectra with compressed magnitudes)", choices=("linear_l1", "compressed_mse"),
        role="recipe",
    )
    magnitude_loss: str = _field(
        "l1", "compressed magnitude loss (weight loss_weights[1]): 'l1' or 'mse'", choices=("l1", "mse"),
        role="recipe",
    )
    linear_loss_weight: float = _field(
        0.0, "weight of an L1 on linear complex spectra beside the complex loss (the reference's complex term; "
        "it weights the loud, speech-dominated bins)",
        role="recipe", check=WEIGHT,
    )
    phase_loss_weight: float = _field(
        0.0, "weight of the anti-wrapping phase loss: instantaneous phase, group delay, instantaneous frequency",
        role="recipe", check=WEIGHT,
    )
    phase_loss_weighting: str = _field(
        "uniform", "how the phase loss averages over bins: 'uniform' (MP-SENet's mean) or 'magnitude' (weighted by "
        "the clean magnitude, so that quiet bins, whose phase is noise, count little)", choices=("uniform", "magnitude"),
        role="recipe",
    )
    time_loss_weight: float = _field(0.0, "weight of the waveform L1 loss", role="recipe", check=WEIGHT)
    consistency_loss_weight: float = _field(
        0.0, "weight of the consistency loss: STFT of the enhanced waveform vs the enhanced spectrum",
        role="recipe", check=WEIGHT,
    )
    compress_factor: float = _field(
        0.3, "power-law exponent of the compressed magnitudes (losses, discriminator input)",
        role="recipe", check=(lambda value: 0 < value <= 1, "a finite number in (0, 1] (e.g. 0.3; 1: no compression)"),
    )
    pcs_target: bool = _field(
        False, "train towards perceptually contrast-stretched clean spectra (Chao et al. 2022; at the clean's "
        "energy): the generator learns the contrast that enhance --pcs would add afterwards; the discriminator "
        "and PESQ still use the real clean",
        role="recipe",
    )
    metric_target: str = _field(
        "reference", "discriminator's PESQ target: 'reference' (PESQ+0.5)/5 or 'normalized' (PESQ-1)/3.5",
        choices=("reference", "normalized"),
        role="recipe",
    )
    disc_noisy_term: str = _field(
        "enhanced", "discriminator's third term: 'enhanced' D(est, noisy), 'clean' D(clean, noisy), or 'off'",
        choices=("enhanced", "clean", "off"),
        role="recipe",
    )
    optimizer: str = _field(
        "adam", "optimizer of both networks: 'adam' or 'adamw'", choices=("adam", "adamw"),
        role="recipe",
    )
    adam_betas: list[float] = _field([0.9, 0.999], "Adam/AdamW betas of both optimizers",
        role="recipe", check=(lambda value: len(value) == 2 and all(0 <= beta < 1 for beta in value),
           "two numbers in [0, 1) (e.g. [0.9, 0.999])"), metavar="BETA",
    )
    weight_decay: float = _field(
        0.0, "weight decay of both optimizers (decoupled with adamw)",
        role="recipe", check=WEIGHT,
    )
    data_dir: str | None = _field(
        None, "dataset root (DATA/train|test/clean|noisy or VoiceBank+DEMAND names)",
        check=(lambda value: value.strip() != "", "a dataset folder path (a non-empty string) or unset"),
    )
    demo: bool = _field(False, "train on the built-in generated demo set instead of data_dir")
    valid_speakers: list[str] = _field(
        [], "speakers held out of the training split to validate on (a name's part before the first '_': "
        "p226 for p226_001), e.g. p226,p287; default: see valid_fraction",
        check=(lambda value: all(item.strip() and "," not in item for item in value),
           "a list of speaker names (e.g. ['p226', 'p287'])"), metavar="S1,S2",
    )
    valid_fraction: float = _field(
        0.0, "fraction of the training split held out to validate on, chosen by a hash of each name (0: the "
        "default: the data's valid/ folder, else prepare.json's speakers, else p226,p287 when present, else 0.05)",
        check=(lambda value: 0 <= value < 1, "a number in [0, 1) (e.g. 0.05; 0: the default rule)"),
    )
    validation_length: str = _field(
        "full", "what a new run validates on: 'full' (whole utterances, one at a time, as the test is scored) or "
        "'crops' (fixed cut_len crops, batched: the reference's, faster); a resumed run keeps its own",
        choices=("full", "crops"),
    )
    allow_validation_change: bool = _field(
        False, "on resume, accept a validation set other than the run's (best-so-far values then mix two sets)",
        role="invocation",
    )
    save_model_dir: str = _field(
        "runs/bsrnn", "run directory: checkpoints, config.toml, metrics.jsonl, train.log",
        role="invocation", check=(lambda value: value.strip() != "", "a run directory path (a non-empty string)"), metavar="DIR", flag="run_dir",
    )
    resume_from_checkpoint: str | None = _field(
        None, "run directory to resume from; 'auto' = save_model_dir if it holds a checkpoint",
        role="invocation", check=(lambda value: value.strip() != "",
           "'auto' or a run directory or checkpoint path (a non-empty string), or unset"), flag="resume",
    )
    load_checkpoint_type: str = _field(
        "auto", "which checkpoint to resume from: auto, last or best",
        role="invocation", choices=("auto", "last", "best"), flag="load",
    )
    num_channel: int = _field(64, "BSRNN feature channels N", role="architecture", check=POSITIVE)
    num_layer: int = _field(5, "BSRNN time/band layer pairs L", role="architecture", check=POSITIVE, metavar="L")
    causal: bool = _field(
        False, "causal BSRNN: cumulative instead of whole-utterance normalisation, so each frame's output "
        "depends on the past and one 8 ms frame ahead only; it can run as a stream (`bsrnn enhance --stream`, "
        "40 ms latency). Not the reference's network",
        role="architecture",
    )
    ndf: int = _field(16, "discriminator base channels", role="architecture", check=POSITIVE)
    monitor: str = _field(
        "pesq", "metric that selects checkpoint_best.pt: pesq (validation PESQ, max) or val_loss (min; it "
        "includes the GAN term, so it jumps when that starts)",
        choices=MONITOR_CHOICES,
    )
    seed: int = _field(
        0, "seed of every random stream (shuffle, crops, initialisation, dropout)",
        check=(lambda value: 0 <= value <= MAX_SEED, f"an integer from 0 to {MAX_SEED} (2**63 - 1)"), metavar="S",
    )
    device: str = _field("auto", "cpu, cuda or auto",
        role="invocation", check=(lambda value: value in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", value) is not None,
           "'cpu', 'cuda', 'cuda:N' or 'auto'"),
    )
    save_every_steps: int = _field(
        0, "also save checkpoint_last.pt every N steps (0: only at epoch ends)",
        check=NON_NEGATIVE,
    )
    max_steps: int | None = _field(
        None, "stop this invocation after N training steps (saving last)",
        role="invocation", check=POSITIVE_OR_UNSET,
    )
    until_step: int | None = _field(
        None, "stop when the run's global step reaches N (saving last); kept with the run like --epochs, so "
        "a requeue loop that repeats one command stops at step N, where --max-steps would go N further per restart",
        check=POSITIVE_OR_UNSET,
    )
    workers: int = _field(0, "data loading worker processes", role="invocation", check=NON_NEGATIVE)
    pesq_workers: int = _field(
        2, "PESQ worker processes for the discriminator (0: in the training process)",
        check=NON_NEGATIVE,
    )
    delayed_discriminator: bool = _field(
        False, "train the discriminator one step late, on the previous batch and its PESQ, so that a step "
        "never waits for PESQ (for a generator faster than PESQ, e.g. on a GPU; a change of the reference's "
        "semantics, and the run's first step does not update the discriminator)"
    )
    max_nonfinite_steps: int = _field(
        10, "stop after this many consecutive steps with a NaN/inf loss",
        check=POSITIVE,
    )
    async_save: bool = _field(True, "write checkpoints in a background thread")
    amp: str = _field(
        "off", "mixed precision: 'bf16' runs both networks' forward passes under bfloat16 autocast "
        "(CUDA, or a CPU with bfloat16 instructions: see BENCHMARKS.md); 'off' keeps float32",
        role="execution", choices=AMP_CHOICES,
    )
    compile: bool = _field(
        False, "run the generator through torch.compile (the first steps compile; its LSTMs, most of the "
        "time, stay eager: see BENCHMARKS.md)",
        role="execution",
    )
    cache_audio: bool = _field(
        False, "decode the training set once and keep it in memory (16-bit files as int16: about 2.2 GB, "
        "clean and noisy, for VoiceBank+DEMAND's 11,572 pairs, per process); data-loading workers share it",
        role="execution",
    )

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ConfigError("Invalid config:\n" + "\n".join(f"  {problem}" for problem in problems))

    def problems(self) -> list[str]:
        """Every invalid field, as 'field: expected ..., found ...'.

        Every field's type is checked against its annotation, so that a TOML value of the wrong
        type (``data_dir = 5``, ``epochs = true``, ``init_lr = inf``) is reported here by name
        instead of failing later with a traceback; ranges and choices are then checked on values
        of the right type. A message states the whole expectation, range included.
        """
        rules: dict[str, Check] = {}
        for spec in dataclasses.fields(self):
            choices = spec.metadata.get("choices")
            if choices is not None:
                rules[spec.name] = (lambda value, allowed=choices: value in allowed,
                                    " or ".join(repr(choice) for choice in choices))
            elif spec.metadata.get("check") is not None:
                rules[spec.name] = spec.metadata["check"]

        problems = []
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            ok, expected = rules.get(spec.name, (None, None))
            type_expected = _type_problem(str(spec.type), value)
            if type_expected is not None:
                problems.append(f"{spec.name}: expected {expected or type_expected}, found {value!r}")
            elif ok is not None and value is not None and not ok(value):
                problems.append(f"{spec.name}: expected {expected}, found {value!r}")
        return problems

    @property
    def monitor_mode(self) -> str:
        return "min" if self.monitor == "val_loss" else "max"

    @property
    def gan_epoch(self) -> int:
        """First epoch whose generator loss has the GAN term (reference: epoch >= epochs / 2)."""
        return self.gan_start_epoch if self.gan_start_epoch is not None else halfway_gan_start(self.epochs)

    def with_gan_start_fixed(self) -> Config:
        """This config with the GAN start as an absolute epoch, as a run records it when it starts.

        Left unset, the start would follow ``epochs``, and training more (a larger ``epochs`` on
        resume) would switch the GAN term off again for epochs that already had it.
        """
        return self if self.gan_start_epoch is not None else self.replace(gan_start_epoch=self.gan_epoch)

    @classmethod
    def from_recipe(cls, name: str = DEFAULT_RECIPE, **changes: Any) -> Config:
        """A config with recipe ``name``'s values, then ``changes`` over them (the Python form of
        ``bsrnn train --recipe NAME --field value``). ``Config(recipe=...)`` alone only records the
        name: every other field keeps the value given or its default."""
        return config_from_dict({**recipe_values(name), "recipe": name, **changes}, source=f"recipe {name!r}")

    def recipe_overrides(self) -> list[str]:
        """The ingredient fields whose values differ from this config's recipe, as 'field: value'."""
        preset, current = recipe_values(self.recipe), self.to_dict()
        half = self.replace(gan_start_epoch=None).gan_epoch
        for values in (preset, current):  # unset is "half of epochs", as a run fixes it
            if values["gan_start_epoch"] is None:
                values["gan_start_epoch"] = half
        return [f"{key}: {current[key]!r}" for key in RECIPE_FIELDS if current[key] != preset[key]]

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (safe for ``torch.load(weights_only=True)`` and TOML)."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


def recipe_values(name: str) -> dict[str, Any]:
    """Every field of ``RECIPE_FIELDS`` as recipe ``name`` sets it (a field it leaves out: the
    default, i.e. the reference's). ConfigError for an unknown name or a bad recipe file."""
    names = recipe_names()
    if name not in names:
        raise ConfigError(
            f"recipe: expected {' or '.join(repr(known) for known in names)}, found {name!r}. "
            "Fix: pass one of those names (RECIPES.md describes them)"
        )
    values = read_recipe(name)
    extra = sorted(set(values) - set(RECIPE_FIELDS))
    if extra:
        raise ConfigError(f"recipe {name!r} sets {', '.join(extra)}, which a recipe may not set "
                          f"(only {', '.join(RECIPE_FIELDS)})")
    defaults = Config().to_dict()
    resolved = {key: values.get(key, defaults[key]) for key in RECIPE_FIELDS}
    config_from_dict(resolved, source=f"recipe {name!r}")  # every value checked, by name
    return resolved


def fields_with_role(*roles: str) -> tuple[str, ...]:
    """The names of the fields whose ``role`` is one of ``roles``, in declaration order."""
    return tuple(spec.name for spec in dataclasses.fields(Config) if spec.metadata.get("role") in roles)


ARCHITECTURE_FIELDS = fields_with_role("architecture")
INVOCATION_FIELDS = fields_with_role("invocation", "execution")
EXECUTION_FIELDS = fields_with_role("execution")
RECIPE_FIELDS = fields_with_role("recipe")
FLAG_NAMES = {spec.name: spec.metadata["flag"] for spec in dataclasses.fields(Config) if spec.metadata.get("flag")}
"""Fields whose flag has another name (``save_model_dir``: ``--run-dir``), as flag names with underscores."""


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(Config)]


RETIRED_KEYS = {
    "inject_nonfinite_steps": "a testing aid, now injected from outside the trainer (tools/nonfinite_bsrnn.py)",
}
"""Keys that config files written by earlier versions may hold; read and ignored, never written."""


def without_retired_keys(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` less the retired keys, so that an old run's config.toml still reads."""
    return {key: value for key, value in values.items() if key not in RETIRED_KEYS}


def check_keys(values: Mapping[str, Any], source: str) -> None:
    """Refuse keys that are not config fields, suggesting the field each one probably meant.

    A misspelt key must fail rather than be ignored: the run would silently use the default.
    """
    known = field_names()
    unknown = sorted(set(values) - set(known), key=str)
    if not unknown:
        return
    hints = []
    for key in unknown:
        spelled = str(key).replace("-", "_").lower()
        guess = spelled if spelled in known else {flag: name for name, flag in FLAG_NAMES.items()}.get(spelled)
        if guess is None:
            close = difflib.get_close_matches(spelled, known, n=1, cutoff=0.6)
            guess = close[0] if close else None
        if guess is not None:
            hints.append(f"{key} -> {guess}")
        elif isinstance(values[key], Mapping):
            hints.append(f"[{key}] is a table: write its keys at the top level, without the [{key}] line")
    message = f"{source}: unknown config key(s) {', '.join(map(str, unknown))}."
    if hints:
        message += f" Did you mean: {'; '.join(hints)}?"
    raise ConfigError(f"{message} Fix: rename or remove them. Known keys: {', '.join(known)}")


def config_from_dict(values: Mapping[str, Any], source: str = "config") -> Config:
    """A Config from plain values; unknown keys and invalid values fail together, by name."""
    values = without_retired_keys(values)
    check_keys(values, source)
    try:
        return Config(**values)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None


def read_toml(path: Path | str) -> dict[str, Any]:
    """The keys of a TOML config file, checked against the fields; ConfigError if it cannot be used.

    The file is decoded here rather than by ``tomllib.load`` so that a folder, an unreadable
    file or a binary file (a checkpoint passed by mistake) is named as such, not a traceback.
    A UTF-8 byte-order mark (Windows editors write one) is accepted.
    """
    path = Path(path)
    fix = "Fix: pass --config the path of a TOML text file of config keys (e.g. a run's config.toml)"
    if path.is_dir():
        raise ConfigError(f"Config file {path}: expected a TOML file, found a folder. {fix}")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"Config file {path}: expected a TOML file, found nothing at that path. {fix}") from None
    except OSError as error:
        raise ConfigError(
            f"Config file {path}: expected a readable TOML file, found one that cannot be read "
            f"({error.strerror or error}). Fix: check its permissions, or pass another file"
        ) from None
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"Config file {path}: expected a TOML text file (UTF-8), found binary data (byte {error.start} "
            f"is not UTF-8 text). {fix}"
        ) from None
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"Config file {path} is not valid TOML: {error}. {fix}") from None
    values = without_retired_keys(values)
    check_keys(values, str(path))
    return values


def to_toml(config: Config) -> str:
    """The resolved config as TOML (unset optional fields are left out: TOML has no null).

    TOML is UTF-8 text: a path that is not UTF-8 (``--data-dir`` bytes held as surrogate
    escapes) is written with its escapes spelt out (``bsrnn.text.printable_name``), so the file
    stays valid TOML; the checkpoint keeps the exact value.
    """
    import tomli_w

    def printable(value: Any) -> Any:
        if isinstance(value, str):
            return printable_name(value)
        return [printable(item) for item in value] if isinstance(value, list) else value

    return tomli_w.dumps({key: printable(value) for key, value in config.to_dict().items() if value is not None})
