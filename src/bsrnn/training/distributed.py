"""Process-group plumbing for ``torchrun`` (DDP): who am I, on which device, and agreeing.

Gradients are averaged by one flattened all-reduce per optimizer step instead of wrapping the
networks in ``DistributedDataParallel``: the discriminator runs several forwards per backward
(the GAN term, then three loss terms), which DDP's hooks do not allow, and a plain average
keeps every rank's weights bit-identical without them. Spectral-norm vectors depend only on
the (identical) weights and the norms keep no running statistics, so ranks never drift.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_kind: str, timeout_s: float = 600.0) -> DistributedContext:
    """Join the process group that ``torchrun`` describes in the environment (or run alone)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_kind == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    log.debug("Joined process group: rank %d of %d", rank, world_size)
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank)


def shutdown_distributed(context: DistributedContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


Decision = TypeVar("Decision")


def broadcast_decision(decision: Decision | None, context: DistributedContext) -> Decision:
    """Rank 0's ``decision`` (plain picklable data) on every rank; the others pass None.

    How the ranks agree on what to resume from: only rank 0 holds the run directory's lock, so
    only rank 0 may decide, and a rank that decided for itself could load another file (one that
    rank 0 is about to supersede, or a fallback after a damaged one).
    """
    holder = [decision if context.is_main else None]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]  # type: ignore[return-value]


def first_problem(problem: str | None, context: DistributedContext) -> str | None:
    """The first rank's ``problem`` (a message, or None where that rank found none), on every
    rank: so that a check one rank fails stops all of them, rather than leaving the others
    waiting in their next collective until the process group times out."""
    if not context.enabled:
        return problem
    problems: list[str | None] = [None] * context.world_size
    dist.all_gather_object(problems, problem)
    return next((found for found in problems if found is not None), None)


def average_gradients(parameters: Iterable[torch.nn.Parameter], context: DistributedContext) -> None:
    """Replace every rank's gradients by their mean over ranks (one all-reduce)."""
    if not context.enabled:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= context.world_size
    offset = 0
    for grad in grads:
        count = grad.numel()
        grad.copy_(flat[offset : offset + count].view_as(grad))
        offset += count


def all_sum(values: list[float], context: DistributedContext, device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over ranks (float64, so sums are exact enough)."""
    if not context.enabled:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def agree_on_stop(signal_number: int | None, context: DistributedContext, device: torch.device) -> int | None:
    """The preemption signal any rank received (max over ranks), so all ranks stop together."""
    if not context.enabled:
        return signal_number
    flag = torch.tensor([signal_number or 0], dtype=torch.int64, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item()) or None
