"""What a run is built from: its networks and optimizers, loss objective and PESQ pool.

Builders are functions of the config alone (and, for a restored optimizer, of the checkpoint's
state), so the trainer's loop reads on its own and a test or a benchmark builds exactly what a
run trains.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bsrnn.checkpoint import StateMismatchError, deferred_signals
from bsrnn.config import Config
from bsrnn.losses import Objective
from bsrnn.metrics.pesq_pool import PesqPool
from bsrnn.models import BSRNN, Discriminator
from bsrnn.training.execution import forward_of
from bsrnn.training.steps import Networks


def objective_of(config: Config) -> Objective:
    """The loss ingredients of ``config`` (its recipe's, and any field given over them)."""
    return Objective(
        complex_loss=config.complex_loss,  # type: ignore[arg-type]
        magnitude_loss=config.magnitude_loss,  # type: ignore[arg-type]
        linear_weight=config.linear_loss_weight,
        phase_weight=config.phase_loss_weight,
        phase_weighting=config.phase_loss_weighting,  # type: ignore[arg-type]
        time_weight=config.time_loss_weight,
        consistency_weight=config.consistency_loss_weight,
        compress_factor=config.compress_factor,
        pcs_target=config.pcs_target,
        metric_target=config.metric_target,  # type: ignore[arg-type]
        disc_noisy_term=config.disc_noisy_term,  # type: ignore[arg-type]
    )


def make_optimizer(parameters: Any, config: Config) -> torch.optim.Optimizer:
    """Adam or AdamW as the config says; the reference's ``Adam(lr)`` is ``adam`` with betas
    (0.9, 0.999) and no weight decay, torch's defaults, so its updates are unchanged."""
    kind = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return kind(parameters, lr=config.init_lr, betas=(config.adam_betas[0], config.adam_betas[1]),
                weight_decay=config.weight_decay)


def apply_optimizer_settings(optimizer: torch.optim.Optimizer, config: Config) -> list[str]:
    """Give a restored optimizer the config's betas, weight decay and kind; say what changed.

    ``Optimizer.load_state_dict`` brings back the saved hyper-parameters with the moments, so
    without this a resume that changes them (a recipe switch, an explicit ``--adam-betas``)
    would silently keep the checkpoint's. The learning rate has its own rule (``schedule``).
    Adam and AdamW keep the same moments; AdamW is Adam with decoupled weight decay.
    """
    wanted = {"betas": (config.adam_betas[0], config.adam_betas[1]), "weight_decay": config.weight_decay,
              "decoupled_weight_decay": config.optimizer == "adamw"}
    changes = []
    for group in optimizer.param_groups:
        for key, value in wanted.items():
            if key in group and group[key] != value:
                changes.append(f"{key} {group[key]!r} -> {value!r}")
                group[key] = value
    return sorted(set(changes))


def build_networks(config: Config, device: torch.device) -> Networks:
    """Both networks (seeded), their optimizers, and forward passes as ``amp``/``compile`` ask.

    ``compile`` applies to the generator only: the discriminator's step is ~3 % of the
    generator's on CPU (BENCHMARKS.md), and its spectral norm updates its power-iteration
    vectors in place on every forward, which AOTAutograd's saved-tensor check refuses
    ("modified by an inplace operation") in the backward.
    """
    torch.manual_seed(config.seed)
    generator = BSRNN(num_channel=config.num_channel, num_layer=config.num_layer, causal=config.causal).to(device)
    discriminator = Discriminator(ndf=config.ndf).to(device)
    return Networks(
        generator,
        discriminator,
        make_optimizer(generator.parameters(), config),
        make_optimizer(discriminator.parameters(), config),
        run_generator=forward_of(generator, device, config.amp, config.compile),
        run_discriminator=forward_of(discriminator, device, config.amp, compile=False),
    )


def start_pesq_pool(workers: int) -> PesqPool:
    """The PESQ pool, its helper processes started with the preemption signals blocked.

    SLURM (``scancel --signal``) and Ctrl-C signal every process of the job, not only the
    trainer. The PESQ workers ignore those signals themselves, but the pool also starts
    multiprocessing's resource tracker, which ignores only SIGINT and SIGTERM: SIGUSR1 killed it,
    and the run ended with "resource_tracker: process died unexpectedly" and a KeyError traceback
    per semaphore (found by ``tools/torture.py signals``). A blocked signal mask is inherited
    across fork and exec, and the tracker never unblocks SIGUSR1, so it survives.
    """
    with deferred_signals():
        return PesqPool(workers=workers)


def check_adam_state_shapes(optimizer: torch.optim.Optimizer, name: str, path: Path) -> None:
    """Refuse optimizer moments whose shapes differ from their parameters' (a re-hashed edit).

    ``Optimizer.load_state_dict`` checks only the number of parameters, so a wrong-shaped
    ``exp_avg`` would load and fail at the first step with a raw size-mismatch traceback.
    """
    for group in optimizer.param_groups:
        for index, parameter in enumerate(group["params"]):
            for key, value in optimizer.state.get(parameter, {}).items():
                if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != parameter.shape:
                    raise StateMismatchError(
                        f"{path}: cannot restore {name!r}: state {key!r} of parameter {index} has shape "
                        f"{tuple(value.shape)}, the parameter {tuple(parameter.shape)}. The file was edited "
                        "or comes from another model; resume from the other checkpoint (--load best|last)."
                    )
