"""The batches of one epoch as a pure function of (seed, epoch), resumable at any batch.

``EpochBatches`` replaces ``DataLoader(shuffle=True, drop_last=True)`` plus
``DistributedSampler``: pass it as a DataLoader's ``batch_sampler`` with a ``TrainSet``.
It yields lists of keys ``(epoch, index)``, so the dataset needs no ``set_epoch`` state and
workers need no shared state at all.

How many batches an epoch has, per rank (N items, B batch size, W ranks):

- ``drop_last=True`` (the reference's setting): the shuffled order is cut to
  ``(N // W) * W`` items, each rank takes every W-th of them, and the last incomplete batch is
  dropped: ``(N // W) // B`` batches. With one process that is ``N // B``, as the reference
  (VoiceBank+DEMAND: 11572 // 6 = 1928 steps per epoch).
- ``drop_last=False``: the order is padded with its own first items to a multiple of W, as
  DistributedSampler does, and the last batch may be short: ``ceil(ceil(N / W) / B)``.

Every rank gets the same number of batches, so DDP ranks never wait on each other.

After ``k`` batches every rank has taken its first ``k * B`` items, and together the ranks have
taken exactly the first ``k * B * W`` items of the epoch's shuffled order (rank r takes the
positions r, r + W, ...). That is what lets a resume with another batch size or another number
of processes continue the epoch where it stopped (``BatchGeometry.continue_at``): the items are
the same as long as the order is (same items, same seed).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

_SHUFFLE_STREAM = 1
"""Spawn key that keeps the shuffle stream apart from the crop streams SeedSequence([s, e, i])."""


def epoch_order(num_items: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled item indices of ``epoch``; identical on every rank and after a resume."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, epoch], spawn_key=(_SHUFFLE_STREAM,)))
    return rng.permutation(num_items)


class EpochBatches:
    """This rank's batches of keys ``(epoch, index)`` for one epoch, from ``start_batch`` on.

    Skipping is arithmetic: batches before ``start_batch`` are never formed, and no item is
    loaded for them. ``len()`` is the number of batches in the whole epoch for this rank (the
    step counter's range); ``remaining`` is how many this iterator will yield.
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        seed: int,
        epoch: int,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
        start_batch: int = 0,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if world_size <= 0 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank {rank} of world_size {world_size}")
        if num_items < 0 or epoch < 0 or seed < 0:
            raise ValueError(f"num_items, epoch and seed must be >= 0, got {num_items}, {epoch}, {seed}")
        self.num_items = int(num_items)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.epoch = int(epoch)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.drop_last = bool(drop_last)
        if drop_last:
            self.items_per_rank = self.num_items // self.world_size
            batches = self.items_per_rank // self.batch_size
        else:
            self.items_per_rank = math.ceil(self.num_items / self.world_size)
            batches = math.ceil(self.items_per_rank / self.batch_size)
        self._num_batches = batches
        if not 0 <= start_batch <= batches:
            raise ValueError(
                f"start_batch must be in [0, {batches}] (batches per epoch for this rank: {batches} = "
                f"{self.num_items} items, batch size {self.batch_size}, {self.world_size} rank(s)), "
                f"got {start_batch}; did the dataset, batch size or world size change since the save?"
            )
        self.start_batch = int(start_batch)

    def __len__(self) -> int:
        return self._num_batches

    @property
    def remaining(self) -> int:
        """Batches this iterator yields: ``len(self) - start_batch``."""
        return self._num_batches - self.start_batch

    def shard(self) -> np.ndarray:
        """This rank's item indices for the epoch, in order (before batching)."""
        order = epoch_order(self.num_items, self.seed, self.epoch)
        total = self.items_per_rank * self.world_size
        # Cut (drop_last) or pad cyclically with the order's own first items (DistributedSampler).
        order = np.resize(order, total) if order.size else order
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        if self.remaining == 0:
            return
        indices = self.shard()
        for batch in range(self.start_batch, self._num_batches):
            chunk = indices[batch * self.batch_size : (batch + 1) * self.batch_size]
            yield [(self.epoch, int(index)) for index in chunk]


@dataclass(frozen=True)
class BatchGeometry:
    """What decides which items the first ``k`` batches of an epoch hold: the training items
    (their count and names), the shuffle seed, the batch size and the number of processes.

    Saved with the progress of a run, so that a resume in the middle of an epoch knows which
    items its first ``step_in_epoch`` batches were, even under another batch size or process
    count (a requeued job on fewer GPUs, a batch size lowered after running out of memory).
    """

    items: int
    names_sha256: str
    seed: int
    batch_size: int
    world_size: int

    def as_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> BatchGeometry | None:
        """The geometry a checkpoint recorded; None for one from before it was recorded."""
        try:
            geometry = cls(int(record["items"]), str(record["names_sha256"]), int(record["seed"]),
                           int(record["batch_size"]), int(record["world_size"]))
        except (KeyError, TypeError, ValueError):
            return None
        return geometry if geometry.items >= 0 and geometry.batch_size > 0 and geometry.world_size > 0 else None

    def batches(self) -> int:
        """Batches per epoch for each rank (``drop_last``, as the trainer samples)."""
        return (self.items // self.world_size) // self.batch_size

    def continue_at(self, saved: BatchGeometry, saved_batches: int) -> tuple[int, str | None]:
        """Where this geometry continues an epoch of which ``saved_batches`` batches were
        trained under ``saved``, and why it is not simply ``saved_batches`` (None when it is).

        The same order (items, names, seed): the ``saved_batches * B * W`` items already trained
        are the order's first ones, so the epoch continues at the first batch of this geometry
        that holds an item not yet trained (it may hold trained ones too: fewer than one batch
        of items trains twice; none is skipped). Another
        order: which items were trained is unknown under the new one, so the epoch starts again
        from its first batch (its items seen so far train twice; nothing is skipped).
        """
        if saved == self or saved_batches == 0:
            return saved_batches, None
        if (saved.items, saved.names_sha256, saved.seed) != (self.items, self.names_sha256, self.seed):
            changed = [f"{name} {getattr(saved, name)} -> {getattr(self, name)}" for name in ("items", "seed")
                       if getattr(saved, name) != getattr(self, name)] or ["the training items' names"]
            return 0, (f"the epoch's shuffled order changed ({', '.join(changed)}), so it starts again from its "
                       f"first batch; the {saved_batches} batch(es) trained in it are trained again")
        done = saved_batches * saved.batch_size * saved.world_size
        start = done // (self.batch_size * self.world_size)  # <= self.batches(): floor(N/(B*W)) bounds both
        again = done - start * self.batch_size * self.world_size
        return start, (f"batch size {saved.batch_size} x {saved.world_size} process(es) -> {self.batch_size} x "
                       f"{self.world_size}: the {done} items already trained in this epoch are the first "
                       f"{start} batch(es) of the new size" + (f" and {again} item(s) of the next, which train "
                                                              "again" if again else ""))

