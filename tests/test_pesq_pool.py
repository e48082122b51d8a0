"""The discriminator's batch PESQ: masks failures, matches direct calls, any worker count."""

from __future__ import annotations

import numpy as np
import pytest
from pesq import pesq

from bsrnn.metrics import PesqPool
from signals import speech_like

SAMPLE_RATE = 16000


@pytest.fixture(scope="module")
def batch() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Four (clean, estimate) crops as the trainer would send: float32, with varying damage."""
    rng = np.random.default_rng(7)
    clean = [speech_like(seed) for seed in range(4)]
    estimates = [(c + level * rng.standard_normal(len(c))).astype(np.float32)
                 for c, level in zip(clean, (0.001, 0.01, 0.03, 0.1))]
    return clean, estimates


def test_masks_a_silent_item_while_scoring_the_others(batch):
    clean, estimates = batch
    estimates = [estimates[0], np.zeros_like(estimates[1]), estimates[2], estimates[3]]
    with PesqPool(workers=0) as pool:
        scores, valid = pool.score(clean, estimates)
    assert valid.tolist() == [True, False, True, True]
    assert np.isnan(scores[1]) and np.all(scores[valid] > 1.0)


def test_a_crop_shorter_than_a_quarter_second_is_masked(batch):
    clean, estimates = batch
    with PesqPool(workers=0) as pool:
        _, valid = pool.score([clean[0][:2000], clean[1]], [estimates[0][:2000], estimates[1]])
    assert valid.tolist() == [False, True]


def test_scores_equal_direct_pesq_calls(batch):
    clean, estimates = batch
    direct = np.array([pesq(SAMPLE_RATE, c, e, "wb") for c, e in zip(clean, estimates)],
                      dtype=np.float32)
    with PesqPool(workers=0) as pool:
        scores, valid = pool.score(clean, estimates)
    assert scores.dtype == np.float32 and valid.dtype == np.bool_
    np.testing.assert_array_equal(scores, direct)
    assert np.all(np.diff(scores) < 0)  # more noise, lower PESQ


def test_two_workers_give_bit_identical_scores_to_in_process(batch):
    clean, estimates = batch
    with PesqPool(workers=0) as in_process, PesqPool(workers=2) as pooled:
        expected = in_process.score(clean, estimates)
        for _ in range(2):  # the same workers serve successive steps
            got = pooled.score(clean, estimates)
            np.testing.assert_array_equal(got.scores, expected.scores)
            np.testing.assert_array_equal(got.valid, expected.valid)


def test_submit_now_and_collect_later_reports_the_wait(batch):
    clean, estimates = batch
    buffers = [c.copy() for c in clean]
    with PesqPool(workers=0) as reference:
        expected = reference.score(clean, estimates).scores
    with PesqPool(workers=2) as pool:
        first = pool.submit(buffers, estimates)
        second = pool.submit(clean[:2], estimates[:2])
        for buffer in buffers:  # the trainer reuses its buffers: the pool must have copied them
            buffer[:] = 0.0
        assert second.result().scores.shape == (2,)
        np.testing.assert_array_equal(first.result().scores, expected)
        assert first.result() is first.result()  # cached
        assert first.done() and first.wait_s >= 0.0
        assert pool.wait_s_total == pytest.approx(first.wait_s + second.wait_s)


def test_accepts_a_batch_of_torch_tensors(batch):
    torch = pytest.importorskip("torch")
    clean, estimates = batch
    with PesqPool(workers=0) as pool:
        from_tensors = pool.score(torch.from_numpy(np.stack(clean)),
                                  torch.from_numpy(np.stack(estimates)))
        from_arrays = pool.score(clean, estimates)
    np.testing.assert_array_equal(from_tensors.scores, from_arrays.scores)


def test_close_is_idempotent_and_submit_after_close_fails(batch):
    clean, estimates = batch
    pool = PesqPool(workers=1)
    pool.score(clean[:1], estimates[:1])
    pool.close()
    pool.close()
    with pytest.raises(RuntimeError, match="after close"):
        pool.submit(clean, estimates)


def test_mismatched_batch_sizes_are_refused(batch):
    clean, estimates = batch
    with PesqPool(workers=0) as pool, pytest.raises(ValueError, match="as many estimates"):
        pool.submit(clean, estimates[:2])


def test_a_killed_worker_costs_one_batch_not_the_run(batch):
    clean, estimates = batch
    with PesqPool(workers=0) as reference:
        expected = reference.score(clean, estimates).scores
    with PesqPool(workers=1) as pool:
        pool.score(clean[:1], estimates[:1])  # start the worker
        pending = pool.submit(clean, estimates)
        worker = next(iter(pool._executor._processes.values()))  # private: no public handle
        worker.kill()
        worker.join()
        lost = pending.result()
        assert not lost.valid.any() or np.array_equal(lost.scores, expected)  # it may have won
        np.testing.assert_array_equal(pool.score(clean, estimates).scores, expected)


def test_a_warm_up_defined_in_main_is_refused_before_any_worker_starts() -> None:
    """Workers do not run the main script, so they could not unpickle a function defined there."""
    from bsrnn.workers import start_workers

    def warm_up() -> None:
        """Stands in for a function of the user's script."""

    warm_up.__module__ = "__main__"
    with pytest.raises(ValueError, match="importable module"):
        start_workers(1, warm_up)
