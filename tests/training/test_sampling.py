
import pytest

from training.sampling import StepSampler


def _batches(sampler, steps):
    it = iter(sampler)
    return [[next(it) for _ in range(sampler.batch_size)] for _ in range(steps)]


def test_every_sample_once_per_epoch_then_a_new_order():
    s = StepSampler(n=10, batch_size=5, seed=3)
    first, second = _batches(s, 2), _batches(StepSampler(10, 5, seed=3, start_step=2), 2)
    assert sorted(k for b in first for k in b) == list(range(10))  # epoch 0: keys are indices
    assert sorted(k - 10 for b in second for k in b) == list(range(10))  # epoch 1: keys 10..19
    assert [k % 10 for b in first for k in b] != [k % 10 for b in second for k in b]


def test_resuming_at_a_step_continues_the_same_stream():
    whole = _batches(StepSampler(23, 4, seed=1), 12)
    tail = _batches(StepSampler(23, 4, seed=1, start_step=7), 5)
    assert tail == whole[7:]


def test_ranks_split_the_global_batch_in_order():
    single = _batches(StepSampler(40, 8, seed=0), 6)
    r0 = _batches(StepSampler(40, 4, seed=0, rank=0, world_size=2), 6)
    r1 = _batches(StepSampler(40, 4, seed=0, rank=1, world_size=2), 6)
    assert [a + b for a, b in zip(r0, r1)] == single


def test_a_batch_larger_than_the_data_is_refused():
    with pytest.raises(ValueError, match="at least"):
        StepSampler(5, 4, world_size=2)
