"""The official sizes of University-1652 and SUES-200, and a count of a copy on disk against them.

Partial copies are a common cause of "cannot reproduce": this reads a copy through the same
readers training uses (file headers only) and names every place, altitude and folder that differs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from mean_geo.data import layouts, sues200_raw
from mean_geo.data.layouts import SUES200_ALTITUDES, SUES200_TEST, U1652_TEST, ImageRecord


@dataclass(frozen=True)
class Expected:
    places: int
    images: int
    per_place: int | None = None  # images every place has, where the release is uniform


# University-1652 (Zheng et al., 2020): 701 training buildings; test 701 query / 951 gallery places
U1652 = {
    "train/drone": Expected(701, 37_854),
    "train/satellite": Expected(701, 701, 1),
    "test/query_drone": Expected(701, 37_855),
    "test/gallery_satellite": Expected(951, 951, 1),
    "test/query_satellite": Expected(701, 701, 1),
    "test/gallery_drone": Expected(951, 51_355),
}
# SUES-200 (Zhu et al., 2023): 200 places x 4 altitudes x 50 drone images, one satellite image
# each; 120 training / 80 test places; galleries hold all 200 places
SUES_PER_ALTITUDE = {
    "train/drone": Expected(120, 120 * 50, 50),
    "train/satellite": Expected(120, 120, 1),
    "test/query_drone": Expected(80, 80 * 50, 50),
    "test/gallery_satellite": Expected(200, 200, 1),
    "test/query_satellite": Expected(80, 80, 1),
    "test/gallery_drone": Expected(200, 200 * 50, 50),
}


def official(dataset: str) -> dict[str, Expected]:
    if dataset == "university1652":
        return dict(U1652)
    return {f"{alt}/{k}": v for alt in SUES200_ALTITUDES for k, v in SUES_PER_ALTITUDE.items()}


def _readers(dataset: str, root: Path) -> Iterator[tuple[str, Callable[[], list[ImageRecord]]]]:
    """(group, reader) for every group :func:`official` names, through the training readers."""
    if dataset == "university1652":
        u_train = cache(lambda: layouts.u1652_train(root))  # one read for both views
        yield "train/drone", lambda: u_train().drone
        yield "train/satellite", lambda: u_train().satellite
        for folder in U1652_TEST:
            yield f"test/{folder}", lambda f=folder: layouts.u1652_test(root, f)
        return
    folder, read_train, test = sues200_raw.sues200_readers(root)
    train = cache(read_train)  # one read per altitude for both views
    for alt in SUES200_ALTITUDES:
        yield f"{alt}/train/drone", lambda a=alt: train(folder, a).drone
        yield f"{alt}/train/satellite", lambda a=alt: train(folder, a).satellite
        for name in SUES200_TEST:
            yield f"{alt}/test/{name}", lambda a=alt, n=name: test(folder, n, a)


@dataclass
class GroupCount:
    group: str
    places: int
    images: int
    expected: Expected
    odd_places: list[tuple[str, int]]  # (place, images) where the release has per_place images

    @property
    def differences(self) -> list[str]:
        out = []
        if self.places != self.expected.places:
            out.append(f"{self.group}: {self.places} places, official {self.expected.places}")
        if self.images != self.expected.images:
            out.append(f"{self.group}: {self.images:,} images, official {self.expected.images:,}")
        for place, n in self.odd_places[:5]:
            out.append(f"{self.group}: place {place} has {n} images, official {self.expected.per_place}")
        if len(self.odd_places) > 5:
            out.append(f"{self.group}: {len(self.odd_places) - 5} more places with another image count")
        return out


def count_group(group: str, records: list[ImageRecord], expected: Expected) -> GroupCount:
    per_place = Counter(r.location for r in records)
    want = expected.per_place
    odd = sorted((p, n) for p, n in per_place.items() if want is not None and n != want)
    return GroupCount(group, len(per_place), len(records), expected, odd)


def count(dataset: str, root: str | Path, on_group: Callable[[str], None] | None = None) -> list[GroupCount]:
    """Count every group of ``dataset`` at ``root`` against the official numbers."""
    expected = official(dataset)
    counts = []
    for group, read in _readers(dataset, Path(root).expanduser()):
        counts.append(count_group(group, read(), expected[group]))
        if on_group is not None:
            on_group(group)
    return counts


def differences_of(dataset: str, groups: dict[str, list[ImageRecord]]) -> list[str]:
    """Differences of records already read (the groups named as in :func:`official`) from the release."""
    expected = official(dataset)
    return [d for g, recs in groups.items() if g in expected for d in count_group(g, recs, expected[g]).differences]
