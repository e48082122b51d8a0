"""The run configuration: one dataclass tree, read from TOML, overridden by flags, saved in
every checkpoint as a plain dict and in ``RUN_DIR/config.toml``.

Defaults follow the reference recipe (SPEC section 4). Every field has a docstring-like ``help``
that the command line shows. Validation reports every invalid field at once, by name.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bsrnn.errors import ConfigError

SAMPLE_RATE = 16000

# Fields that define the networks' shapes: on resume they must agree with the checkpoint.
ARCHITECTURE_FIELDS = ("num_channel", "num_layer", "ndf")
# Fields that describe one invocation, never taken from (or meaningful in) a checkpoint.
# The run directory is where this invocation writes: a copied or moved run resumes in place.
INVOCATION_FIELDS = (
    "max_steps", "resume_from_checkpoint", "load_checkpoint_type", "device", "workers", "save_model_dir",
    "amp", "compile", "cache_audio",
)
# amp, compile and cache_audio say how this machine computes, like device and workers: a run
# trained on a GPU with --amp bf16 may be resumed on a CPU without it. Resume with the same
# command line to keep them (the documented way to resume); a resume that differs says so.
EXECUTION_FIELDS = ("amp", "compile", "cache_audio")
AMP_CHOICES = ("off", "bf16")


def _field(default: Any, help: str, **kwargs: Any) -> Any:
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


@dataclass(kw_only=True)
class Config:
    """Everything that defines a training run. Field names are the TOML keys and flags."""

    epochs: int = _field(120, "total number of epochs to reach (a target, not a count to add)")
    batch_size: int = _field(6, "training batch size (per process under DDP)")
    log_interval: int = _field(500, "print and log training losses every N steps")
    decay_epoch: int = _field(10, "StepLR step size in epochs, for both optimizers")
    lr_decay: float = _field(0.98, "StepLR gamma, for both optimizers")
    init_lr: float = _field(1e-3, "initial learning rate of the generator and the discriminator")
    cut_len: int = _field(2 * SAMPLE_RATE, "training crop length in samples (16 kHz)")
    loss_weights: list[float] = _field([0.5, 0.5, 1.0], "weights of [complex L1, magnitude L1, GAN] losses")
    gan_start_epoch: int | None = _field(
        None, "epoch from which the generator loss includes the GAN term (default: half of epochs)"
    )
    grad_clip: float = _field(5.0, "gradient norm clipping of the generator")
    data_dir: str | None = _field(None, "dataset root (DATA/train|test/clean|noisy or VoiceBank+DEMAND names)")
    demo: bool = _field(False, "train on the built-in generated demo set instead of data_dir")
    save_model_dir: str = _field("runs/bsrnn", "run directory: checkpoints, config.toml, metrics.jsonl, train.log")
    resume_from_checkpoint: str | None = _field(
        None, "run directory to resume from; 'auto' = save_model_dir if it holds a checkpoint"
    )
    load_checkpoint_type: str = _field("auto", "which checkpoint to resume from: auto, last or best")
    num_channel: int = _field(64, "BSRNN feature channels N")
    num_layer: int = _field(5, "BSRNN time/band layer pairs L")
    ndf: int = _field(16, "discriminator base channels")
    monitor: str = _field("val_loss", "metric that selects checkpoint_best.pt: val_loss (min) or pesq (max)")
    seed: int = _field(0, "seed of every random stream (shuffle, crops, initialisation, dropout)")
    device: str = _field("auto", "cpu, cuda or auto")
    save_every_steps: int = _field(0, "also save checkpoint_last.pt every N steps (0: only at epoch ends)")
    max_steps: int | None = _field(None, "stop this invocation after N training steps (saving last)")
    workers: int = _field(0, "data loading worker processes")
    pesq_workers: int = _field(2, "PESQ worker processes for the discriminator (0: in the training process)")
    max_nonfinite_steps: int = _field(10, "stop after this many consecutive steps with a NaN/inf loss")
    async_save: bool = _field(True, "write checkpoints in a background thread")
    amp: str = _field(
        "off", "mixed precision: 'bf16' runs both networks' forward passes under bfloat16 autocast "
        "(CUDA, or a CPU with bfloat16 instructions: see BENCHMARKS.md); 'off' keeps float32"
    )
    compile: bool = _field(
        False, "run the generator through torch.compile (the first steps compile; its LSTMs, most of the "
        "time, stay eager: see BENCHMARKS.md)"
    )
    cache_audio: bool = _field(
        False, "decode the training set once and keep it in memory (16-bit files as int16: about 2.2 GB, "
        "clean and noisy, for VoiceBank+DEMAND's 11,572 pairs, per process); data-loading workers share it"
    )
    inject_nonfinite_steps: list[int] = _field(
        [], "testing aid: make the generator loss NaN at these global steps (0-based)"
    )

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ConfigError("Invalid config:\n" + "\n".join(f"  {problem}" for problem in problems))

    def problems(self) -> list[str]:
        """Every invalid field, as 'field: expected ..., found ...'."""
        problems = []

        def check(name: str, ok: bool, expected: str) -> None:
            if not ok:
                problems.append(f"{name}: expected {expected}, found {getattr(self, name)!r}")

        for name in ("epochs", "batch_size", "log_interval", "decay_epoch", "num_channel", "num_layer", "ndf"):
            value = getattr(self, name)
            check(name, isinstance(value, int) and not isinstance(value, bool) and value > 0, "a positive integer")
        for name in ("save_every_steps", "workers", "pesq_workers", "seed"):
            value = getattr(self, name)
            check(name, isinstance(value, int) and not isinstance(value, bool) and value >= 0, "an integer >= 0")
        check("cut_len", isinstance(self.cut_len, int) and self.cut_len >= 512, "an integer >= 512 (one STFT frame)")
        check("max_nonfinite_steps", isinstance(self.max_nonfinite_steps, int) and self.max_nonfinite_steps > 0,
              "a positive integer")
        for name in ("init_lr", "lr_decay", "grad_clip"):
            value = getattr(self, name)
            check(name, isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0,
                  "a positive number")
        weights = self.loss_weights
        check("loss_weights", isinstance(weights, list) and len(weights) == 3
              and all(isinstance(w, (int, float)) and w >= 0 for w in weights), "three non-negative numbers")
        check("amp", self.amp in AMP_CHOICES, " or ".join(repr(choice) for choice in AMP_CHOICES))
        for name in ("compile", "cache_audio", "async_save", "demo"):
            check(name, isinstance(getattr(self, name), bool), "true or false")
        check("monitor", self.monitor in ("val_loss", "pesq"), "'val_loss' or 'pesq'")
        check("load_checkpoint_type", self.load_checkpoint_type in ("auto", "last", "best"), "'auto', 'last' or 'best'")
        check("device", self.device in ("auto", "cpu", "cuda") or str(self.device).startswith("cuda:"),
              "'cpu', 'cuda', 'cuda:N' or 'auto'")
        check("max_steps", self.max_steps is None or (isinstance(self.max_steps, int) and self.max_steps > 0),
              "a positive integer or unset")
        check("gan_start_epoch", self.gan_start_epoch is None or
              (isinstance(self.gan_start_epoch, int) and self.gan_start_epoch >= 0), "an integer >= 0 or unset")
        return problems

    @property
    def monitor_mode(self) -> str:
        return "min" if self.monitor == "val_loss" else "max"

    @property
    def gan_epoch(self) -> int:
        """First epoch whose generator loss has the GAN term (reference: epoch >= epochs / 2)."""
        return self.gan_start_epoch if self.gan_start_epoch is not None else (self.epochs + 1) // 2

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (safe for ``torch.load(weights_only=True)`` and TOML)."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(Config)]


def field_help() -> dict[str, str]:
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(Config)}


def check_keys(values: Mapping[str, Any], source: str) -> None:
    unknown = sorted(set(values) - set(field_names()))
    if unknown:
        raise ConfigError(
            f"{source}: unknown config key(s) {', '.join(unknown)}. Known keys: {', '.join(field_names())}"
        )


def config_from_dict(values: Mapping[str, Any], source: str = "config") -> Config:
    """A Config from plain values; unknown keys and invalid values fail together, by name."""
    check_keys(values, source)
    try:
        return Config(**values)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None


def read_toml(path: Path | str) -> dict[str, Any]:
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            values = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"Config file {path} not found") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"Config file {path} is not valid TOML: {error}") from None
    check_keys(values, str(path))
    return values


def to_toml(config: Config) -> str:
    """The resolved config as TOML (unset optional fields are left out: TOML has no null)."""
    import tomli_w

    return tomli_w.dumps({key: value for key, value in config.to_dict().items() if value is not None})
