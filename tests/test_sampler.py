"""EpochBatches: a pure function of (seed, epoch), sharded like DistributedSampler, O(1) resume."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from bsrnn.data import ArraySource, EpochBatches, Pair, TrainSet


def _indices(batches: EpochBatches) -> list[int]:
    return [index for batch in batches for _, index in batch]


def test_the_order_is_a_pure_function_of_seed_and_epoch() -> None:
    assert list(EpochBatches(50, 4, seed=7, epoch=3)) == list(EpochBatches(50, 4, seed=7, epoch=3))
    assert list(EpochBatches(50, 4, seed=7, epoch=3)) != list(EpochBatches(50, 4, seed=8, epoch=3))


def test_the_order_changes_every_epoch() -> None:
    orders = {tuple(_indices(EpochBatches(50, 5, seed=0, epoch=epoch))) for epoch in range(5)}
    assert len(orders) == 5


def test_keys_carry_the_epoch() -> None:
    batch = next(iter(EpochBatches(10, 3, seed=0, epoch=4)))
    assert len(batch) == 3 and all(epoch == 4 for epoch, _ in batch)


def test_one_process_has_n_floor_b_batches_as_the_reference() -> None:
    batches = EpochBatches(11572, 6, seed=0, epoch=0)
    assert len(batches) == 1928 == batches.remaining
    assert len(_indices(EpochBatches(20, 6, seed=0, epoch=0))) == 18  # the last 2 are dropped


def test_ranks_are_disjoint_cover_everything_and_have_equal_length() -> None:
    shards = [EpochBatches(48, 4, seed=1, epoch=2, rank=rank, world_size=3) for rank in range(3)]
    indices = [_indices(shard) for shard in shards]
    assert {len(shard) for shard in shards} == {4}
    assert all(not set(a) & set(b) for i, a in enumerate(indices) for b in indices[i + 1 :])
    assert sorted(sum(indices, [])) == list(range(48))


def test_without_drop_last_every_item_is_seen_and_ranks_stay_equal() -> None:
    shards = [EpochBatches(10, 3, seed=0, epoch=0, rank=rank, world_size=4, drop_last=False) for rank in range(4)]
    assert {len(shard) for shard in shards} == {1}  # ceil(ceil(10 / 4) / 3)
    seen = sum((_indices(shard) for shard in shards), [])
    assert len(seen) == 12 and set(seen) == set(range(10))


def test_with_drop_last_batches_per_rank_are_items_per_rank_floor_batch() -> None:
    assert len(EpochBatches(50, 4, seed=0, epoch=0, rank=1, world_size=3)) == (50 // 3) // 4


def test_starting_at_a_batch_equals_slicing_the_full_epoch() -> None:
    full = list(EpochBatches(37, 4, seed=5, epoch=1, rank=1, world_size=2))
    for start in (0, 1, 3, len(full)):
        resumed = EpochBatches(37, 4, seed=5, epoch=1, rank=1, world_size=2, start_batch=start)
        assert list(resumed) == full[start:]
        assert len(resumed) == len(full) and resumed.remaining == len(full) - start


def test_a_start_batch_beyond_the_epoch_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="batches per epoch for this rank: 2"):
        EpochBatches(10, 4, seed=0, epoch=0, start_batch=3)


class CountingDataset(Dataset):
    def __init__(self) -> None:
        self.loaded: list[tuple[int, int]] = []

    def __len__(self) -> int:
        return 40

    def __getitem__(self, key: tuple[int, int]) -> torch.Tensor:
        self.loaded.append(key)
        return torch.tensor(key[1])


def test_no_item_is_loaded_for_skipped_batches() -> None:
    data = CountingDataset()
    batches = EpochBatches(40, 4, seed=0, epoch=2, start_batch=7)
    got = [batch.tolist() for batch in DataLoader(data, batch_sampler=batches)]
    expected = list(EpochBatches(40, 4, seed=0, epoch=2))[7:]
    assert data.loaded == [key for batch in expected for key in batch]
    assert got == [[index for _, index in batch] for batch in expected]


def test_worker_processes_produce_the_same_batches_as_the_main_process() -> None:
    pairs = [
        Pair(f"p{i}", ArraySource(np.full(3000 + 100 * i, i, np.float32), 16000, f"p{i}c"),
             ArraySource(np.full(3000 + 100 * i, -i, np.float32), 16000, f"p{i}n"))
        for i in range(8)
    ]  # fmt: skip
    data = TrainSet(pairs, cut_len=2000, seed=4)

    def run(workers: int) -> list[torch.Tensor]:
        loader = DataLoader(data, batch_sampler=EpochBatches(8, 2, seed=4, epoch=1), num_workers=workers)
        return [clean for clean, _ in loader]

    for inline, in_worker in zip(run(0), run(1), strict=True):
        assert torch.equal(inline, in_worker)


def _trained(geometry: Any, epoch: int, first: int, last: int) -> list[int]:
    """Every item that batches [first, last) of every rank hold under ``geometry``."""
    return [index for rank in range(geometry.world_size)
            for batch_index, batch in enumerate(EpochBatches(geometry.items, geometry.batch_size, geometry.seed, epoch,
                                                             rank=rank, world_size=geometry.world_size))
            if first <= batch_index < last for _, index in batch]


@pytest.mark.parametrize(("before", "after"), [((6, 1), (4, 1)), ((4, 1), (6, 1)), ((4, 4), (6, 2)),
                                               ((6, 2), (6, 3)), ((5, 3), (7, 1))])
def test_a_new_batch_size_or_process_count_continues_the_epoch_without_skipping_an_item(
        before: tuple[int, int], after: tuple[int, int]) -> None:
    from bsrnn.data.sampler import BatchGeometry

    saved = BatchGeometry(805, "names", 3, *before)
    now = BatchGeometry(805, "names", 3, *after)
    for done in (1, 7, saved.batches() - 1):
        start, why = now.continue_at(saved, done)
        assert why is not None and f"-> {after[0]} x {after[1]}" in why
        trained = _trained(saved, 2, 0, done)
        rest = _trained(now, 2, start, now.batches())
        again = set(trained) & set(rest)
        assert len(again) < now.batch_size * now.world_size  # at most one batch of the new size trains twice
        assert set(_trained(now, 2, 0, now.batches())) <= set(trained) | set(rest)  # nothing skipped


def test_the_same_geometry_continues_at_the_saved_batch_and_another_order_starts_the_epoch_again() -> None:
    from bsrnn.data.sampler import BatchGeometry

    saved = BatchGeometry(805, "names", 3, 6, 1)
    assert saved.continue_at(saved, 40) == (40, None)
    for changed in (BatchGeometry(805, "names", 4, 6, 1), BatchGeometry(900, "more", 3, 6, 1),
                    BatchGeometry(805, "renamed", 3, 6, 1)):
        start, why = changed.continue_at(saved, 40)
        assert start == 0 and why is not None and "starts again from its first batch" in why
    assert BatchGeometry.from_record(saved.as_record()) == saved
    assert BatchGeometry.from_record({}) is None


def test_a_checkpoint_from_before_the_geometry_was_recorded_counts_in_its_configs_batch_size() -> None:
    from pathlib import Path

    from bsrnn.checkpoint import LoadedCheckpoint
    from bsrnn.data.sampler import BatchGeometry
    from bsrnn.training.plan import saved_geometry
    from bsrnn.training.progress import saved_progress

    payload = {"progress": {"last_completed_epoch": 0, "step_in_epoch": 3, "global_step": 9},
               "config": {"batch_size": 8, "seed": 3}}
    loaded = LoadedCheckpoint(Path("old.pt"), "last", payload, "xxh3-128:0")
    now = BatchGeometry(48, "names", 3, 4, 1)
    saved = saved_geometry(loaded, saved_progress(payload), now)
    assert saved == BatchGeometry(48, "names", 3, 8, 1)
    assert now.continue_at(saved, 3)[0] == 6
