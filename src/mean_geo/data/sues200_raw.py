"""SUES-200 as downloaded, before any split: read directly, with the benchmark's official split.

The archive unpacks to ``SUES-200-512x512/drone_view_512/<id>/<150|200|250|300>/<n>.jpg`` and
``SUES-200-512x512/satellite-view/<id>/0.png``.  The official split (the 120 training ids of the
benchmark's ``script/indexs.yaml``, kept as data in ``sues200_official_split.json`` with its
source) trains on those 120 places and tests on the other 80; galleries hold every place, per
altitude, as the split script writes them.  :func:`sues200_layout` tells a download from an
already-split copy, so ``dataset.root`` may point at either, or at the folder above the download.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import cache
from importlib import resources
from pathlib import Path

from mean_geo.data import layouts
from mean_geo.data.layouts import (
    SUES200_TEST,
    ImageRecord,
    TrainSplit,
    check_image_file,
    parse_altitudes,
    require_dir,
)
from mean_geo.errors import DatasetLayoutError

ARCHIVE = "SUES-200-512x512"
RAW_DRONE, RAW_SATELLITE = "drone_view_512", "satellite-view"
SPLIT_MARKER = "Training"
LAYOUTS_EXPECTED = (
    f"either the download ({ARCHIVE}/ with {RAW_DRONE}/<id>/<altitude>/ and {RAW_SATELLITE}/<id>/) "
    "or the official split (Training/<altitude>/{drone,satellite}/<id>/, Testing/<altitude>/...)"
)


@cache
def official_train_ids() -> frozenset[str]:
    data = json.loads(resources.files("mean_geo.data").joinpath("sues200_official_split.json").read_text())
    return frozenset(data["train_ids"])


def sues200_layout(root: str | Path) -> tuple[str, Path]:
    """``("split" | "raw", folder)`` for a root that is either layout, or the folder above a download."""
    root = Path(root).expanduser()
    if root.is_file():
        raise DatasetLayoutError(f"{root}: is a file; expected the SUES-200 folder, {LAYOUTS_EXPECTED}")
    if not root.is_dir():
        raise DatasetLayoutError(f"{root}: dataset root does not exist; expected {LAYOUTS_EXPECTED}")
    for folder in (root, root / ARCHIVE):
        if (folder / SPLIT_MARKER).is_dir():
            return "split", folder
        if (folder / RAW_DRONE).is_dir() and (folder / RAW_SATELLITE).is_dir():
            return "raw", folder
    raise DatasetLayoutError(f"{root}: not a SUES-200 folder; expected {LAYOUTS_EXPECTED}")


def sues200_readers(root: str | Path) -> tuple[Path, Callable[..., TrainSplit], Callable[..., list[ImageRecord]]]:
    """``(folder, train reader, test reader)`` for whichever layout ``root`` holds."""
    kind, folder = sues200_layout(root)
    if kind == "raw":
        return folder, raw_train, raw_test
    return folder, layouts.sues200_train, layouts.sues200_test


def _images(folder: Path, location: str, view: str, altitude: int | None) -> list[ImageRecord]:
    require_dir(folder, f"the {view} images of place {location}")
    images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not images:
        raise DatasetLayoutError(f"{folder}: no images; expected the {view} images of place {location}")
    for img in images:
        check_image_file(img)
    return [ImageRecord(img, location, view, altitude) for img in images]


def raw_places(root: Path) -> list[str]:
    """Place ids of a download (its satellite folders), checked against its drone folders."""
    sats = sorted(p.name for p in (root / RAW_SATELLITE).iterdir() if p.is_dir())
    drones = sorted(p.name for p in (root / RAW_DRONE).iterdir() if p.is_dir())
    if not sats:
        raise DatasetLayoutError(f"{root / RAW_SATELLITE}: no place folders; expected <id>/0.png inside")
    if sats != drones:
        only_s, only_d = sorted(set(sats) - set(drones))[:3], sorted(set(drones) - set(sats))[:3]
        raise DatasetLayoutError(
            f"{root}: {RAW_SATELLITE} and {RAW_DRONE} hold different places "
            f"(only satellite: {only_s}, only drone: {only_d})"
        )
    return sats


def _drone(root: Path, places: Sequence[str], altitudes: Sequence[int]) -> list[ImageRecord]:
    return [r for a in altitudes for p in places for r in _images(root / RAW_DRONE / p / str(a), p, "drone", a)]


def _satellite(root: Path, places: Sequence[str]) -> list[ImageRecord]:
    return [r for p in places for r in _images(root / RAW_SATELLITE / p, p, "satellite", None)]


def raw_train(root: Path, altitudes: int | Sequence[int] | None = None) -> TrainSplit:
    places = [p for p in raw_places(root) if p in official_train_ids()]
    if not places:
        raise DatasetLayoutError(f"{root}: none of the 120 official SUES-200 training places is there")
    return TrainSplit(_drone(root, places, parse_altitudes(altitudes)), _satellite(root, places))


def raw_test(root: Path, folder: str, altitudes: int | Sequence[int] | None = None) -> list[ImageRecord]:
    """Queries are the 80 test places; galleries hold every place (per altitude for drone galleries)."""
    if folder not in SUES200_TEST:
        raise DatasetLayoutError(f"unknown test folder '{folder}'; expected one of {sorted(SUES200_TEST)}")
    places = raw_places(root)
    if folder.startswith("query"):
        places = [p for p in places if p not in official_train_ids()]
    if SUES200_TEST[folder] == "satellite":
        return _satellite(root, places)
    return _drone(root, places, parse_altitudes(altitudes))
