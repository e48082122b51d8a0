"""Training and validation curves of a run, drawn from its ``metrics.jsonl``.

Steps logged twice (a resumed run redoes the steps after its checkpoint) are drawn once: the
last entry per global step wins, which is the one the final weights descend from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bsrnn.errors import UserError


def _last_per_key(events: list[dict[str, Any]], kind: str, key: str) -> list[dict[str, Any]]:
    chosen: dict[Any, dict[str, Any]] = {}
    for event in events:
        if event.get("event") == kind:
            chosen[event[key]] = event
    return [chosen[k] for k in sorted(chosen)]


def plot_run(run_dir: Path, out: Path) -> Path:
    """Write a PNG with losses, PESQ and learning rates against steps/epochs; return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bsrnn.training.run_files import METRICS_NAME, read_metrics

    events = read_metrics(run_dir)
    steps = _last_per_key(events, "step", "global_step")
    epochs = _last_per_key(events, "epoch", "epoch")
    if not steps and not epochs:
        raise UserError(f"{run_dir / METRICS_NAME} has no step or epoch entries to plot (is {run_dir} a run directory?)")
    figure, axes = plt.subplots(1, 3, figsize=(15, 4))
    loss_axis, pesq_axis, lr_axis = axes
    if steps:
        x = [s["global_step"] for s in steps]
        loss_axis.plot(x, [s["loss"] for s in steps], label="train generator loss", alpha=0.6)
        loss_axis.plot(x, [s["disc_loss"] for s in steps], label="train discriminator loss", alpha=0.6)
        pesq_axis.plot(x, [s.get("pesq") for s in steps], label="train PESQ (batch)", alpha=0.6)
        lr_axis.plot(x, [s["lr"]["generator"] for s in steps], label="generator LR")
        lr_axis.plot(x, [s["lr"]["discriminator"] for s in steps], label="discriminator LR", linestyle="--")
    if epochs:
        x = [e["global_step"] for e in epochs]
        loss_axis.plot(x, [e["val_loss"] for e in epochs], "o-", label="validation generator loss")
        loss_axis.plot(x, [e["val_disc_loss"] for e in epochs], "s-", label="validation discriminator loss")
        pesq_axis.plot(x, [e["val_pesq"] for e in epochs], "o-", label="validation PESQ")
    for axis, title in zip(axes, ("losses", "PESQ (wide band)", "learning rate")):
        axis.set_title(title)
        axis.set_xlabel("global step")
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    figure.suptitle(f"{run_dir}")
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out
