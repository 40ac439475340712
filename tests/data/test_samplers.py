import pytest

from mean_geo.data.samplers import LocationUniqueBatchSampler, location_unique_batches
from mean_geo.errors import ConfigError

# 30 locations with very unequal numbers of pairs, like a real training set
LABELS = [loc for loc in range(30) for _ in range(1 + loc % 7)]


def test_no_location_twice_in_a_batch_and_no_index_twice_in_an_epoch():
    batches = location_unique_batches(LABELS, 8, seed=0, epoch=0)
    assert batches and all(len(b) == 8 for b in batches)
    for b in batches:
        assert len({LABELS[i] for i in b}) == 8
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat))
    assert len(flat) >= len(LABELS) - 8 * 3  # only a short tail is dropped


def test_seeded_by_seed_and_epoch():
    assert location_unique_batches(LABELS, 8, 0, 0) == location_unique_batches(LABELS, 8, 0, 0)
    assert location_unique_batches(LABELS, 8, 0, 0) != location_unique_batches(LABELS, 8, 0, 1)
    assert location_unique_batches(LABELS, 8, 0, 0) != location_unique_batches(LABELS, 8, 1, 0)


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_get_disjoint_equal_shares_of_each_global_batch(world):
    samplers = [LocationUniqueBatchSampler(LABELS, 4, seed=3, num_replicas=world, rank=r) for r in range(world)]
    for s in samplers:
        s.set_epoch(2)
    per_rank = [list(s) for s in samplers]
    assert len({len(p) for p in per_rank}) == 1 and len({len(s) for s in samplers}) == 1
    assert len(per_rank[0]) == len(samplers[0])
    global_batches = location_unique_batches(LABELS, 4 * world, 3, 2)
    for step, batch in enumerate(global_batches):
        shares = [p[step] for p in per_rank]
        assert all(len(s) == 4 for s in shares)
        assert sorted(i for s in shares for i in s) == sorted(batch)  # disjoint, together the global batch
        assert len({LABELS[i] for s in shares for i in s}) == 4 * world  # unique across ranks too


def test_batch_larger_than_the_number_of_locations_is_refused():
    with pytest.raises(ConfigError, match="only 30 training locations"):
        LocationUniqueBatchSampler(LABELS, 16, num_replicas=2)
