"""Child-process bodies for the engine's crash tests (importable by multiprocessing workers)."""

from __future__ import annotations

import resource
import sys

import torch

from bsrnn.checkpoint import CheckpointManager, CheckpointWriteError


def save_forever(run_dir: str, report: object) -> None:
    """Resume from ``run_dir`` if possible, then save epochs 0, 1, 2, ... until killed.

    Every weight equals the epoch it was saved at, so a loaded file says which state it holds.
    ``report`` (a multiprocessing Connection) receives each epoch once its save has returned.
    """
    torch.set_num_threads(1)
    model = torch.nn.Linear(256, 256)  # ~260 KB a file: saves take a few ms, kills land mid-write
    manager = CheckpointManager(run_dir, monitor="val_loss", mode="min")
    manager.register("model_state_dict", model)
    loaded = manager.find("auto")
    epoch = 0
    if loaded is not None:
        manager.restore(loaded)
        epoch = loaded.payload["epoch"] + 1
    while True:
        with torch.no_grad():
            model.weight.fill_(epoch)
            model.bias.fill_(epoch)
        # A zig-zag metric: best improves on some epochs only.
        val_loss = 1.0 / (1 + epoch) + (0.5 if epoch % 3 else 0.0)
        manager.save(metric=val_loss, values={"epoch": epoch, "val_loss": val_loss})
        report.send(epoch)  # type: ignore[attr-defined]
        epoch += 1


def save_under_file_size_limit(run_dir: str, limit: int) -> str:
    """Save a big state with RLIMIT_FSIZE below its size; return the error message."""
    manager = CheckpointManager(run_dir)
    manager.register("model_state_dict", torch.nn.Linear(512, 512))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    try:
        manager.save(metric=0.1, values={"epoch": 1})
    except CheckpointWriteError as error:
        return str(error)
    finally:
        manager.close()
    return "saved without error"


def save_while_signalled(run_dir: str, ready: object) -> None:
    """Save a large state while the parent sends SIGTERM twice mid-save; print when done."""
    model = torch.nn.Linear(2048, 2048)  # ~16 MB: long enough for signals to land mid-save
    manager = CheckpointManager(run_dir)
    manager.register("model_state_dict", model)
    ready.send("start")  # type: ignore[attr-defined]
    manager.save(metric=0.1, values={"epoch": 5})
    sys.stdout.flush()
