"""ResumableDistributedSampler: sharding over ranks, epochs, and resuming mid-epoch."""

from __future__ import annotations

import numpy as np
import pytest

from ernievil_ds.data import ResumableDistributedSampler


def test_ranks_partition_an_epoch():
    samplers = [ResumableDistributedSampler(103, num_replicas=4, rank=r, seed=1) for r in range(4)]
    shards = [list(s) for s in samplers]
    assert all(len(shard) == len(s) == 25 for shard, s in zip(shards, samplers))
    flat = [i for shard in shards for i in shard]
    assert len(set(flat)) == len(flat) == 100


def test_no_drop_last_pads_by_wrapping():
    shards = [
        list(ResumableDistributedSampler(10, num_replicas=3, rank=r, drop_last=False)) for r in range(3)
    ]
    assert [len(s) for s in shards] == [4, 4, 4]
    assert set().union(*shards) == set(range(10))


def test_epochs_reshuffle_and_repeat():
    sampler = ResumableDistributedSampler(50, num_replicas=2, rank=1, seed=3)
    sampler.set_epoch(0)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first
    sampler.set_epoch(0)
    assert list(sampler) == first


def test_resume_continues_from_the_saved_position():
    sampler = ResumableDistributedSampler(64, num_replicas=2, rank=0, seed=7)
    sampler.set_epoch(3)
    full = list(sampler)
    resumed = ResumableDistributedSampler(64, num_replicas=2, rank=0, seed=7)
    resumed.load_state_dict({"epoch": 3, "position": 13})
    assert resumed.state_dict() == {"epoch": 3, "position": 13}
    assert len(resumed) == len(full) - 13
    assert list(resumed) == full[13:]
    resumed.set_epoch(4)  # the next epoch starts from its beginning
    assert len(list(resumed)) == len(full)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="rank"):
        ResumableDistributedSampler(10, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="position"):
        ResumableDistributedSampler(10, num_replicas=2, rank=0).load_state_dict({"epoch": 0, "position": 6})


def test_group_by_length_keeps_the_epoch_and_cuts_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 40, size=1000)
    plain = [ResumableDistributedSampler(1000, num_replicas=2, rank=r, seed=1) for r in range(2)]
    grouped = [
        ResumableDistributedSampler(1000, num_replicas=2, rank=r, seed=1, lengths=lengths, group_size=200)
        for r in range(2)
    ]
    assert sorted(i for s in grouped for i in s) == sorted(i for s in plain for i in s) == list(range(1000))

    def mean_batch_max(sampler):
        order = list(sampler)
        return np.mean([lengths[order[i : i + 10]].max() for i in range(0, len(order), 10)])

    assert mean_batch_max(grouped[0]) < 0.8 * mean_batch_max(plain[0])
    resumed = ResumableDistributedSampler(
        1000, num_replicas=2, rank=0, seed=1, lengths=lengths, group_size=200
    )
    resumed.load_state_dict({"epoch": 0, "position": 37})
    assert list(resumed) == list(grouped[0])[37:]
    with pytest.raises(ValueError, match="one length per sample"):
        ResumableDistributedSampler(1000, num_replicas=2, rank=0, lengths=lengths[:10], group_size=200)
