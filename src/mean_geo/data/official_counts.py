"""The official sizes of University-1652, SUES-200, DenseUAV and GTA-UAV, and a count of a copy against them.

Partial copies are a common cause of "cannot reproduce": this reads a copy through the same
readers training uses (file headers only) and names every place, altitude and folder that differs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from mean_geo.data import denseuav, gta_uav, layouts, sues200_raw
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


# DenseUAV (Dai et al., 2024): 2,256 training / 777 test places, 3 drone photos (80/90/100 m) and
# 6 satellite tiles a place; the galleries hold all 3,033 places (its README's counts)
DENSEUAV_PLACES = {"train": 2256, "query": 777, "gallery": 3033}


def _denseuav(heights: tuple[int, ...]) -> dict[str, Expected]:
    out = {}
    for group, places in (
        ("train/drone", "train"),
        ("train/satellite", "train"),
        ("test/query_drone", "query"),
        ("test/query_satellite", "query"),
        ("test/gallery_drone", "gallery"),
        ("test/gallery_satellite", "gallery"),
    ):
        per_place = len(heights) if group.endswith("drone") else 2 * len(denseuav.HEIGHTS)
        n = DENSEUAV_PLACES[places]
        out[group] = Expected(n, n * per_place, per_place)
    return out


def official(dataset: str, heights: tuple[int, ...] | None = None) -> dict[str, Expected]:
    """The release's groups and sizes (DenseUAV's drone groups at ``heights``, default all three)."""
    if dataset == "university1652":
        return dict(U1652)
    if dataset == "denseuav":
        return _denseuav(heights or denseuav.HEIGHTS)
    if dataset == "gta_uav":  # Ji et al., 2025: 33,763 photos over 14,640 tiles (its README)
        return {"drone/images": Expected(33_763, 33_763, 1), "satellite": Expected(14_640, 14_640, 1)}
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
    if dataset == "gta_uav":
        yield "drone/images", lambda: [ImageRecord(p, p.name, "drone") for p in gta_uav.drone_images(root)]
        yield "satellite", lambda: [ImageRecord(p, p.name, "satellite") for p in gta_uav.satellite_tiles(root)]
        return
    if dataset == "denseuav":
        d_train = cache(lambda: denseuav.read_train(root))
        yield "train/drone", lambda: d_train().drone
        yield "train/satellite", lambda: d_train().satellite
        for folder in denseuav.TEST_FOLDERS:
            yield f"test/{folder}", lambda f=folder: denseuav.read_test(root, f)
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


def differences_of(
    dataset: str, groups: dict[str, list[ImageRecord]], heights: tuple[int, ...] | None = None
) -> list[str]:
    """Differences of records already read (the groups named as in :func:`official`) from the release."""
    expected = official(dataset, heights)
    return [d for g, recs in groups.items() if g in expected for d in count_group(g, recs, expected[g]).differences]
