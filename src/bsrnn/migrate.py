"""``bsrnn ckpt migrate``: the old per-epoch files become a run directory of ours.

The old scripts left ``gene_epoch_{N}_{loss}`` (generator) and ``disc_epoch_{N}``
(discriminator) bare state dicts, with reference parameter names, maybe a DDP ``module.``
prefix, and no record of the architecture. We infer ``num_channel``, ``num_layer`` and ``ndf``
from the shapes, convert the names, and commit a ``checkpoint_last.pt`` through the engine.
No optimizer or scheduler state exists in the old files: the checkpoint says so (``inspect``
shows it), and a resumed run starts those fresh. Nothing in the legacy folder is touched. The
old files are unpickled weights-only, and only on a torch whose loader is safe
(``bsrnn.checkpoint.reading.check_torch_loader``, as for every checkpoint).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from bsrnn import keys
from bsrnn.checkpoint import BEST_NAME, LAST_NAME, CheckpointManager
from bsrnn.checkpoint.reading import check_torch_loader
from bsrnn.config import Config
from bsrnn.errors import UserError
from bsrnn.models import discriminator_from_state_dict, generator_from_state_dict

log = logging.getLogger(__name__)

_GENERATOR = re.compile(r"^gene_epoch_(\d+)(?:_(.*))?$")
_DISCRIMINATOR = re.compile(r"^disc_epoch_(\d+)$")


@dataclass(frozen=True)
class MigrationResult:
    checkpoint: Path
    epoch: int
    num_channel: int
    num_layer: int
    ndf: int | None

    def __str__(self) -> str:
        disc = f", ndf {self.ndf}" if self.ndf is not None else ", no discriminator file"
        return (f"Migrated epoch {self.epoch} (num_channel {self.num_channel}, num_layer {self.num_layer}{disc}) "
                f"to {self.checkpoint}. No optimizer/scheduler state existed; a resume starts them fresh.")


def legacy_epochs(legacy_dir: Path) -> dict[int, dict[str, Path]]:
    """epoch -> {"generator": path, "discriminator": path} for the files present."""
    found: dict[int, dict[str, Path]] = {}
    for path in sorted(legacy_dir.iterdir()):
        if match := _GENERATOR.match(path.name):
            found.setdefault(int(match.group(1)), {})["generator"] = path
        elif match := _DISCRIMINATOR.match(path.name):
            found.setdefault(int(match.group(1)), {})["discriminator"] = path
    return found


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A legacy file's bare state dict, unpickled weights-only, on a torch whose loader is safe.

    Legacy files carry no digest and come from anywhere: the same torch floor as every other
    loader of ours (``check_torch_loader``) applies before the first byte is unpickled.
    """
    check_torch_loader()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any load failure is reported the same way
        raise UserError(f"Cannot read legacy file {path}: {str(error).splitlines()[0]}") from error
    if isinstance(state, dict) and keys.GENERATOR in state:
        raise UserError(f"{path} is a full checkpoint, not a bare per-epoch state dict; no migration needed")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path} is not a bare state dict of tensors")
    return state


def migrate_legacy_run(legacy_dir: Path | str, out_dir: Path | str, epoch: int | None = None) -> MigrationResult:
    legacy_dir, out_dir = Path(legacy_dir), Path(out_dir)
    if not legacy_dir.is_dir():
        raise UserError(f"Legacy directory {legacy_dir} does not exist")
    epochs = legacy_epochs(legacy_dir)
    with_generator = sorted(e for e, files in epochs.items() if "generator" in files)
    if not with_generator:
        raise UserError(f"No gene_epoch_N_* files in {legacy_dir}: nothing to migrate")
    if epoch is None:
        epoch = with_generator[-1]
    elif epoch not in with_generator:
        raise UserError(f"No gene_epoch_{epoch}_* file in {legacy_dir}; epochs present: {with_generator}")
    try:
        generator = generator_from_state_dict(_load_state_dict(epochs[epoch]["generator"]))
    except ValueError as error:
        raise UserError(f"{epochs[epoch]['generator']}: {error}") from error
    arch = generator.config()
    discriminator = None
    if "discriminator" in epochs[epoch]:
        try:
            discriminator = discriminator_from_state_dict(_load_state_dict(epochs[epoch]["discriminator"]))
        except ValueError as error:
            raise UserError(f"{epochs[epoch]['discriminator']}: {error}") from error
    else:
        log.warning("No disc_epoch_%d in %s: the discriminator starts fresh on resume", epoch, legacy_dir)
    ndf = discriminator.config()["ndf"] if discriminator is not None else None
    config = Config(num_channel=arch["num_channel"], num_layer=arch["num_layer"], ndf=ndf or 16,
                    save_model_dir=str(out_dir), epochs=max(epoch + 1, Config().epochs))
    # The lock first, then the check: a trainer starting in out_dir meanwhile cannot be overwritten.
    with CheckpointManager(out_dir, async_save=False) as manager:
        if (out_dir / LAST_NAME).exists() or (out_dir / BEST_NAME).exists():
            raise UserError(f"{out_dir} already holds checkpoints; migrate into a new directory")
        manager.register(keys.GENERATOR, generator)
        if discriminator is not None:
            manager.register(keys.DISCRIMINATOR, discriminator)
        manager.save(metric=None, values={
            "epoch": epoch,
            "global_step": 0,
            "step_in_epoch": 0,
            "val_loss": None,
            "best_val_loss": None,
            keys.CONFIG: config.to_dict(),
            keys.GENERATOR_OPTIMIZER: None,
            keys.DISCRIMINATOR_OPTIMIZER: None,
            keys.GENERATOR_SCHEDULER: None,
            keys.DISCRIMINATOR_SCHEDULER: None,
            "migrated_from": str(legacy_dir.resolve()),
            "notes": [
                f"migrated from {epochs[epoch]['generator'].name}"
                + (f" and {epochs[epoch]['discriminator'].name}" if discriminator is not None else ""),
                "no optimizer or scheduler state exists in the old per-epoch files: a resume starts them fresh",
            ],
        })
    return MigrationResult(out_dir / LAST_NAME, epoch, arch["num_channel"], arch["num_layer"], ndf)
