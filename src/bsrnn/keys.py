"""The names under which a training run's state is stored in a checkpoint: one home for them.

They are a contract with users' analysis scripts (``torch.load(path)["model_state_dict"]``), so
they never change; everything that reads or writes a run's checkpoint (the trainer, resume,
migration, enhancement, ``bsrnn ckpt``, the torture tools) spells them through this module.
The checkpoint engine itself knows none of them: it stores whatever names it is given.
"""

from __future__ import annotations

GENERATOR = "model_state_dict"
DISCRIMINATOR = "discriminator_state_dict"
GENERATOR_OPTIMIZER = "optimizer_state_dict"
DISCRIMINATOR_OPTIMIZER = "optimizer_disc_state_dict"
GENERATOR_SCHEDULER = "scheduler_G_state_dict"
DISCRIMINATOR_SCHEDULER = "scheduler_D_state_dict"
RNG = "rng"
PROGRESS = "progress"
CONFIG = "config"

# Top-level copies of the progress counters and the last validation, for plain ``torch.load``
# readers (the users' analysis scripts); the trainer's own record is the registered ``progress``.
EPOCH = "epoch"
"""The last completed epoch (-1 before the first)."""
GLOBAL_STEP = "global_step"
STEP_IN_EPOCH = "step_in_epoch"
VAL_LOSS = "val_loss"
BEST_VAL_LOSS = "best_val_loss"
VAL_PESQ = "val_pesq"
VALIDATION = "validation"
"""The run's validation record (``training.plan.validation_record``)."""

NETWORKS = (GENERATOR, DISCRIMINATOR)
"""The weights: never saved non-finite."""
OPTIMIZERS = (GENERATOR_OPTIMIZER, DISCRIMINATOR_OPTIMIZER)
REGISTERED = (GENERATOR, DISCRIMINATOR, GENERATOR_OPTIMIZER, DISCRIMINATOR_OPTIMIZER, GENERATOR_SCHEDULER,
              DISCRIMINATOR_SCHEDULER, RNG, PROGRESS)
"""Every stateful object the trainer registers with the engine in every run, in registration order."""
DELAYED_DISCRIMINATOR = "delayed_discriminator_batch"
"""The batch a one-step-delayed discriminator learns from next (``training.steps.DelayedDiscriminator``):
registered after ``REGISTERED`` only in runs with ``delayed_discriminator``, so the checkpoints of
other runs are unchanged."""
