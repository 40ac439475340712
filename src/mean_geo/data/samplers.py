"""Location-unique batches for InfoNCE, seeded by (seed, epoch), identical on every DDP rank.

InfoNCE treats every other pair in the batch as a negative, so two pairs of the same location in
one batch would be false negatives.  The reference (Sample4Geo/MEAN) shuffles all pairs, then fills
batches greedily, returning a pair that does not fit to the pool and giving up after a number of
consecutive misses; the incomplete tail is dropped.  We do the same, but with an RNG seeded by
(seed, epoch) so every rank computes the same global batches, and each rank takes a disjoint
contiguous slice of every global batch (the negatives of the global batch are what a cross-rank
gather sees).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from mean_geo.errors import ConfigError


def location_unique_batches(
    labels: Sequence[int], batch_size: int, seed: int, epoch: int, max_misses: int = 512
) -> list[list[int]]:
    """Global batches of dataset indices in which no label appears twice (incomplete tail dropped)."""
    keys = [frozenset((label,)) for label in labels]
    return exclusive_batches(keys, keys, batch_size, seed, epoch, max_misses)


def exclusive_batches(
    keys: Sequence[frozenset],
    blocks: Sequence[frozenset],
    batch_size: int,
    seed: int,
    epoch: int,
    max_misses: int = 512,
) -> list[list[int]]:
    """Global batches in which a pair enters only if none of its ``keys`` is blocked.

    A pair in a batch blocks its ``blocks`` (its keys and whatever must not meet it: GTA-UAV's photo,
    its tile, every tile linked to the photo and every photo linked to the tile).
    """
    rng = np.random.default_rng([seed, epoch])
    pool = deque(rng.permutation(len(keys)).tolist())
    batches: list[list[int]] = []
    current: list[int] = []
    blocked: set = set()
    misses = 0
    while pool and misses < max_misses:
        idx = pool.popleft()
        if not keys[idx].isdisjoint(blocked):
            pool.append(idx)  # try again later, in another batch
            misses += 1
            continue
        misses = 0
        current.append(idx)
        blocked |= blocks[idx]
        if len(current) == batch_size:
            batches.append(current)
            current, blocked = [], set()
    return batches


class LocationUniqueBatchSampler(Sampler[list[int]]):
    """Yields this rank's share of each location-unique global batch.

    ``batch_size`` is the per-rank batch; the global batch is ``batch_size * num_replicas``.
    Call :meth:`set_epoch` before each epoch (Lightning does it for samplers that have the method).
    """

    def __init__(
        self,
        labels: Sequence[int],
        batch_size: int,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        global_batch = batch_size * num_replicas
        n_locations = len(set(labels))
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size}: must be >= 1")
        if global_batch > n_locations:
            raise ConfigError(
                f"batch of {global_batch} pairs ({batch_size} x {num_replicas} ranks) but only "
                f"{n_locations} training locations: no batch can hold each location once; lower batch_size"
            )
        if not 0 <= rank < num_replicas:
            raise ConfigError(f"rank {rank} not in [0, {num_replicas})")
        self.labels = list(labels)
        self.batch_size = batch_size
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _global_batches(self) -> list[list[int]]:
        if self._cache is None or self._cache[0] != self.epoch:
            self._cache = (self.epoch, self._make_batches(self.batch_size * self.num_replicas))
        return self._cache[1]

    def _make_batches(self, global_batch: int) -> list[list[int]]:
        """This epoch's global batches (computed once per epoch)."""
        return location_unique_batches(self.labels, global_batch, self.seed, self.epoch)

    def __iter__(self) -> Iterator[list[int]]:
        lo, hi = self.rank * self.batch_size, (self.rank + 1) * self.batch_size
        for batch in self._global_batches():
            yield batch[lo:hi]

    def __len__(self) -> int:
        # the greedy fill can drop a batch or two versus the ideal, so count them (cached per epoch)
        return len(self._global_batches())


class ExclusiveBatchSampler(LocationUniqueBatchSampler):
    """:class:`LocationUniqueBatchSampler` for pairs that conflict through shared keys.

    Game4Loc's "mutually exclusive" sampling of GTA-UAV pairs (:func:`exclusive_batches`).

    Args:
        keys: what each pair is (e.g. ``{("drone", name), ("tile", name)}``).
        blocks: what each pair keeps out of its batch (its keys and everything linked to them).
        batch_size: pairs per rank.
        seed: seeds the order (with the epoch).
        num_replicas: DDP ranks.
        rank: this rank.
    """

    def __init__(
        self,
        keys: Sequence[frozenset],
        blocks: Sequence[frozenset],
        batch_size: int,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        super().__init__(list(range(len(keys))), batch_size, seed, num_replicas, rank)
        self.keys, self.blocks = list(keys), list(blocks)

    def _make_batches(self, global_batch: int) -> list[list[int]]:
        batches = exclusive_batches(self.keys, self.blocks, global_batch, self.seed, self.epoch)
        if not batches:
            raise ConfigError(
                f"batch of {global_batch} pairs: no batch of pairs that exclude "
                "each other can be filled from these training pairs; lower batch_size"
            )
        return batches
